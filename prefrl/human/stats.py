"""Per-annotator counts and agreement between annotators on the pairs they share.

A judgment's class is ``left`` (label > 0.5), ``right`` (< 0.5), ``equal`` (0.5) or
``skip``; pairs are compared regardless of which clip was shown on the left (a
judgment of (b, a) is flipped to (a, b)). Agreement between two annotators counts
the pairs both labeled (skips left out); Cohen's kappa corrects it for chance.
An annotator is the judgment's ``annotator``, else its ``source`` (e.g. ``synthetic``).
Pairs of text items (two completions of a prompt) are compared the same way: a person in the
viewer, a scripted text oracle (``vader/synthetic``) and the AI judge (``ai:MODEL``, ``prefrl
text judge``) on the same pairs each count as one annotator.
"""

from __future__ import annotations

import itertools
import statistics
from collections import Counter, defaultdict

from prefrl.core.store import Judgment, PreferenceStore

CLASSES = ("left", "right", "equal", "skip")


def judgment_class(label: float | None) -> str:
    if label is None:
        return "skip"
    return "left" if label > 0.5 else ("right" if label < 0.5 else "equal")


def _oriented(j: Judgment) -> tuple[tuple[int, int], str]:
    """(unordered pair, class as seen with the lower clip id on the left)."""
    cls = judgment_class(j.label)
    if j.left > j.right:
        cls = {"left": "right", "right": "left"}.get(cls, cls)
    return (min(j.left, j.right), max(j.left, j.right)), cls


def cohen_kappa(a: list[str], b: list[str]) -> float:
    """Cohen's kappa of two equally long label sequences (NaN when chance agreement is 1)."""
    n = len(a)
    if n == 0:
        return float("nan")
    p_o = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    p_e = sum(ca[k] * cb[k] for k in ca) / (n * n)
    return float("nan") if p_e >= 1.0 else (p_o - p_e) / (1.0 - p_e)


def annotator_stats(judgments: list[Judgment]) -> dict:
    """Counts per annotator and pairwise agreement.

    Returns:
        ``{"annotators": {name: {"judgments", "left", "right", "equal", "skip",
        "median_response_s"}}, "agreement": [{"a", "b", "shared", "agree", "agreement",
        "kappa"}], "overall_agreement": float | None, "pairs_multi": int}``.
    """
    per: dict[str, dict] = {}
    votes: dict[str, dict[tuple[int, int], str]] = defaultdict(dict)
    times: dict[str, list[float]] = defaultdict(list)
    for j in judgments:
        who = j.annotator or j.source
        row = per.setdefault(who, {"judgments": 0, **{c: 0 for c in CLASSES}})
        row["judgments"] += 1
        row[judgment_class(j.label)] += 1
        if j.response_s is not None:
            times[who].append(j.response_s)
        pair, cls = _oriented(j)
        votes[who][pair] = cls  # a later judgment of the same pair by the same person wins
    for who, row in per.items():
        row["median_response_s"] = statistics.median(times[who]) if times[who] else None
    rows, agree_all, shared_all = [], 0, 0
    for a, b in itertools.combinations(sorted(per), 2):
        common = [p for p in votes[a] if p in votes[b] and votes[a][p] != "skip" and votes[b][p] != "skip"]
        la, lb = [votes[a][p] for p in common], [votes[b][p] for p in common]
        agree = sum(x == y for x, y in zip(la, lb))
        rows.append({
            "a": a, "b": b, "shared": len(common), "agree": agree,
            "agreement": agree / len(common) if common else None, "kappa": _finite(cohen_kappa(la, lb)),
        })
        agree_all += agree
        shared_all += len(common)
    judged_by = Counter(p for who in votes for p in votes[who])
    return {
        "annotators": per,
        "agreement": rows,
        "overall_agreement": agree_all / shared_all if shared_all else None,
        "pairs_multi": sum(1 for n in judged_by.values() if n >= 2),
    }


def store_stats(store: PreferenceStore) -> dict:
    """``annotator_stats`` over every judgment in ``store``, plus queue counts."""
    js = store.judgments()
    out = annotator_stats(js)
    out["items"] = store.judged_kind(labeled_only=False)  # clips, texts, mixed or None
    if store.get_meta("mode") == "dataset":  # every annotator labels every pair: what is left for each
        people = sorted({j.annotator for j in js if j.query_id is not None and j.annotator})
        out["left_to_label"] = {who: store.count_open(who, shared=True) for who in people}
    else:
        out["pending"] = store.count_pending()
    return out


def dataset_stats(records: list[dict]) -> dict:
    """``annotator_stats`` over the labels of a dataset's ``comparisons.jsonl`` records (``load_dataset``).

    Who judged a line: its ``annotator``, else its ``source``, else ``dataset`` (as
    ``prefrl label --dataset`` imports them); pairs are dataset clip indices.
    """
    js = []
    for i, rec in enumerate(records):
        source = str(rec.get("source") or "dataset")
        who = str(rec.get("annotator") or source)
        js.append(Judgment(i + 1, int(rec["left"]), int(rec["right"]), float(rec["label"]), source, who, 0.0, None, None))
    return annotator_stats(js)


def format_stats(stats: dict) -> str:
    """A plain-text report of ``annotator_stats``."""
    lines = [f"{'annotator':20s} {'judged':>7s} {'left':>6s} {'right':>6s} {'equal':>6s} {'skip':>6s} {'median s':>9s}"]
    for who, r in sorted(stats["annotators"].items()):
        med = "-" if r["median_response_s"] is None else f"{r['median_response_s']:.2f}"
        lines.append(
            f"{who:20s} {r['judgments']:7d} {r['left']:6d} {r['right']:6d} {r['equal']:6d} {r['skip']:6d} {med:>9s}"
        )
    if not stats["annotators"]:
        lines.append("(no judgments yet)")
    lines.append("")
    if stats["agreement"]:
        lines.append(f"{'annotators':36s} {'shared':>7s} {'agree':>7s} {'kappa':>7s}")
        for r in stats["agreement"]:
            agr = "-" if r["agreement"] is None else f"{r['agreement']:.1%}"
            kap = "-" if r["kappa"] is None or r["kappa"] != r["kappa"] else f"{r['kappa']:.2f}"
            lines.append(f"{r['a'] + ' vs ' + r['b']:36s} {r['shared']:7d} {agr:>7s} {kap:>7s}")
        ov = stats["overall_agreement"]
        lines.append(f"overall agreement on shared pairs: {'-' if ov is None else f'{ov:.1%}'}"
                     f" ({stats['pairs_multi']} pairs judged by two or more)")
    else:
        lines.append("agreement: needs judgments from two or more annotators")
    if stats.get("items") == "texts":
        lines.append("items: text pairs (a prompt and two completions)")
    if "pending" in stats:
        lines.append(f"pending queries: {stats['pending']}")
    if stats.get("left_to_label"):
        lines.append("left to label: " + ", ".join(f"{w} {n}" for w, n in stats["left_to_label"].items()))
    return "\n".join(lines)


def _finite(x: float) -> float | None:
    return x if x == x else None  # NaN (undefined kappa) -> None, so the JSON stays valid
