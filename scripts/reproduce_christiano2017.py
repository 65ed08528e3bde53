"""Christiano et al. 2017, figures 1 (MuJoCo) and 2 (Atari): true-reward RL vs synthetic-oracle labels.

Each task is trained with PPO on the true reward (the paper's orange curve) and on a reward
learned from N synthetic labels for several budgets N (shades of blue), for several seeds.
The figure shows the true return vs env steps per task, one curve per budget, the mean
over seeds with ±1 sd shaded; the table the final deterministic evaluation return.

    python scripts/reproduce_christiano2017.py --quick                 # this machine, ~30 min
    python scripts/reproduce_christiano2017.py --full --backend ray --address auto   # a cluster

--quick:  InvertedPendulum (the `quick` preset's settings: 500-step episodes, 1024-step
          rollouts, 1 s clips, 50k steps) and Reacher (60k steps, 25-step clips), budgets
          88 / 175 / 350 (the paper's 350 / 700 / 1400 divided by 4) and true reward, seeds 0, 1.
--full:   the eight MuJoCo presets with budgets 350 / 700 / 1400 and true reward, 5 seeds
          (the paper averages 5 runs), each preset's env steps (`prefrl tasks`), plus the
          Atari games that have presets with 3300 / 5500 / 10000 labels, 3 seeds.

Runs are keyed by task, arm and seed (OUT/task--arm--sSEED, OUT = runs/reproduce-quick or
runs/reproduce-full); a sweep started again skips finished runs and, with --resume, continues
interrupted ones from their checkpoints. reproduce_bpref.py shares OUT, so its true-reward and
perfect-oracle runs are these when the settings agree. The CSVs (runs.csv, curves.csv,
table.csv), table.md and the figures (curves.png, normalized.png) go to OUT/christiano2017/FIG,
and with --results DIR to DIR/FIG too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prefrl.control.tasks import list_tasks  # noqa: E402
from prefrl.sweep import Arm, Grid, add_sweep_args, print_plan, sweep_and_report  # noqa: E402
from prefrl.core.types import PrefrlError  # noqa: E402

MUJOCO = ["ant", "half-cheetah", "hopper", "inverted-double-pendulum", "inverted-pendulum", "reacher", "swimmer",
          "walker2d"]
ATARI = ["beam-rider", "breakout", "enduro", "pong", "qbert", "seaquest", "space-invaders"]

# Reacher-v5 episodes are 50 steps (1 s); 1.5 s clips (75 steps) would never fit in one. The preset
# now says 25 too; stated here so the grid (and its finished runs) does not depend on that.
REACHER_CLIPS = {"prefs": {"clip_length": 25}}

QUICK_IP = {"steps": 50_000, "env": {"max_episode_steps": 500}, "ppo": {"n_steps": 1024},
            "prefs": {"clip_seconds": 1.0}}
QUICK_REACHER = {"steps": 60_000, **REACHER_CLIPS}


def grids(mode: str, suite: str) -> list[tuple[str, Grid]]:
    """(figure name, grid) pairs of a mode."""
    if mode == "quick":
        return [("mujoco", Grid(tasks={"inverted-pendulum": QUICK_IP, "reacher": QUICK_REACHER},
                                arms=[Arm.true(), Arm.learned(88), Arm.learned(175), Arm.learned(350)],
                                seeds=[0, 1], eval_episodes=10))]
    out = []
    if suite in ("mujoco", "all"):
        out.append(("mujoco", Grid(tasks={t: (REACHER_CLIPS if t == "reacher" else {}) for t in MUJOCO},
                                   arms=[Arm.true(), Arm.learned(350), Arm.learned(700), Arm.learned(1400)],
                                   seeds=[0, 1, 2, 3, 4], eval_episodes=10)))
    if suite in ("atari", "all"):
        have = [g for g in ATARI if g in list_tasks()]
        missing = [g for g in ATARI if g not in have]
        if missing:
            print(f"note: no Atari preset for {', '.join(missing)} among the presets; left out", flush=True)
        if have:
            out.append(("atari", Grid(tasks={g: {} for g in have},
                                      arms=[Arm.true(), Arm.learned(3300), Arm.learned(5500), Arm.learned(10000)],
                                      seeds=[0, 1, 2], eval_episodes=10)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the small grid for a 2-core machine (default)")
    mode.add_argument("--full", action="store_true", help="the paper's scale, for a cluster")
    ap.add_argument("--suite", choices=["mujoco", "atari", "all"], default="all", help="--full only")
    ap.add_argument("--tasks", nargs="+", help="only these tasks of the grid")
    ap.add_argument("--seeds", nargs="+", type=int, help="replace the grid's seeds")
    ap.add_argument("--steps", type=int, help="env steps of every run (default: the grid's)")
    ap.add_argument("--results", type=Path,
                    help="also copy the CSVs, table and figures here (e.g. results/christiano2017)")
    add_sweep_args(ap, default_out="")
    args = ap.parse_args()
    name = "full" if args.full else "quick"
    out = Path(args.out or ROOT / "runs" / f"reproduce-{name}")

    try:
        failed = 0
        all_grids = grids(name, args.suite)
        known = [t for _, g in all_grids for t in g.tasks]
        unknown = [t for t in args.tasks or [] if t not in known]
        if unknown:
            raise PrefrlError(f"`--tasks`: {', '.join(unknown)} not in the {name} grid ({', '.join(known)})")
        for fig, grid in all_grids:
            if args.tasks:
                grid.tasks = {t: o for t, o in grid.tasks.items() if t in args.tasks}
                if not grid.tasks:
                    continue
            if args.seeds:
                grid.seeds = args.seeds
            if args.steps:
                grid.steps = args.steps
                grid.tasks = {t: {k: v for k, v in o.items() if k != "steps"} for t, o in grid.tasks.items()}
            if args.dry_run:
                print_plan(grid.runs(), out)
                continue
            title = (f"Christiano et al. 2017, {'MuJoCo' if fig == 'mujoco' else 'Atari'} ({name}): "
                     f"PPO on learned vs true reward")
            failed += sweep_and_report(grid, out, out / "christiano2017" / fig, title, backend=args.backend,
                                       workers=args.workers, address=args.address, resume=args.resume,
                                       aggregate_only=args.aggregate_only,
                                       results=args.results / fig if args.results else None)
        if failed:
            raise SystemExit(f"{failed} run(s) failed; see their sweep.log, fix, and run again with --resume")
    except PrefrlError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
