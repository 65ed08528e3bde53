"""`prefrl tasks`, `prefrl train`, `prefrl eval`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from prefrl.control.rate import RateCommand
from prefrl.core.types import PrefrlError


@dataclass
class TasksCommand:
    """List the task presets (shipped in the package: prefrl/control/presets/)."""

    def run(self) -> list[str]:
        from prefrl.control.tasks import list_tasks, load_task

        names = []
        print(f"{'task':28s} {'env':28s} {'steps':>9s} {'labels':>6s}  description")
        for name in list_tasks():
            t = load_task(name)
            print(f"{name:28s} {t.env.id:28s} {t.steps:9d} {t.prefs.labels:6d}  {t.description}")
            names.append(name)
        return names


def parse_overrides(items: tuple[str, ...] | list[str]) -> dict:
    """``SECTION.KEY=VALUE`` strings (VALUE in TOML: 4, 0.5, "novelty", [64, 64], true) -> a nested dict of
    preset overrides; a bare ``KEY=VALUE`` sets a top-level key (e.g. ``steps``)."""
    import tomllib

    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise PrefrlError(f"--override {item!r}: expected SECTION.KEY=VALUE, e.g. reward_train.shift=4")
        try:
            parsed = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value.strip()  # a bare word: a string (e.g. prefs.query=novelty)
        *path, last = key.strip().split(".")
        node = out
        for part in path:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise PrefrlError(f"--override {item!r}: `{part}` is set both as a value and as a section")
        node[last] = parsed
    return out


@dataclass
class TrainCommand:
    """Train PPO (or SAC: `--algo sac`, PEBBLE) on a reward learned from preferences (or on the true reward)."""

    task: str | None = None
    """Task preset name (see `prefrl tasks`) or path to a .toml preset. Required unless --resume."""
    oracle: str | None = None
    """Who labels: synthetic (default), human, stochastic, myopic, mistake, skip, equal."""
    labels: int | None = None
    """Label budget (default: the preset's)."""
    query: str | None = None
    """Query selection (default: the preset's): disagreement, entropy, novelty or random."""
    override: tuple[str, ...] = ()
    """Preset settings to change, as SECTION.KEY=VALUE with a TOML value, e.g. `--override
    reward_train.shift=4 prefs.pool_size=200` (checked like the preset file)."""
    steps: int | None = None
    """Env steps (default: the preset's). With --resume, a larger value extends the run."""
    seed: int | None = None
    """Seed of env, PPO, reward model and oracle (default: 0)."""
    reward: str | None = None
    """`learned` (from preferences, default) or `true` (plain PPO baseline, same code path)."""
    run_dir: Path | None = None
    """Run directory (default: runs/TASK-ORACLE-LABELS-sSEED, with -2, -3 ... when taken)."""
    resume: bool = False
    """Continue an interrupted run in --run-dir from its last checkpoint, with its labels and config."""
    reward_model: Path | None = None
    """Train a fresh agent on this saved reward model, asking for no labels."""
    baseline: bool = False
    """Also run true-reward PPO (same steps and seed) into RUN_DIR/baseline and plot both."""
    keep_frames: bool = False
    """Render and keep RGB frames with the labeled clips, so people can judge them later in the viewer."""
    video: bool = True
    """Write an MP4 of the trained agent (RUN_DIR/videos/agent.mp4)."""
    eval_episodes: int = 5
    """Episodes of the final evaluation (0 = none)."""
    checkpoint_every: int = 10
    """PPO rollouts (SAC: progress rows, [sac] log_every steps each) between checkpoints for --resume."""
    algo: str | None = None
    """Learner: `ppo` or `sac` (PEBBLE: SAC, unsupervised pre-training, relabeled replay buffer; [sac] settings). Default: the preset's (ppo)."""
    on_alarm: str | None = None
    """Reward-hacking monitor ([monitor]): on an alarm `warn` (default), `stop` training, or `ask` extra labels on the
    flagged clips; `off` disables the monitor."""

    def run(self) -> dict:
        from prefrl.control.envs import ensure_headless_rendering
        from prefrl.control.train import run_training

        ensure_headless_rendering()
        cfg = self._resumed_config() if self.resume else self._new_config()
        summary = run_training(cfg, resume=self.resume)
        _print_summary(Path(cfg.run_dir), summary)
        return summary

    def _new_config(self):
        from prefrl.control.config import RunConfig
        from prefrl.control.tasks import load_task

        if self.task is None:
            raise PrefrlError("`--task` is required (see `prefrl tasks`)")
        task = load_task(self.task)
        over: dict = {}
        if self.labels is not None:
            over["labels"] = self.labels
        if self.query is not None:
            over["query"] = self.query
        if self.keep_frames:
            over["keep_frames"] = True
        top: dict = parse_overrides(self.override)
        if over:
            top["prefs"] = {**top.get("prefs", {}), **over}
        if self.algo is not None:
            top["algo"] = self.algo
        if self.on_alarm is not None:
            top["monitor"] = {"enabled": False} if self.on_alarm == "off" else {"on_alarm": self.on_alarm}
        if top:
            task = task.with_overrides(top, where=f"task `{task.name}` with the flags given")
        oracle, seed, reward = self.oracle or "synthetic", self.seed if self.seed is not None else 0, self.reward or "learned"
        steps = self.steps if self.steps is not None else task.steps
        if self.run_dir is not None:
            run_dir = self.run_dir
        else:
            stem = f"{task.name}-{oracle if reward == 'learned' else 'true'}-{task.prefs.labels if reward == 'learned' else 0}-s{seed}"
            if task.algo == "sac" and not task.name.endswith("sac"):  # `--algo sac` on a PPO preset
                stem = f"{task.name}-sac{stem[len(task.name):]}"
            run_dir = _free_run_dir(Path("runs"), stem)
        cfg = RunConfig(
            task=task, run_dir=str(run_dir), oracle=oracle, steps=steps, seed=seed, reward=reward,
            reward_model=str(self.reward_model) if self.reward_model else None,
            eval_episodes=self.eval_episodes, video=self.video, baseline=self.baseline,
            checkpoint_every=self.checkpoint_every,
        )
        if cfg.reward == "learned" and cfg.reward_model is None:
            check_budget_fits(cfg)
        return cfg

    def _resumed_config(self):
        """The run's own config; flags that would change it are refused (only --steps may grow)."""
        from prefrl.control.config import load_run_config

        if self.run_dir is None:
            raise PrefrlError("`--resume` needs `--run-dir` of the run to continue")
        cfg = load_run_config(self.run_dir)
        mon = cfg.task.monitor
        given = {"task": self.task, "oracle": self.oracle, "labels": self.labels, "query": self.query, "seed": self.seed,
                 "reward": self.reward, "reward-model": self.reward_model, "algo": self.algo, "on-alarm": self.on_alarm,
                 "override": " ".join(self.override) or None}
        recorded = {"task": None, "oracle": cfg.oracle, "labels": cfg.task.prefs.labels, "query": cfg.task.prefs.query,
                    "seed": cfg.seed,
                    "reward": cfg.reward, "reward-model": cfg.reward_model, "algo": cfg.task.algo,
                    "on-alarm": mon.on_alarm if mon.enabled else "off", "override": "(not allowed with --resume)"}
        changed = [k for k, v in given.items() if v is not None and (k == "task" or str(v) != str(recorded[k]))]
        if changed:
            flags = ", ".join(f"--{k} (run: {recorded[k]})" if k != "task" else "--task" for k in changed)
            raise PrefrlError(f"{self.run_dir}: `--resume` continues the run as it was configured; these flags would "
                              f"change it: {flags}. Start a new run instead (without --resume)")
        if self.steps is not None:
            if self.steps < cfg.steps:
                raise PrefrlError(f"{self.run_dir}: --steps {self.steps} is fewer than the run's {cfg.steps}; "
                                  "a resume can only extend a run")
            if self.steps > cfg.steps:
                cfg.steps = self.steps
                cfg.dir.write_config(cfg.to_dict())
                print(f"{cfg.run_dir}: extended to {cfg.steps} steps (the label schedule spreads the rest over them)")
        return cfg


def check_budget_fits(cfg) -> None:
    """Refuse a label budget the run cannot feed: after the up-front labels (on random-policy
    clips of their own), every label compares a pair of distinct clips of the agent's experience,
    and a run of ``steps`` steps cuts at most ``steps / clip length`` clips (the pool keeps at most
    ``pool_size``), so it cannot ask more than that many clips' distinct pairs."""
    from prefrl.control.config import clip_length
    from prefrl.control.train import check_clips_fit

    prefs = cfg.task.prefs
    length = clip_length(cfg.task)
    check_clips_fit(cfg.task, length)  # the plainer error first
    clips = min(cfg.steps // length, prefs.pool_size)
    pairs = clips * (clips - 1) // 2
    initial = int(round(prefs.labels * prefs.initial_share))
    if prefs.labels - initial > pairs:
        raise PrefrlError(f"{prefs.labels} labels are more than {cfg.steps} env steps can feed: after the {initial} up-front "
                          f"labels the run's {clips} clips of {length} steps form only {pairs} distinct pairs; give more "
                          f"`--steps` or `--labels {initial + pairs}` or fewer")


def _free_run_dir(root: Path, stem: str) -> Path:
    """runs/STEM, or runs/STEM-2, -3 ... when taken (each new run gets its own directory, as rl-zoo does)."""
    path, k = root / stem, 1
    while path.exists():
        k += 1
        path = root / f"{stem}-{k}"
    return path


@dataclass
class EvalCommand:
    """Re-run a saved agent on the true reward; optionally write a video."""

    run_dir: Path
    """Run directory written by `prefrl train`."""
    episodes: int = 5
    """Episodes to run."""
    video: bool = False
    """Write RUN_DIR/videos/eval.mp4 of the first episode."""
    stochastic: bool = False
    """Sample actions instead of taking the policy's mean/mode."""
    reward_check: bool = False
    """Also score the reward model on fresh clips of the agent's own (sampled) behaviour: pairwise
    accuracy and Spearman correlation against the true clip returns."""

    def run(self) -> dict:
        from prefrl.control.envs import ensure_headless_rendering
        from prefrl.control.evaluate import evaluate_run

        ensure_headless_rendering()
        out = evaluate_run(self.run_dir, self.episodes, self.video, self.run_dir / "videos" / "eval.mp4",
                           deterministic=not self.stochastic)
        print(f"true return over {self.episodes} episodes: {out['return_mean']:.2f} +- {out['return_std']:.2f}")
        if out.get("video"):
            print(f"video: {out['video']}")
        if self.reward_check:
            from prefrl.control.diagnose import reward_check

            out["reward_check"] = rc = reward_check(self.run_dir)
            if rc["pairs"] == 0:
                print(f"reward model on {rc['clips']} fresh on-policy clips: every clip has the same true return "
                      "(the agent never fails or scores differently), so there is no pair to rank")
            else:
                print(f"reward model on {rc['clips']} fresh on-policy clips: pair accuracy {rc['accuracy']:.3f} "
                      f"({rc['pairs']} pairs), Spearman {rc['spearman']:.3f}")
        return out


def _print_summary(run_dir: Path, summary: dict) -> None:
    print(json.dumps(summary, indent=2))
    for name in ("learning_curve.png", "videos/agent.mp4"):
        if (run_dir / name).exists():
            print(f"wrote {run_dir / name}")


COMMANDS = {"tasks": TasksCommand, "train": TrainCommand, "eval": EvalCommand, "rate": RateCommand}
