"""prefrl vs the `imitation` library's PreferenceComparisons, side by side on the same task.

Both sides train Stable-Baselines3 PPO on a reward learned from synthetic comparisons of
clips (imitation: "fragments"), with as much in common as the two libraries allow:

- the same env (a Gymnasium v4 MuJoCo id, which both Gymnasium 0.29 and 1.x have) with the
  same fixed-length episode handling (a termination becomes a -10 penalty and an in-place
  reset; prefrl's `episode = "fixed"`, whose wrapper the imitation side imports), the same env steps,
  comparisons, clip length, seeds and torch threads (1);
- the same PPO hyperparameters and VecNormalize (observations and reward) over the learned reward;
- a 3-member reward ensemble of 64x64 MLPs on (obs, action), lr 1e-3, minibatch 64, label-noise
  0.1 in the Bradley-Terry loss, queries chosen by ensemble disagreement among 10x more candidate
  pairs (imitation: ActiveSelectionFragmenter on logit variance), 25% of the comparisons on the
  untrained agent before RL, a decaying query rate (imitation: its `hyperbolic` schedule);
- a perfectly rational synthetic labeller (higher true return wins, ties 0.5; imitation:
  SyntheticGatherer with temperature 0).

What stays each library's own: when the reward model is refit (prefrl: between PPO rollouts
when labels grew by 5%; imitation: every iteration, `--iterations` of them, each followed by
an equal share of the agent's training), its training
(prefrl: each member validated and early-stopped on its own out-of-bag 1/e, standardised inputs,
adaptive L2, 40 epochs at first then 5 warm-started;
imitation: 5 epochs per iteration, x8 on the first), and reward normalisation (prefrl:
per-member output normalisation; imitation: none beyond VecNormalize), and on InvertedPendulum
prefrl's termination input (its preset's choice: the reward net sees where a fall was hidden;
imitation's reward net sees (obs, action) only).

imitation 1.0.1 pins gymnasium 0.29 and stable-baselines3 2.2.1, so its side runs in a virtualenv
of its own that this script creates (default ~/.cache/prefrl/imitation-1.0.1; torch is installed
first at prefrl's version, from the same wheel, so imitation does not pull a CUDA build):
`scripts/imitation_runner.py`, run by that virtualenv's python, which imports prefrl's fixed-length
wrapper and agent checkpoint from this repository rather than copying them.

The trained agents of both sides are evaluated by the same code (`prefrl.control.evaluate`,
deterministic policy, `--eval-episodes` episodes on a fresh env): the imitation agent's policy
weights and VecNormalize statistics are saved in prefrl's checkpoint format. Wall time is the
training time measured inside each process (from after the env and PPO are built to the end of
training, labels and reward fitting included); the two sides of a seed run at the same time, so
both see the same machine load.

    python scripts/compare_imitation.py                      # InvertedPendulum-v4, seeds 0 1
    python scripts/compare_imitation.py --task half-cheetah --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prefrl.core.rundir import RunDir  # noqa: E402

RUNNER = Path(__file__).resolve().with_name("imitation_runner.py")
"""The imitation side, run by the imitation virtualenv's python."""

IMITATION_VERSION = "1.0.1"


@dataclass
class Setting:
    """What both sides share."""

    env_id: str
    max_episode_steps: int
    termination_penalty: float
    clip_length: int
    steps: int
    labels: int
    n_steps: int
    iterations: int
    batch_size: int = 64
    n_epochs: int = 10
    learning_rate: float = 3e-4
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    net_arch: tuple[int, ...] = (64, 64)
    members: int = 3
    reward_hidden: tuple[int, ...] = (64, 64)
    reward_lr: float = 1e-3
    reward_batch: int = 64
    noise_eps: float = 0.1
    pool_factor: int = 10
    initial_fraction: float = 0.25
    reward_epochs: int = 5
    initial_epochs: int = 40
    termination_input: bool = False  # prefrl only (its preset's choice): the reward net sees hidden falls


TASKS = {
    # 48 PPO rollouts of 1024 steps, 500-step episodes (return up to 500), 1 s clips; imitation
    # trains the agent 24 times (iterations + 1), 2 rollouts each.
    "inverted-pendulum": Setting("InvertedPendulum-v4", 500, -10.0, 25, 49_152, 175, 1024, iterations=23,
                                 termination_input=True),
    # 100 rollouts of 2048 steps, 1000-step episodes, 1.5 s clips; imitation: 50 x 2 rollouts.
    "half-cheetah": Setting("HalfCheetah-v4", 1000, 0.0, 30, 204_800, 700, 2048, iterations=49),
}


