"""A sweep's grid: arms (true reward, or an oracle with a label budget), runs, tasks x arms x seeds."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from prefrl.core.types import PrefrlError


@dataclass(frozen=True)
class Arm:
    """One curve of a figure: the reward the agent trains on.

    Attributes:
        reward: `true` (PPO on the env reward) or `learned` (from preferences).
        oracle: who labels (`synthetic`, B-Pref teachers ...); ignored for `true`.
        labels: label budget (None: the preset's); ignored for `true`.
    """

    reward: str = "learned"
    oracle: str = "synthetic"
    labels: int | None = None

    def __post_init__(self) -> None:
        if self.reward not in ("learned", "true"):
            raise PrefrlError(f"Arm: `reward` must be `learned` or `true`, got `{self.reward}`")
        if self.reward == "learned":
            from prefrl.core.oracles import check_oracle_name

            check_oracle_name(self.oracle)
            if self.oracle == "human":
                raise PrefrlError("Arm: sweeps run unattended; oracle `human` is not allowed in a sweep")
        if self.labels is not None and self.labels < 0:
            raise PrefrlError(f"Arm: `labels` must be >= 0, got {self.labels}")

    @staticmethod
    def true() -> Arm:
        return Arm(reward="true", oracle="synthetic", labels=None)

    @staticmethod
    def learned(labels: int | None = None, oracle: str = "synthetic") -> Arm:
        return Arm(reward="learned", oracle=oracle, labels=labels)

    @property
    def key(self) -> str:
        """`true`, `synthetic-700`, `mistake` (budget left to the preset) ..."""
        if self.reward == "true":
            return "true"
        return self.oracle if self.labels is None else f"{self.oracle}-{self.labels}"

    @property
    def label(self) -> str:
        """Legend text."""
        if self.reward == "true":
            return "true reward (RL)"
        return f"{self.labels} {self.oracle} labels" if self.labels is not None else f"{self.oracle} labels"

    @staticmethod
    def parse(text: str) -> Arm:
        """`true`, `700` (synthetic), `synthetic-700`, `mistake`, `mistake-700`."""
        if text == "true":
            return Arm.true()
        if text.isdigit():
            return Arm.learned(int(text))
        oracle, _, labels = text.partition("-")
        if labels and not labels.isdigit():
            raise PrefrlError(f"arm `{text}`: expected `true`, `N`, `ORACLE` or `ORACLE-N`")
        return Arm.learned(int(labels) if labels else None, oracle)


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep.

    Attributes:
        task: preset name (see `prefrl tasks`) or path to a .toml preset, optionally followed by
            ``@VARIANT``: the same preset with other overrides gets its own runs and curves
            (``inverted-pendulum@oob``; ablations).
        arm: the reward arm.
        seed: seed of env, PPO, reward model and oracle.
        steps: env steps (None: the preset's).
        overrides: preset fields to change, nested like the TOML
            (``{"ppo": {"n_steps": 1024}, "env": {"max_episode_steps": 500}}``).
        eval_episodes: episodes of the final deterministic evaluation.
    """

    task: str
    arm: Arm
    seed: int = 0
    steps: int | None = None
    overrides: dict = field(default_factory=dict, hash=False, compare=False)
    eval_episodes: int = 10

    @property
    def preset(self) -> str:
        """The preset name or path, without a ``@VARIANT`` label."""
        return self.task.split("@", 1)[0]

    @property
    def variant(self) -> str:
        return self.task.split("@", 1)[1] if "@" in self.task else ""

    @property
    def task_name(self) -> str:
        base = Path(self.preset).stem if self.preset.endswith(".toml") else self.preset
        return f"{base}@{self.variant}" if self.variant else base

    @property
    def key(self) -> str:
        return f"{self.task_name}/{self.arm.key}/s{self.seed}"

    @property
    def dirname(self) -> str:
        return f"{self.task_name}--{self.arm.key}--s{self.seed}"

    def task_config(self):
        """The preset with ``overrides`` applied (validated like a preset file)."""
        from prefrl.control.tasks import load_task

        overrides = self.overrides
        if self.arm.reward == "learned" and self.arm.labels is not None:
            overrides = {**overrides, "prefs": {**overrides.get("prefs", {}), "labels": self.arm.labels}}
        return load_task(self.preset).with_overrides(overrides, where=f"{self.key} (preset `{self.preset}` + overrides)")

    def run_config(self, root: str | Path):
        from prefrl.control.config import RunConfig

        task = self.task_config()
        return RunConfig(
            task=task, run_dir=str(Path(root) / self.dirname), oracle=self.arm.oracle, seed=self.seed,
            steps=self.steps if self.steps is not None else task.steps, reward=self.arm.reward,
            eval_episodes=self.eval_episodes, video=False,
        )

    def to_dict(self) -> dict:
        return {"task": self.task, "arm": {"reward": self.arm.reward, "oracle": self.arm.oracle,
                                           "labels": self.arm.labels},
                "seed": self.seed, "steps": self.steps, "overrides": self.overrides,
                "eval_episodes": self.eval_episodes}

    @staticmethod
    def from_dict(d: dict) -> RunSpec:
        return RunSpec(task=d["task"], arm=Arm(**d["arm"]), seed=int(d["seed"]), steps=d.get("steps"),
                       overrides=d.get("overrides") or {}, eval_episodes=int(d.get("eval_episodes", 10)))


@dataclass
class Grid:
    """tasks x arms x seeds.

    Attributes:
        tasks: preset name (or ``NAME@VARIANT``) -> overrides for that task (nested like the
            TOML; may hold a top-level ``steps`` that sets the env steps of that task's runs).
        arms: the arms (curves) every task gets.
        seeds: seeds.
        steps: env steps of every run (None: each preset's, unless the task sets ``steps``).
        eval_episodes: episodes of each run's final evaluation.
    """

    tasks: dict[str, dict]
    arms: list[Arm]
    seeds: list[int]
    steps: int | None = None
    eval_episodes: int = 10

    def runs(self) -> list[RunSpec]:
        out = []
        for task, overrides in self.tasks.items():
            overrides = dict(overrides or {})
            steps = overrides.pop("steps", self.steps)
            for arm in self.arms:
                for seed in self.seeds:
                    out.append(RunSpec(task, arm, seed, steps, overrides, self.eval_episodes))
        keys = [r.key for r in out]
        dup = {k for k in keys if keys.count(k) > 1}
        if dup:
            raise PrefrlError(f"Grid: runs share a key (same task, arm and seed twice): {sorted(dup)[:3]}")
        return out
