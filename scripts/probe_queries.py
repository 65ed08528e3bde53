"""Which clips each query rule asks about, replayed offline on a finished run's final reward model.

A finished learned-reward run (any control task; written for Atari, where rare events such as a
point won at Pong decide what the agent learns) gives its final reward model, its trained agent
and its store of judged clips. This script collects ``--clips`` fresh clips of that agent, then
replays ``--asks`` query rounds: each draws a pool of ``--pool`` clips from them and asks
``--per-ask`` pairs by each rule (``random``, ``disagreement``, ``entropy``, ``novelty``, with the
run's own pool factor and novelty bank sampled from its judged clips as the engine does). It
reports, per rule, the share of the asked clips in each true-return class against that class's
share of the pools: how much a rule enriches the labels with a rare kind of clip.

    python scripts/probe_queries.py bench_out/atari/pong-500k-500000-1500-s0 --out results/atari/query-probe
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from prefrl.core.rundir import RunDir  # noqa: E402

RULES = ("random", "disagreement", "entropy", "novelty")


def novelty_bank(rd: RunDir, ens, size: int, per_clip: int, rng: np.random.Generator) -> np.ndarray:
    """(B, F) embeddings of ``per_clip`` random steps of random judged clips, at most ``size`` (as the engine's bank)."""
    from prefrl.core.engine import sample_steps
    from prefrl.core.store import PreferenceStore

    with PreferenceStore(rd.path, create=False) as store:
        judged = store.judgments()
        ids = rng.permutation(sorted({j.left for j in judged} | {j.right for j in judged}))[: max(1, size // per_clip)]
        out = []
        for s in range(0, len(ids), 32):
            inputs = store.load_clips(sorted(ids[s : s + 32].tolist())).model_inputs()
            out.append(ens.embed_steps(sample_steps(inputs, per_clip, rng))[:, 0])
    return np.concatenate(out)[:size]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a finished learned-reward run directory")
    ap.add_argument("--clips", type=int, default=800, help="fresh clips of the run's agent")
    ap.add_argument("--asks", type=int, default=300, help="query rounds replayed")
    ap.add_argument("--pool", type=int, help="clips per pool (default: the run's pool size)")
    ap.add_argument("--per-ask", type=int, default=3, help="pairs asked per round")
    ap.add_argument("--bank", type=int, help="novelty bank size in steps (default: the run's novelty_bank)")
    ap.add_argument("--per-clip", type=int, default=4, help="steps per judged clip in the novelty bank")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="write probe.json and probe.md here")
    args = ap.parse_args()

    from bench_atari import _load_run, collect_clips

    from prefrl.core.query import select_pairs

    rd = RunDir(args.run)
    cfg, length, ens, model = _load_run(rd)
    if ens is None:
        raise SystemExit(f"{rd.path}: not a learned-reward run (no reward_model.pt)")
    prefs = cfg.task.prefs
    pool_size = args.pool or min(prefs.pool_size, args.clips)
    rng = np.random.default_rng(args.seed)
    clips, _ = collect_clips(cfg, model, args.clips, length, 90_000 + args.seed)
    ret = clips.true_returns()
    classes = [float(v) for v in np.unique(ret)]
    inputs = clips.model_inputs()
    returns = ens.predict_clip_returns(inputs, normalised=False)
    emb = ens.embed_steps(inputs)
    bank = novelty_bank(rd, ens, args.bank or prefs.novelty_bank, args.per_clip, rng)
    counts = {rule: np.zeros(len(classes)) for rule in RULES}
    pool_counts = np.zeros(len(classes))
    for _ in range(args.asks):
        idx = rng.choice(len(clips), pool_size, replace=False)
        pool_counts += [(ret[idx] == c).sum() for c in classes]
        for rule in RULES:
            pairs, _ = select_pairs(rule, args.per_ask, {k: v[idx] for k, v in inputs.items()}, rng, ens,
                                    pool_factor=prefs.pool_factor, returns=returns[idx], embeddings=(emb[idx], bank))
            asked = ret[idx][pairs.reshape(-1)]
            counts[rule] += [(asked == c).sum() for c in classes]
    pool_share = pool_counts / pool_counts.sum()
    result = {"run": str(rd.path), "clips": args.clips, "true_returns": {str(c): int((ret == c).sum()) for c in classes},
              "asks": args.asks, "pool": pool_size, "per_ask": args.per_ask,
              "pool_share": dict(zip(map(str, classes), pool_share.round(4).tolist())),
              "asked_share": {rule: dict(zip(map(str, classes), (c / c.sum()).round(4).tolist())) for rule, c in counts.items()}}
    lines = [f"Query rules replayed on `{rd.path.name}`'s final reward model: {args.asks} rounds of {args.per_ask} pairs "
             f"from pools of {pool_size} of {args.clips} fresh agent clips (true clip returns: "
             f"{', '.join(f'{c:g}: {int((ret == c).sum())}' for c in classes)}).", "",
             "| rule | " + " | ".join(f"asked clips with return {c:g}" for c in classes) + " |",
             "|---|" + "---|" * len(classes),
             "| (share in the pools) | " + " | ".join(f"{s:.3f}" for s in pool_share) + " |"]
    for rule in RULES:
        share = counts[rule] / counts[rule].sum()
        lines.append(f"| {rule} | " + " | ".join(f"{s:.3f} ({s / p:.1f}x)" if p else f"{s:.3f}" for s, p in zip(share, pool_share)) + " |")
    md = "\n".join(lines)
    print(md)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "probe.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "probe.md").write_text(md + "\n")


if __name__ == "__main__":
    main()