def prefrl_preset(s: Setting, name: str) -> str:
    """The prefrl preset (TOML) of a setting."""
    return f"""name = "{name}-v4"
description = "compare_imitation.py: {s.env_id}, fixed-length episodes"
steps = {s.steps}

[env]
id = "{s.env_id}"
type = "mujoco"
episode = "fixed"
termination_penalty = {s.termination_penalty}
max_episode_steps = {s.max_episode_steps}
normalize_obs = true
normalize_reward = true

[ppo]
n_steps = {s.n_steps}
batch_size = {s.batch_size}
n_epochs = {s.n_epochs}
learning_rate = {s.learning_rate}
gamma = {s.gamma}
gae_lambda = {s.gae_lambda}
clip_range = {s.clip_range}
net_arch = {list(s.net_arch)}

[prefs]
labels = {s.labels}
clip_length = {s.clip_length}
initial_fraction = {s.initial_fraction}
query = "disagreement"
pool_factor = {s.pool_factor}
reward_epochs = {s.reward_epochs}
initial_epochs = {s.initial_epochs}

[reward_model]
kind = "mlp"
hidden = {list(s.reward_hidden)}
members = {s.members}
termination_input = {str(s.termination_input).lower()}

[reward_train]
lr = {s.reward_lr}
batch_size = {s.reward_batch}
noise_eps = {s.noise_eps}
"""


def ensure_venv(venv: Path) -> Path:
    """The imitation virtualenv: created on first use (torch first, at prefrl's version)."""
    import mujoco
    import torch

    py = venv / "bin" / "python"
    marker = venv / "prefrl-ready.json"
    want = {"imitation": IMITATION_VERSION, "torch": torch.__version__.split("+")[0], "mujoco": mujoco.__version__}
    if py.exists() and marker.exists() and json.loads(marker.read_text()) == want:
        return py
    print(f"creating the imitation virtualenv in {venv} (once; a few minutes)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q"]
    # torch first and pinned: imitation's torch requirement must not pull a CUDA build.
    subprocess.run(pip + [f"torch=={want['torch']}"], check=True)
    # gymnasium 0.29 needs numpy < 2 (np.bool8); pandas must match that numpy; the same MuJoCo as prefrl.
    subprocess.run(pip + [f"imitation=={IMITATION_VERSION}", "gymnasium[mujoco]==0.29.1", "numpy<2", "pandas<2.3",
                          f"mujoco=={want['mujoco']}", f"torch=={want['torch']}"], check=True)
    marker.write_text(json.dumps(want))
    return py


def write_eval_config(rd: RunDir, preset: Path, seed: int, steps: int) -> None:
    """A prefrl config.json beside the imitation agent, so prefrl's evaluator can load it."""
    from prefrl.control.config import RunConfig
    from prefrl.control.tasks import load_task

    cfg = RunConfig(task=load_task(str(preset)), run_dir=str(rd.path), steps=steps, seed=seed, reward="learned",
                    eval_episodes=0, video=False)
    rd.mkdir()
    rd.write_config(cfg.to_dict())


