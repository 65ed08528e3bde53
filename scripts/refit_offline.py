"""Refit a run's reward model offline on its first K judgments and score it on the run's later clips.

The first judgments of a run are its up-front labels on random-policy clips; the later clips are
the agent's own, so this measures what the first fit of a reward-model setting knows about the
behaviour the agent will actually produce: pairwise accuracy over pairs of later clips with
different true returns, and, for runs whose clips carry the termination flag, how far below the
other steps a flagged step's reward sits ("fall drop", in units of the other steps' reward std).

    python scripts/refit_offline.py --labels 25 --flag-scale standardised 10 100 \\
        --runs runs/ablate-ip-term/inverted-pendulum@default--synthetic-100--s*

Each setting is fit with the same seed on the same judgments; only what is named changes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prefrl.core import nets  # noqa: E402
from prefrl.core.ensemble import RewardEnsemble  # noqa: E402
from prefrl.core.store import PreferenceStore  # noqa: E402
from prefrl.core.trainer import RewardTrainer  # noqa: E402
from prefrl.core.types import PrefrlError  # noqa: E402
from prefrl.core.utils import input_spec_from_clips, set_torch_threads  # noqa: E402


def refit_and_score(run: Path, k: int, flag_scale: str, seed: int = 0) -> tuple[float, float | None]:
    """(pairwise accuracy on the run's later clips, fall drop or None) of a fit on its first k judgments."""
    import dataclasses

    import torch

    from prefrl.control.config import load_run_config

    task = load_run_config(run).task
    clips, comps, _ = PreferenceStore(run, create=False).training_data()
    if clips is None or len(comps) <= k:
        raise PrefrlError(f"{run}: {len(comps)} judgments, need more than {k}")
    first = comps[np.arange(k)]
    used = set(first.left.tolist()) | set(first.right.tolist())
    later = np.array([i for i in range(len(clips)) if i not in used])
    cfg = task.reward_model
    standardised = flag_scale == "standardised"
    if standardised:
        cfg = dataclasses.replace(cfg, termination_input=False)  # the flag column standardised like the rest
    else:
        nets.FLAG_SCALE = float(flag_scale)
    spec = input_spec_from_clips(clips)
    torch.manual_seed(seed)
    ens = RewardEnsemble(spec, cfg)
    RewardTrainer(ens, task.reward_train, np.random.default_rng(seed)).fit(
        clips.model_inputs(), first, epochs=task.prefs.initial_epochs)
    sub = clips[later]
    ens.update_normalisation(sub.model_inputs())
    pred = ens.predict_clip_returns(sub.model_inputs()).mean(axis=1)
    true = sub.true_returns()
    i, j = np.triu_indices(len(true), 1)
    differ = true[i] != true[j]
    acc = float(np.mean((pred[i] > pred[j])[differ] == (true[i] > true[j])[differ]))
    drop = None
    if task.reward_model.termination_input:
        obs = sub.obs.reshape(-1, sub.obs.shape[-1])
        r = ens.step_fn()(obs, sub.acts.reshape(len(obs), -1))
        fell = obs[:, -1] == 1.0
        if fell.any() and (~fell).sum() > 1:
            drop = float((r[~fell].mean() - r[fell].mean()) / r[~fell].std())
    return acc, drop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", type=Path, required=True, help="run directories of learned-reward runs")
    ap.add_argument("--labels", type=int, default=25, help="fit on this many first judgments")
    ap.add_argument("--flag-scale", nargs="+", default=["standardised", "100"],
                    help="`standardised` or a number: the termination flag's input scale (runs with termination_input)")
    args = ap.parse_args()
    set_torch_threads(1)
    default = nets.FLAG_SCALE
    print(f"fit on the first {args.labels} judgments of each run, scored on its later clips")
    print("| flag | runs | pair accuracy, mean | per run | fall drop (sd), mean |")
    print("|---|---|---|---|---|")
    for scale in args.flag_scale:
        nets.FLAG_SCALE = default
        try:
            res = [refit_and_score(r, args.labels, scale) for r in args.runs]
        except PrefrlError as e:
            raise SystemExit(f"error: {e}") from None
        accs = [a for a, _ in res]
        drops = [d for _, d in res if d is not None]
        drop = f"{np.mean(drops):.1f}" if drops else "-"
        print(f"| {scale} | {len(res)} | {np.mean(accs):.3f} | {' '.join(f'{a:.2f}' for a in accs)} | {drop} |", flush=True)
    nets.FLAG_SCALE = default


if __name__ == "__main__":
    main()
