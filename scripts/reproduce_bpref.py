"""B-Pref (Lee et al. 2021): PPO on rewards learned from scripted irrational teachers.

Each task is trained on the true reward and on rewards learned from the same label budget
given by each B-Pref teacher (prefrl's oracles, B-Pref's default knobs):

    synthetic   the perfectly rational teacher ("Oracle"): the clip with the higher true return
    stochastic  Boltzmann-rational, beta = 1 ("Stoc")
    myopic      step t of a T-step clip weighted gamma^(T-1-t), gamma = 0.9 ("Myopic")
    mistake     the rational answer flipped with probability 0.1 ("Mistake")
    skip        no answer when both clips' returns are below 0.1 x the average ("Skip")
    equal       0.5 when the returns differ by less than 0.1 x the average ("Equal")

Returns are normalised against the true-reward run, B-Pref's presentation: 0 = the untrained
policy (first PPO rollout), 1 = PPO on the true reward (final deterministic evaluation return).
The figures: learning curves per task (one curve per teacher) and the normalised final returns.

    python scripts/reproduce_bpref.py --quick                 # this machine, ~30 min
    python scripts/reproduce_bpref.py --full --backend ray --address auto

--quick:  InvertedPendulum with the `quick` preset's settings (500-step episodes, 1024-step
          rollouts, 1 s clips, 50k steps), 175 labels, seeds 0, 1. The runs are keyed like
          reproduce_christiano2017.py's and share its output folder, so its true-reward and
          175-label synthetic runs are reused, not run again.
--full:   HalfCheetah, Hopper, Walker2d and Ant presets (each preset's steps), 1400 labels, 5 seeds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prefrl.sweep import Arm, Grid, add_sweep_args, print_plan, sweep_and_report  # noqa: E402
from prefrl.core.types import PrefrlError  # noqa: E402

TEACHERS = ["synthetic", "stochastic", "myopic", "mistake", "skip", "equal"]
QUICK_IP = {"steps": 50_000, "env": {"max_episode_steps": 500}, "ppo": {"n_steps": 1024},
            "prefs": {"clip_seconds": 1.0}}  # = reproduce_christiano2017.QUICK_IP (shared runs)


def grid(mode: str, teachers: list[str]) -> Grid:
    if mode == "quick":
        return Grid(tasks={"inverted-pendulum": QUICK_IP},
                    arms=[Arm.true()] + [Arm.learned(175, t) for t in teachers], seeds=[0, 1], eval_episodes=10)
    return Grid(tasks={t: {} for t in ["half-cheetah", "hopper", "walker2d", "ant"]},
                arms=[Arm.true()] + [Arm.learned(1400, t) for t in teachers], seeds=[0, 1, 2, 3, 4], eval_episodes=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the small grid for a 2-core machine (default)")
    mode.add_argument("--full", action="store_true", help="B-Pref's scale, for a cluster")
    ap.add_argument("--tasks", nargs="+", help="tasks (presets) instead of the grid's; quick settings are kept "
                                                "for inverted-pendulum")
    ap.add_argument("--teachers", nargs="+", choices=TEACHERS, default=TEACHERS)
    ap.add_argument("--labels", type=int, help="label budget of every teacher (default: the grid's)")
    ap.add_argument("--seeds", nargs="+", type=int, help="replace the grid's seeds")
    ap.add_argument("--steps", type=int, help="env steps of every run (default: the grid's)")
    ap.add_argument("--results", type=Path, help="also copy the CSVs, table and figures here (e.g. results/bpref)")
    add_sweep_args(ap, default_out="")
    args = ap.parse_args()
    name = "full" if args.full else "quick"
    out = Path(args.out or ROOT / "runs" / f"reproduce-{name}")
    g = grid(name, args.teachers)
    if args.tasks:
        g.tasks = {t: g.tasks.get(t, QUICK_IP if t == "inverted-pendulum" and name == "quick" else {})
                   for t in args.tasks}
    if args.labels:
        g.arms = [Arm.true()] + [Arm.learned(args.labels, t) for t in args.teachers]
    if args.seeds:
        g.seeds = args.seeds
    if args.steps:
        g.steps = args.steps
        g.tasks = {t: {k: v for k, v in o.items() if k != "steps"} for t, o in g.tasks.items()}
    try:
        if args.dry_run:
            print_plan(g.runs(), out)
            return
        failed = sweep_and_report(g, out, out / "bpref", f"B-Pref teachers ({name}): PPO on rewards learned from "
                                  f"scripted teachers vs the true reward", backend=args.backend, workers=args.workers,
                                  address=args.address, resume=args.resume, aggregate_only=args.aggregate_only,
                                  results=args.results)
        if failed:
            raise SystemExit(f"{failed} run(s) failed; see their sweep.log, fix, and run again with --resume")
    except PrefrlError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
