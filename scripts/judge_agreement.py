"""How an AI judge agrees with the judgments already in a store of text pairs, one order vs both orders.

    python scripts/judge_agreement.py --store prefs/ --model runs/sft [--principle "..."]

For every pair some other annotator judged (e.g. `vader/synthetic` from `prefrl text label`), the
judge (prefrl.text.judge.AIJudge) is asked in both orders. Printed, per other annotator: agreement
of the judge asked once (left shown as A: what a judge without the position swap would store),
and of the real judge (both orders; disagreement = skip), over the pairs each states a preference
on; plus how often the judge preferred position A. Nothing is written to the store.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from prefrl.core.store import PreferenceStore
from prefrl.core.utils import set_torch_threads
from prefrl.text.judge import DEFAULT_PRINCIPLE, AIJudge, combine_orders


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--store", type=Path, required=True, help="directory holding prefs.sqlite with judged text pairs")
    p.add_argument("--model", type=Path, required=True, help="local Hugging Face causal-LM directory (the judge)")
    p.add_argument("--principle", default=DEFAULT_PRINCIPLE)
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = p.parse_args(argv)
    set_torch_threads(1)
    judge = AIJudge.load(a.model, principle=a.principle)
    with PreferenceStore(a.store, create=False, readonly=True) as store:
        js = [j for j in store.judgments() if j.source != "ai" and j.label is not None]
        ids = sorted({i for j in js for i in (j.left, j.right)})
        texts = dict(zip(ids, store.load_texts(ids)))
    by_who: dict[str, list] = defaultdict(list)
    for j in js:
        by_who[j.annotator or j.source].append(j)
    pairs = sorted({(j.left, j.right) for j in js})
    prompts = [texts[l][0] for l, _ in pairs]
    left, right = [texts[l][1] for l, _ in pairs], [texts[r][1] for _, r in pairs]
    m1 = judge.margins([judge.judging_prompt(pr, x, y) for pr, x, y in zip(prompts, left, right)])
    m2 = judge.margins([judge.judging_prompt(pr, y, x) for pr, x, y in zip(prompts, left, right)])
    one = dict(zip(pairs, np.where(m1 > 0, 1.0, np.where(m1 < 0, 0.0, 0.5))))
    both = dict(zip(pairs, combine_orders(m1, m2)))
    out: dict = {"pairs": len(pairs), "judge": judge.annotator,
                 "first_position_preferred": float(((m1 > 0).sum() + (m2 > 0).sum()) / (2 * len(pairs))),
                 "consistent_pairs": float((np.sign(m1) == -np.sign(m2)).mean()), "vs": {}}
    for who, rows in by_who.items():
        res = {}
        for name, said in (("one_order", one), ("both_orders", both)):
            stated = [(said[(j.left, j.right)], j.label) for j in rows if said[(j.left, j.right)] in (0.0, 1.0)]
            agree = sum((s > 0.5) == (lab > 0.5) for s, lab in stated if lab != 0.5)
            n = sum(1 for _, lab in stated if lab != 0.5)
            res[name] = {"preferences": len(stated), "agreement": agree / n if n else None, "compared": n}
        res["other_prefers_left"] = float(np.mean([j.label > 0.5 for j in rows if j.label != 0.5]))
        out["vs"][who] = res
    print(json.dumps(out, indent=2))
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
