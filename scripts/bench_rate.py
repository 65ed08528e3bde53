"""Comparisons `prefrl rate` needs to order policies with disjoint 90% intervals: adaptive vs uniform pairs.

For each seed, both schemes rate the same agents (the same clips: ``--clips`` per agent, sampled
with the seed as `prefrl rate --seed` does) with the synthetic oracle up to ``--max-comparisons``,
through the command's own loop (``core.ratings.run_rating``). The ratings after every judgment
are recorded; a scheme *needs* N comparisons on a seed when from N on every later fit has the
policies in the expected order (the order of ``--run-dirs``, worst first) with disjoint
intervals. (Stopping at the first separation would peek at the data after every judgment and
overstate what a fixed budget achieves.)

    python scripts/bench_rate.py                                  # bench_out/rate-agents/ip-{5000,10000,30000}, seeds 0-4
    python scripts/bench_rate.py --run-dirs A B C --seeds 0 1 2 --max-comparisons 300

Writes OUT/bench.json and OUT/bench.md (default results/rate/); the stores go under --work.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np

from prefrl.control.rate import agent_clips
from prefrl.core.oracles import open_oracle
from prefrl.core.ratings import (
    RatingConfig,
    RatingPlan,
    display_names,
    record_pool,
    run_rating,
)
from prefrl.core.store import PreferenceStore
from prefrl.core.utils import set_torch_threads

AGENTS = [ROOT / f"bench_out/rate-agents/ip-{s}" for s in (5000, 10000, 30000)]


def sample(run_dirs: list[Path], seed: int, n_clips: int) -> list:
    """Each agent's clips, as `prefrl rate --seed SEED --clips N` samples them."""
    return [agent_clips(d, n_clips, seed_offset=40_000 + 1000 * seed) for d in run_dirs]


def one(run_dirs: list[Path], clips: list, scheme: str, seed: int, cap: int, work: Path) -> dict:
    out = work / f"{scheme}-s{seed}"
    shutil.rmtree(out, ignore_errors=True)
    names = display_names(run_dirs)
    expected = list(range(len(run_dirs)))[::-1]  # best first
    trace: list[tuple[int, bool]] = []
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    with PreferenceStore(out) as store:
        pools = []
        for d, c in zip(run_dirs, clips):
            pools.append(store.add_clips(c, keep_frames=False))
            record_pool(store, str(d.resolve()), pools[-1])
        oracle = open_oracle("synthetic", store, rng)
        plan = RatingPlan([str(d.resolve()) for d in run_dirs], names, pools, aligned=False, load=store.load_clips)
        final = run_rating(store, oracle, plan, cap, scheme, RatingConfig(), rng,
                           on_progress=lambda r, n: trace.append((n, r.separated() and r.order() == expected)))
    ok = [good for _, good in trace]
    bad_after = [n for n, good in trace if not good]
    needed = (bad_after[-1] + 1 if bad_after else trace[0][0]) if ok and ok[-1] else None
    first = next((n for n, good in trace if good), None)
    return {"scheme": scheme, "seed": seed, "needed": needed, "first_separated": first, "final_correct": bool(ok and ok[-1]),
            "comparisons": final.comparisons, "order": [names[i] for i in final.order()],
            "pair_games": final.to_json()["pair_games"], "wall_s": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run-dirs", nargs="+", type=Path, default=AGENTS, help="agents, worst first")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--max-comparisons", type=int, default=300)
    ap.add_argument("--clips", type=int, default=30, help="clips per agent")
    ap.add_argument("--work", type=Path, default=ROOT / "bench_out/rate-bench")
    ap.add_argument("--out", type=Path, default=ROOT / "results/rate")
    args = ap.parse_args()
    set_torch_threads(1)
    rows = []
    for seed in args.seeds:
        clips = sample(args.run_dirs, seed, args.clips)
        for scheme in ("adaptive", "uniform"):
            r = one(args.run_dirs, clips, scheme, seed, args.max_comparisons, args.work)
            rows.append(r)
            print(f"seed {seed} {scheme:8s}: needs {r['needed']} (first separated at {r['first_separated']}); "
                  f"final order {' > '.join(r['order'])}  ({r['wall_s']} s)  {r['pair_games']}", flush=True)
    summary = {}
    for scheme in ("adaptive", "uniform"):
        rs = [r for r in rows if r["scheme"] == scheme]
        ns = [r["needed"] for r in rs if r["needed"] is not None]
        summary[scheme] = {"runs": len(rs), "correct": len(ns), "median": statistics.median(ns) if ns else None,
                           "max": max(ns) if ns else None, "all": [r["needed"] for r in rs],
                           "first_separated": [r["first_separated"] for r in rs]}
    cmdline = "python scripts/bench_rate.py " + " ".join(sys.argv[1:])
    md = [("| pairs | seeds ordered and separated by the cap | comparisons needed (median) | max | per seed |"
           " first separation (peeking) |"), "|---|---|---|---|---|---|"]
    for scheme, s in summary.items():
        per = ", ".join("—" if n is None else str(n) for n in s["all"])
        peek = ", ".join("—" if n is None else str(n) for n in s["first_separated"])
        md.append(f"| {scheme} | {s['correct']}/{s['runs']} | {s['median']} | {s['max']} | {per} | {peek} |")
    text = "\n".join(md) + f"\n\nagents: {', '.join(str(d) for d in args.run_dirs)}; cap {args.max_comparisons}; `{cmdline.strip()}`\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.md").write_text(text)
    (args.out / "bench.json").write_text(json.dumps({"summary": summary, "runs": rows, "command": cmdline.strip(),
                                                     "run_dirs": [str(d) for d in args.run_dirs]}, indent=2))
    print(text)


if __name__ == "__main__":
    main()
