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
    SCHEMES,
    RatingConfig,
    RatingPlan,
    display_names,
    next_pair,
    rate,
    record_pool,
    reference_weights,
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


def simulate(truths: list[list[float]], seeds: int, checks: list[int]) -> list[dict]:
    """Simulated judgments from known Bradley-Terry ratings, through the same pair choice and fit:
    how often the 90% intervals cover the truth, and how often the policies count as separated
    (and with a wrong order), after ``checks`` comparisons, for each scheme."""
    rows = []
    for truth in truths:
        t = np.asarray(truth, np.float64) - np.mean(truth)
        best_first = [int(i) for i in np.argsort(-t, kind="stable")]
        names = [f"p{i}" for i in range(len(t))]
        for scheme in SCHEMES:
            acc = {c: [0, 0, 0, 0] for c in checks}  # separated, separated but wrong, covered, intervals
            for seed in range(seeds):
                rng = np.random.default_rng(seed)
                left: list[int] = []
                right: list[int] = []
                labels: list[float] = []
                r = rate(left, right, labels, names, RatingConfig(), rng)
                while len(labels) < max(checks):
                    i, j = next_pair(scheme, r, RatingConfig().warmup, rng)
                    left.append(i)
                    right.append(j)
                    labels.append(float(rng.random() < 1.0 / (1.0 + np.exp(-(t[i] - t[j])))))
                    r = rate(left, right, labels, names, RatingConfig(), rng)
                    if len(labels) in acc:
                        a = acc[len(labels)]
                        sep = r.separated()
                        a[0] += sep
                        a[1] += sep and r.order() != best_first and len(set(truth)) == len(truth)
                        tc = t - t @ reference_weights(r.games)  # the truth on the ratings' reference
                        a[2] += int(((r.low <= tc) & (tc <= r.high)).sum())
                        a[3] += len(t)
            for c, a in acc.items():
                rows.append({"truth": truth, "scheme": scheme, "comparisons": c, "seeds": seeds, "separated": a[0],
                             "separated_wrong": a[1], "coverage": round(a[2] / a[3], 3)})
                print(f"truth {truth} {scheme:8s} n={c:4d}: coverage {a[2] / a[3]:.2f}, separated {a[0]}/{seeds}, "
                      f"of which wrong order {a[1]}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run-dirs", nargs="+", type=Path, default=AGENTS, help="agents, worst first")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--max-comparisons", type=int, default=300)
    ap.add_argument("--clips", type=int, default=30, help="clips per agent")
    ap.add_argument("--work", type=Path, default=ROOT / "bench_out/rate-bench")
    ap.add_argument("--out", type=Path, default=ROOT / "results/rate")
    ap.add_argument("--simulate", action="store_true",
                    help="instead: interval coverage on simulated judgments from known ratings (no agents)")
    ap.add_argument("--truths", nargs="+", default=["0,0,0", "0,0.3,0.6", "0,0.7,3"],
                    help="with --simulate: true ratings, comma-separated, one setting per argument")
    args = ap.parse_args()
    set_torch_threads(1)
    if args.simulate:
        truths = [[float(x) for x in t.split(",")] for t in args.truths]
        rows = simulate(truths, len(args.seeds), [30, 60, 120])
        md = ["| true ratings | pairs | comparisons | coverage of 90% intervals | separated | separated, wrong order |",
              "|---|---|---|---|---|---|"]
        md += [f"| {r['truth']} | {r['scheme']} | {r['comparisons']} | {r['coverage']:.2f} | {r['separated']}/{r['seeds']} "
               f"| {r['separated_wrong']} |" for r in rows]
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "simulate.md").write_text("\n".join(md) + f"\n\n`python scripts/bench_rate.py {' '.join(sys.argv[1:])}`\n")
        (args.out / "simulate.json").write_text(json.dumps(rows, indent=2))
        print("\n".join(md))
        return
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
    shown = [str(d.resolve().relative_to(ROOT)) if d.resolve().is_relative_to(ROOT) else str(d) for d in args.run_dirs]
    text = "\n".join(md) + f"\n\nagents: {', '.join(shown)}; cap {args.max_comparisons}; `{cmdline.strip()}`\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.md").write_text(text)
    (args.out / "bench.json").write_text(json.dumps({"summary": summary, "runs": rows, "command": cmdline.strip(),
                                                     "run_dirs": shown}, indent=2))
    print(text)


if __name__ == "__main__":
    main()
