"""PEBBLE (SAC on a learned reward) vs SAC on the true reward vs prefrl PPO with the same labels.

Per task and seed, three arms, run one after another (one process at a time, so each arm's
wall time is its own), with the same env steps and seed:

- ``pebble``: ``prefrl train --task TASK-sac`` (SAC, unsupervised pre-training, relabeled
  replay buffer, synthetic labels),
- ``sac-true``: the same preset with ``--reward true`` (SAC on the true reward, no pre-training),
- ``ppo``: ``prefrl train --task TASK`` (Christiano et al. 2017 PPO) with the same label budget, at
  ``--ppo-steps`` env steps (the issue's comparison: PPO at 1M steps against PEBBLE at 100k).

Reports per task the final deterministic evaluation (true return, mean over seeds, 10 episodes
each), the mean true return of the last training episodes, labels and wall time per arm, as a
Markdown table (OUT/table.md, OUT/results.json) and a plot of true return vs env steps
(OUT/bench_pebble.png).

    # the PEBBLE-scale benchmark (about 25 min per SAC run here: ~70 SAC steps/s)
    nice -n 10 python scripts/bench_pebble.py --tasks half-cheetah --steps 100000 --seeds 0 1 --labels 700 \
        --ppo-steps 1000000
    # a small InvertedPendulum check
    nice -n 10 python scripts/bench_pebble.py --tasks inverted-pendulum --steps 25000 --seeds 0 --labels 200

An interrupted benchmark picks up where it stopped (finished runs are skipped, started ones
are resumed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prefrl.core.rundir import RunDir  # noqa: E402

TASKS = {  # benchmark task -> (SAC preset, PPO preset)
    "half-cheetah": ("half-cheetah-sac", "half-cheetah"),
    "inverted-pendulum": ("inverted-pendulum-sac", "inverted-pendulum"),
}
ARMS = ("pebble", "sac-true", "ppo")
ARM_LABELS = {"pebble": "PEBBLE (SAC, learned reward)", "sac-true": "SAC, true reward", "ppo": "PPO, learned reward"}


def run_arm(task: str, arm: str, seed: int, steps: int, labels: int, out: Path, eval_episodes: int) -> dict:
    sac_preset, ppo_preset = TASKS[task]
    rd = RunDir(out / f"{task}-{arm}-s{seed}")
    if rd.summary.exists():
        return rd.read_summary()
    preset = ppo_preset if arm == "ppo" else sac_preset
    reward = "true" if arm == "sac-true" else "learned"
    cmd = [sys.executable, "-m", "prefrl.cli", "train", "--task", preset, "--reward", reward, "--seed", str(seed),
           "--steps", str(steps), "--run-dir", str(rd.path), "--eval-episodes", str(eval_episodes), "--no-video"]
    if reward == "learned":
        cmd += ["--labels", str(labels)]
    if rd.config.exists():  # started before: continue it as it was configured
        cmd = [sys.executable, "-m", "prefrl.cli", "train", "--run-dir", str(rd.path), "--resume",
               "--eval-episodes", str(eval_episodes), "--no-video"]
    log_path = out / f"{task}-{arm}-s{seed}.log"
    t0 = time.perf_counter()
    with open(log_path, "a") as log:
        p = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                           env=dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl")))
    if p.returncode != 0:
        raise SystemExit(f"{task} {arm} seed {seed} failed: see {log_path}")
    print(f"{task} {arm} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
    return rd.read_summary()


def _mean_sd(xs: list[float | None]) -> tuple[float, float]:
    v = [x for x in xs if x is not None]
    return (float(np.mean(v)), float(np.std(v))) if v else (float("nan"), float("nan"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["half-cheetah", "inverted-pendulum"], choices=sorted(TASKS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--labels", type=int, default=700, help="label budget of both learned-reward arms")
    ap.add_argument("--ppo-steps", type=int, default=None,
                    help="env steps of the PPO arm (default: --steps; the PEBBLE paper's comparison: 1000000)")
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ap.add_argument("--eval-episodes", type=int, default=10)
    ap.add_argument("--report-only", action="store_true",
                    help="run nothing: tabulate and plot the finished runs in OUT (an arm's missing seeds are left out)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench_out" / "pebble")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    rows = []
    for task in args.tasks:
        if args.report_only:
            res = {arm: [RunDir(args.out / f"{task}-{arm}-s{s}").read_summary() for s in args.seeds
                         if RunDir(args.out / f"{task}-{arm}-s{s}").summary.exists()] for arm in args.arms}
            res = {arm: sums for arm, sums in res.items() if sums}
        else:
            res = {arm: [run_arm(task, arm, s, _arm_steps(args, arm), args.labels, args.out, args.eval_episodes)
                         for s in args.seeds] for arm in args.arms}
        for arm, sums in res.items():
            ev, ev_sd = _mean_sd([r.get("eval_return_mean") for r in sums])
            tr, _ = _mean_sd([r.get("true_return_mean") for r in sums])
            wall, _ = _mean_sd([r.get("wall_s") for r in sums])
            steps = _arm_steps(args, arm)
            rows.append({"task": task, "arm": arm, "steps": steps, "seeds": len(sums),
                         "labels": int(np.mean([r.get("labels", 0) for r in sums])),
                         "eval_return": ev, "eval_sd": ev_sd, "per_seed_eval": [r.get("eval_return_mean") for r in sums],
                         "train_return": tr, "wall_s": wall,
                         "steps_per_s": steps / wall if wall == wall and wall > 0 else float("nan")})
            print(json.dumps(rows[-1]), flush=True)

    lines = [
        f"Command: `python scripts/bench_pebble.py --tasks {' '.join(args.tasks)} --steps {args.steps} "
        f"--labels {args.labels} --seeds {' '.join(map(str, args.seeds))}"
        + (f" --ppo-steps {args.ppo_steps}`" if args.ppo_steps else "`"),
        "",
        "| task | arm | env steps | labels | seeds | eval true return (mean +- sd over seeds) | per seed | "
        "last train episodes | wall s per run | env steps/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per = ", ".join("-" if x is None else f"{x:.0f}" for x in r["per_seed_eval"])
        lines.append(f"| {r['task']} | {ARM_LABELS[r['arm']]} | {r['steps']:,} | {r['labels']} | {r['seeds']} | "
                     f"{r['eval_return']:.0f} +- {r['eval_sd']:.0f} | {per} | {r['train_return']:.0f} | "
                     f"{r['wall_s']:.0f} | {r['steps_per_s']:.0f} |")
    table = "\n".join(lines)
    print(table)
    (args.out / "table.md").write_text(table + "\n")
    (args.out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    try:
        _plot(args)
    except Exception as e:  # a plot is a bonus; the table is the result
        print(f"plot failed: {e}")


def _arm_steps(args, arm: str) -> int:
    return args.ppo_steps if arm == "ppo" and args.ppo_steps else args.steps


def _plot(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prefrl.viz import read_progress

    fig, axes = plt.subplots(1, len(args.tasks), figsize=(5.5 * len(args.tasks), 3.8), dpi=100, squeeze=False)
    for ax, task in zip(axes[0], args.tasks):
        for c, arm in enumerate(args.arms):
            seeds = [s for s in args.seeds if RunDir(args.out / f"{task}-{arm}-s{s}").summary.exists()]
            for s in seeds:
                p = read_progress(RunDir(args.out / f"{task}-{arm}-s{s}").progress)
                label = ARM_LABELS[arm] if s == seeds[0] else None
                if _arm_steps(args, arm) > args.steps:  # a longer run (PPO at 1M): its final level as a line
                    ax.axhline(p["true_return_mean"][-1], color=f"C{c}", ls="--", lw=1,
                               label=f"{label}, end of {_arm_steps(args, arm):,} steps" if label else None)
                    continue
                ax.plot(p["timesteps"], p["true_return_mean"], color=f"C{c}", alpha=0.85, label=label)
        sac_preset = TASKS[task][0]
        from prefrl.control.tasks import load_task

        t = load_task(sac_preset).sac
        ax.axvline(t.learning_starts + t.unsupervised_steps, color="grey", ls=":", lw=1, label="PEBBLE: first labels")
        ax.set_title(f"{task} ({args.labels} labels)")
        ax.set_xlabel("env steps")
        ax.set_ylabel("true episode return (training)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "bench_pebble.png")


if __name__ == "__main__":
    main()
