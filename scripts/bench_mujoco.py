"""Learned-reward PPO (synthetic labels) vs true-reward PPO on MuJoCo, side by side.

For each task and seed, the two arms run at the same time as two processes (so both
see the same machine load), with the same env steps, seed, PPO settings and env
stack; only the reward differs. Reports per task the final true return ratio
(learned / true; target >= 0.9, Christiano et al. 2017 report near-parity with 700
labels) and the wall-time ratio (learned / true; target <= 1.2).

    python scripts/bench_mujoco.py --steps 1000000 --labels 700 --tasks half-cheetah hopper walker2d

An interrupted benchmark picks up where it stopped (finished runs are skipped,
started ones are resumed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prefrl.control.train import return_ratio  # noqa: E402
from prefrl.core.rundir import RunDir  # noqa: E402


def run_pair(task: str, seed: int, steps: int, labels: int, out: Path) -> dict[str, dict]:
    procs = {}
    for arm in ("learned", "true"):
        rd = RunDir(out / f"{task}-{arm}-s{seed}")
        if rd.summary.exists():
            continue
        cmd = [sys.executable, "-m", "prefrl.cli", "train", "--steps", str(steps), "--run-dir", str(rd.path),
               "--eval-episodes", "10", "--no-video"]
        if rd.config.exists():  # a started run continues from its checkpoint with its own settings
            cmd += ["--resume"]
        else:
            cmd += ["--task", task, "--reward", arm, "--seed", str(seed), "--labels", str(labels)]
        log = open(out / f"{task}-{arm}-s{seed}.log", "a")  # a resumed run's log goes on after the first part
        procs[arm] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                       env=dict(os.environ, MUJOCO_GL="egl")), log)
    for arm, (p, log) in procs.items():
        if p.wait() != 0:
            raise SystemExit(f"{task} {arm} seed {seed} failed: see {log.name}")
        log.close()
    return {arm: RunDir(out / f"{task}-{arm}-s{seed}").read_summary() for arm in ("learned", "true")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["half-cheetah", "hopper", "walker2d"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--labels", type=int, default=700)
    ap.add_argument("--out", type=Path, default=ROOT / "bench_out" / "mujoco")
    ap.add_argument("--report", action="store_true",
                    help="only write the table and plot of the seeds whose two arms have finished (starts nothing)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    rows = []
    for task in args.tasks:
        if args.report:
            done = [s for s in args.seeds if all((args.out / f"{task}-{arm}-s{s}" / RunDir.SUMMARY).exists()
                                                 for arm in ("learned", "true"))]
            if not done:
                print(f"{task}: no finished seed yet")
                continue
            res = [{arm: RunDir(args.out / f"{task}-{arm}-s{s}").read_summary() for arm in ("learned", "true")}
                   for s in done]
        else:
            done = list(args.seeds)
            res = [run_pair(task, s, args.steps, args.labels, args.out) for s in done]
        learned_evals = [r["learned"]["eval_return_mean"] for r in res]
        true_evals = [r["true"]["eval_return_mean"] for r in res]
        learned_eval, true_eval = np.mean(learned_evals), np.mean(true_evals)
        learned_train = np.mean([r["learned"]["true_return_mean"] for r in res])
        true_train = np.mean([r["true"]["true_return_mean"] for r in res])
        wall_l = np.mean([r["learned"]["wall_s"] for r in res])
        wall_t = np.mean([r["true"]["wall_s"] for r in res])
        rows.append({
            "task": task, "steps": args.steps, "labels": args.labels, "seeds": len(done), "seed_ids": done,
            "learned_eval": learned_eval, "true_eval": true_eval,
            "learned_eval_sd": float(np.std(learned_evals)), "true_eval_sd": float(np.std(true_evals)),
            # learned / true only against a positive true return (None otherwise: Reacher's are negative)
            "seed_ratios": [return_ratio(le, te) for le, te in zip(learned_evals, true_evals)],
            "return_ratio": return_ratio(float(learned_eval), float(true_eval)),
            "learned_train": learned_train, "true_train": true_train,
            "wall_learned": wall_l, "wall_true": wall_t, "wall_ratio": wall_l / wall_t,
        })
        print(json.dumps(rows[-1]), flush=True)

    lines = [
        f"Command: `python scripts/bench_mujoco.py --steps {args.steps} --labels {args.labels} "
        f"--tasks {' '.join(args.tasks)} --seeds {' '.join(map(str, args.seeds))}`",
        "",
        "| task | env steps | labels | seeds | true return, learned reward (mean ± sd) | true return, true reward "
        "(mean ± sd) | return ratio (of the means) | per seed | "
        "train-episode return (learned / true) | wall s (learned / true) | wall-time ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['steps']:,} | {r['labels']} | {' '.join(map(str, r['seed_ids']))} | "
            f"{r['learned_eval']:.0f} ± {r['learned_eval_sd']:.0f} | "
            f"{r['true_eval']:.0f} ± {r['true_eval_sd']:.0f} | "
            f"{_ratio(r['return_ratio'])} | {' / '.join(_ratio(x) for x in r['seed_ratios'])} | "
            f"{r['learned_train']:.0f} / {r['true_train']:.0f} | "
            f"{r['wall_learned']:.0f} / {r['wall_true']:.0f} | {r['wall_ratio']:.2f} |"
        )
    table = "\n".join(lines)
    print(table)
    (args.out / "table.md").write_text(table + "\n")
    try:
        _plot(args, rows)
    except Exception as e:  # a plot is a bonus; the table is the result
        print(f"plot failed: {e}")


def _ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _plot(args, rows) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prefrl.viz import read_progress

    fig, axes = plt.subplots(1, len(rows), figsize=(5 * len(rows), 3.6), dpi=100, squeeze=False)
    for ax, r in zip(axes[0], rows):
        for arm, label in (("learned", f"learned reward ({args.labels} labels)"), ("true", "true reward")):
            for s in r["seed_ids"]:
                p = read_progress(RunDir(args.out / f"{r['task']}-{arm}-s{s}").progress)
                ax.plot(p["timesteps"], p["true_return_mean"], label=label if s == r["seed_ids"][0] else None,
                        color="C0" if arm == "learned" else "C1", alpha=0.8)
        ax.set_title(r["task"])
        ax.set_xlabel("env steps")
        ax.set_ylabel("true episode return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "bench_mujoco.png")


if __name__ == "__main__":
    main()
