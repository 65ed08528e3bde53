"""`prefrl tasks`, `prefrl train`, `prefrl eval`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

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


@dataclass
class TrainCommand:
    """Train PPO on a reward learned from preferences (or on the true reward)."""

    task: str | None = None
    """Task preset name (see `prefrl tasks`) or path to a .toml preset. Required unless --resume."""
    oracle: str = "synthetic"
    """Who labels: synthetic, human, stochastic, myopic, mistake, skip, equal."""
    labels: int | None = None
    """Label budget (default: the preset's)."""
    steps: int | None = None
    """Env steps (default: the preset's)."""
    seed: int = 0
    """Seed of env, PPO, reward model and oracle."""
    reward: str = "learned"
    """`learned` (from preferences) or `true` (plain PPO baseline, same code path)."""
    run_dir: Path | None = None
    """Run directory (default: runs/TASK-ORACLE-LABELS-sSEED)."""
    resume: bool = False
    """Continue an interrupted run from its last checkpoint, with its labels and config."""
    reward_model: Path | None = None
    """Train a fresh agent on this saved reward model, asking for no labels."""
    baseline: bool = False
    """Also run true-reward PPO (same steps and seed) into RUN_DIR/baseline and plot both."""
    video: bool = True
    """Write an MP4 of the trained agent (RUN_DIR/videos/agent.mp4)."""
    eval_episodes: int = 5
    """Episodes of the final evaluation (0 = none)."""
    checkpoint_every: int = 10
    """PPO rollouts between checkpoints (agent, reward model) for --resume."""

    def run(self) -> dict:
        from prefrl.control.config import RunConfig, load_run_config
        from prefrl.control.envs import ensure_headless_rendering
        from prefrl.control.tasks import load_task
        from prefrl.control.train import run_training

        ensure_headless_rendering()
        if self.resume:
            if self.run_dir is None:
                raise PrefrlError("`--resume` needs `--run-dir` of the run to continue")
            cfg = load_run_config(self.run_dir)
        else:
            if self.task is None:
                raise PrefrlError("`--task` is required (see `prefrl tasks`)")
            task = load_task(self.task)
            if self.labels is not None:
                task = task.with_overrides({"prefs": {"labels": self.labels}}, where=f"task `{task.name}` with --labels")
            steps = self.steps if self.steps is not None else task.steps
            run_dir = self.run_dir or Path("runs") / (
                f"{task.name}-{self.oracle if self.reward == 'learned' else 'true'}-"
                f"{task.prefs.labels if self.reward == 'learned' else 0}-s{self.seed}"
            )
            cfg = RunConfig(
                task=task, run_dir=str(run_dir), oracle=self.oracle, steps=steps, seed=self.seed,
                reward=self.reward, reward_model=str(self.reward_model) if self.reward_model else None,
                eval_episodes=self.eval_episodes, video=self.video, baseline=self.baseline,
                checkpoint_every=self.checkpoint_every,
            )
        summary = run_training(cfg, resume=self.resume)
        _print_summary(Path(cfg.run_dir), summary)
        return summary


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

    def run(self) -> dict:
        from prefrl.control.envs import ensure_headless_rendering
        from prefrl.control.evaluate import evaluate_run

        ensure_headless_rendering()
        out = evaluate_run(self.run_dir, self.episodes, self.video, self.run_dir / "videos" / "eval.mp4",
                           deterministic=not self.stochastic)
        print(f"true return over {self.episodes} episodes: {out['return_mean']:.2f} +- {out['return_std']:.2f}")
        if out.get("video"):
            print(f"video: {out['video']}")
        return out


def _print_summary(run_dir: Path, summary: dict) -> None:
    print(json.dumps(summary, indent=2))
    for name in ("learning_curve.png", "videos/agent.mp4"):
        if (run_dir / name).exists():
            print(f"wrote {run_dir / name}")


COMMANDS = {"tasks": TasksCommand, "train": TrainCommand, "eval": EvalCommand}
