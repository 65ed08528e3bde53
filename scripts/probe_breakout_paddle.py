"""What a finished Breakout run's learned reward pays per step, by where the paddle is.

Collects ``--clips`` fresh 25-step clips of a uniformly random policy and as many of the run's
trained agent (stochastic policy), scores every step with the run's final reward model (the
agent's reward: normalised as in training) and reports, in units of the per-step reward's std over
all of those steps, the mean reward of steps without a brick hit by the paddle's third of the screen
(read from the newest 84x84 frame's paddle rows), the mean at brick hits, and the spread across
clips of the summed reward of steps without a hit (what a clip's return carries besides its hits)::

    python scripts/probe_breakout_paddle.py bench_out/breakout500k-s0/breakout-500k-500000-1500-s0 \
        --out results/atari/breakout500k-s0/paddle.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

PADDLE_ROWS = slice(74, 78)
"""Rows of the 84x84 observation the paddle moves in (below the lowest the ball is drawn at most steps)."""
INSIDE_WALLS = slice(8, 76)
"""Columns between the side walls."""


def paddle_x(frames: np.ndarray) -> np.ndarray:
    """(N,) the paddle's mean column (0 .. 67 inside the walls) in (N, 84, 84) frames, -1 where the rows are empty."""
    band = frames[:, PADDLE_ROWS, INSIDE_WALLS].astype(np.float64).max(axis=1)  # (N, 68)
    mass = band.sum(axis=1)
    return np.where(mass > 0, (band * np.arange(band.shape[1])).sum(axis=1) / np.maximum(mass, 1), -1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a finished learned-reward breakout run directory")
    ap.add_argument("--clips", type=int, default=120, help="clips per policy")
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--out", type=Path, help="also write the table here (markdown)")
    args = ap.parse_args()

    from bench_atari import _load_run, collect_clips, step_rewards

    from prefrl.core.rundir import RunDir
    from prefrl.core.types import PrefrlError

    run = RunDir(args.run)
    cfg, length, ens, model = _load_run(run)
    if ens is None:
        raise PrefrlError(f"{args.run}: no reward model (a true-reward run?)")
    if "Breakout" not in cfg.task.env.id:
        raise PrefrlError(f"{args.run}: env {cfg.task.env.id}; this probe reads Breakout's paddle rows")
    lines = [(f"Per-step learned reward of `{args.run.name}` (`scripts/probe_breakout_paddle.py`, {args.clips} clips of "
              f"{length} steps per policy, seed {args.seed}), in units of its per-step std over all those steps:"), "",
             "| policy | steps without a hit: paddle left third | middle | right third | at hits | std across clips of the no-hit steps' summed reward |",
             "|---|---|---|---|---|---|"]
    scored = []  # (name, per-step reward, true reward, paddle column, clips, steps)
    for name, policy in (("random", None), ("learned-reward agent", model)):
        clips, _ = collect_clips(cfg, policy, args.clips, length, args.seed)
        r, obs = step_rewards(ens, clips)
        scored.append((name, r, clips.true_rew.reshape(-1), paddle_x(obs[:, -1]), *clips.true_rew.shape))
    sd = float(np.concatenate([s[1] for s in scored]).std()) or 1.0  # one unit for both policies
    for name, r, true, x, n, t in scored:
        cells = []
        for part in (x >= 0) & (x < 22), (x >= 22) & (x < 46), x >= 46:
            m = part & (true == 0)
            cells.append(f"{r[m].mean() / sd:+.2f} ({m.mean():.0%} of steps)" if m.any() else "n/a")
        hits = true > 0
        cells.append(f"{r[hits].mean() / sd:+.2f} ({int(hits.sum())} steps)" if hits.any() else "n/a")
        no_hit_sums = np.where(hits, 0.0, r).reshape(n, t).sum(axis=1)
        cells.append(f"{no_hit_sums.std() / sd:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