def run_seed(seed: int, s: Setting, name: str, preset: Path, out: Path, py: Path) -> dict:
    """Both sides of one seed at the same time; returns their summaries (training only)."""
    pre, imi = RunDir(out / f"prefrl-{name}-s{seed}"), RunDir(out / f"imitation-{name}-s{seed}")
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"), PREFRL_THREADS="1",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    procs = {}
    if not pre.summary.exists():
        if pre.path.exists():
            shutil.rmtree(pre.path)
        cmd = [sys.executable, "-m", "prefrl.cli", "train", "--task", str(preset), "--seed", str(seed),
               "--steps", str(s.steps), "--labels", str(s.labels), "--run-dir", str(pre.path),
               "--eval-episodes", "0", "--no-video"]
        procs["prefrl"] = (subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(out / f"prefrl-{name}-s{seed}.log", "w"),
                                            stderr=subprocess.STDOUT), time.perf_counter())
    if not imi.summary.exists():
        cfg_path = out / f"imitation-{name}-s{seed}.json"
        cfg_path.write_text(json.dumps({"out": str(imi.path), "seed": seed, "setting": asdict(s)}))
        procs["imitation"] = (subprocess.Popen([str(py), str(RUNNER), str(cfg_path)], cwd=out, env=env,
                                               stdout=open(out / f"imitation-{name}-s{seed}.log", "w"),
                                               stderr=subprocess.STDOUT), time.perf_counter())
    for side, (p, t) in procs.items():
        if p.wait() != 0:
            raise SystemExit(f"{side} seed {seed} failed: see {out / f'{side}-{name}-s{seed}.log'}")
        rd = pre if side == "prefrl" else imi
        summ = rd.read_summary()
        summ["process_s"] = round(time.perf_counter() - t, 2)
        rd.write_summary(summ)
    write_eval_config(imi, preset, seed, s.steps)
    return {"prefrl": pre.read_summary(), "imitation": imi.read_summary()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=sorted(TASKS), default="inverted-pendulum")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--steps", type=int, help="env steps (default: the task's)")
    ap.add_argument("--labels", type=int, help="comparisons (default: the task's)")
    ap.add_argument("--iterations", type=int,
                    help="imitation's num_iterations (default: the task's); it trains the agent iterations + 1 times")
    ap.add_argument("--eval-episodes", type=int, default=10)
    ap.add_argument("--out", type=Path, default=ROOT / "bench_out" / "compare_imitation")
    ap.add_argument("--venv", type=Path, default=Path.home() / ".cache" / "prefrl" / f"imitation-{IMITATION_VERSION}")
    ap.add_argument("--results", type=Path, help="also write the table (md) and numbers (json) here")
    args = ap.parse_args()

    from prefrl.control.evaluate import evaluate_run
    from prefrl.core.utils import set_torch_threads

    set_torch_threads(1)
    s = TASKS[args.task]
    for k in ("steps", "labels", "iterations"):
        if getattr(args, k):
            setattr(s, k, getattr(args, k))
    if s.steps % ((s.iterations + 1) * s.n_steps):
        raise SystemExit(f"error: `--steps` {s.steps} must be a multiple of (iterations + 1) x n_steps = "
                         f"{s.iterations + 1} x {s.n_steps}: imitation trains the agent iterations + 1 times, in whole "
                         f"PPO rollouts")
    name = args.task
    out = args.out / f"{name}-{s.steps}-{s.labels}"
    out.mkdir(parents=True, exist_ok=True)
    py = ensure_venv(args.venv)
    preset = out / f"{name}-v4.toml"
    preset.write_text(prefrl_preset(s, name))

    rows = []
    for seed in args.seeds:
        print(f"seed {seed}: prefrl and imitation side by side ...", flush=True)
        res = run_seed(seed, s, name, preset, out, py)
        row = {"seed": seed}
        for side in ("prefrl", "imitation"):
            ev = evaluate_run(out / f"{side}-{name}-s{seed}", episodes=args.eval_episodes)
            r = res[side]
            row[side] = {"eval_return": ev["return_mean"], "eval_std": ev["return_std"],
                         "train_return": r.get("true_return_mean"), "wall_s": r["wall_s"],
                         "process_s": r.get("process_s"), "labels": r.get("labels"), "timesteps": r.get("timesteps")}
        rows.append(row)
        print(json.dumps(row), flush=True)

    md = format_report(rows, s, args)
    print(md)
    (out / "report.md").write_text(md + "\n")
    (out / "report.json").write_text(json.dumps({"setting": asdict(s), "task": name, "rows": rows}, indent=2))
    if args.results:
        args.results.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / "report.md", args.results / f"{name}.md")
        shutil.copy(out / "report.json", args.results / f"{name}.json")


def format_report(rows: list[dict], s: Setting, args) -> str:
    import numpy as np

    def mean(side: str, k: str) -> float:
        return float(np.mean([r[side][k] for r in rows]))

    lines = [f"{s.env_id}, fixed-length {s.max_episode_steps}-step episodes, {s.steps} env steps, {s.labels} synthetic "
             f"comparisons, {s.clip_length}-step clips, seeds {' '.join(str(r['seed']) for r in rows)}; "
             f"eval: {args.eval_episodes} deterministic episodes, same evaluator for both.", "",
             "| seed | prefrl eval return | imitation eval return | prefrl train return | imitation train return | "
             "prefrl wall s | imitation wall s | wall ratio prefrl/imitation |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p, i = r["prefrl"], r["imitation"]
        lines.append(f"| {r['seed']} | {p['eval_return']:.1f} | {i['eval_return']:.1f} | {p['train_return']:.1f} | "
                     f"{i['train_return']:.1f} | {p['wall_s']:.0f} | {i['wall_s']:.0f} | {p['wall_s'] / i['wall_s']:.2f} |")
    pe, ie = mean("prefrl", "eval_return"), mean("imitation", "eval_return")
    pw, iw = mean("prefrl", "wall_s"), mean("imitation", "wall_s")
    lines.append(f"| mean | {pe:.1f} | {ie:.1f} | {mean('prefrl', 'train_return'):.1f} | "
                 f"{mean('imitation', 'train_return'):.1f} | {pw:.0f} | {iw:.0f} | {pw / iw:.2f} |")
    lines += ["", f"return ratio prefrl/imitation (mean eval return): {pe / ie:.2f}" if ie else "",
              f"wall-time ratio prefrl/imitation (mean training wall): {pw / iw:.2f}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
