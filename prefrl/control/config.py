"""A control run's configuration (``config.json``) and what follows from it (clip length, run dir)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from prefrl.control.tasks import TaskConfig
from prefrl.core.oracles import check_oracle_name
from prefrl.core.rundir import RunDir
from prefrl.core.types import PrefrlError


@dataclass
class RunConfig:
    """Everything a run needs; saved as config.json."""

    task: TaskConfig
    run_dir: str
    oracle: str = "synthetic"
    steps: int = 100_000
    seed: int = 0
    reward: str = "learned"
    reward_model: str | None = None
    eval_episodes: int = 5
    video: bool = True
    baseline: bool = False
    checkpoint_every: int = 10
    initial_wait_s: float = float("inf")
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.reward not in ("learned", "true"):
            raise PrefrlError(f"`--reward` must be `learned` or `true`, got `{self.reward}`")
        check_oracle_name(self.oracle)
        for name, low in (("steps", 1), ("seed", 0), ("eval_episodes", 0), ("checkpoint_every", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise PrefrlError(f"`--{name.replace('_', '-')}` must be an integer >= {low}, got {v!r}")
        if self.reward == "learned" and self.reward_model is None and self.task.prefs.labels == 0:
            raise PrefrlError("a learned reward with 0 labels would train the agent on an untrained reward model; "
                              "give `--labels N` (N > 0), `--reward-model PATH`, or `--reward true`")
        if self.task.algo == "sac" and self.reward == "learned" and self.reward_model is None:  # PEBBLE
            sac = self.task.sac
            t0 = sac.learning_starts + sac.unsupervised_steps
            if self.steps <= t0:
                raise PrefrlError(f"SAC asks its first labels after {sac.learning_starts} random and {sac.unsupervised_steps} "
                                  f"pre-training steps ([sac] learning_starts + unsupervised_steps = {t0}); "
                                  f"`--steps {self.steps}` ends before that: give more steps or shorten [sac]")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["task"] = self.task.to_dict()
        d["initial_wait_s"] = None if math.isinf(self.initial_wait_s) else self.initial_wait_s
        return d

    @staticmethod
    def from_dict(d: dict, where: str = "config.json") -> RunConfig:
        d = dict(d)
        if "task" not in d:
            raise PrefrlError(f"{where}: no `task`")
        d["task"] = TaskConfig.from_dict(d["task"], where=f"{where} [task]")
        if d.get("initial_wait_s") is None:
            d["initial_wait_s"] = float("inf")
        try:
            return RunConfig(**d)
        except TypeError as e:
            raise PrefrlError(f"{where}: {e}") from e

    @property
    def keep_frames(self) -> bool:
        return self.oracle == "human" or self.task.prefs.keep_frames

    @property
    def dir(self) -> RunDir:
        return RunDir(self.run_dir)


def load_run_config(run_dir: str | Path) -> RunConfig:
    """The config of the run in ``run_dir``; its ``run_dir`` is the directory given (a moved run stays where it is)."""
    rd = RunDir(run_dir)
    cfg = RunConfig.from_dict(rd.read_config(), where=str(rd.config))
    cfg.run_dir = str(rd.path)
    return cfg


def clip_length(task: TaskConfig) -> int:
    """Steps per clip: ``clip_length`` or ``clip_seconds`` of play at the env's dt."""
    from prefrl.control.envs import env_dt

    p = task.prefs
    if p.clip_length is not None:
        return int(p.clip_length)
    dt = env_dt(task.env)
    if dt is None or p.clip_seconds is None:
        return 25
    return max(2, int(round(p.clip_seconds / dt)))
