"""Replay the reward-model fits of a finished learned-reward Atari run on its own store: CPU, peak RSS
and the final model's held-out quality, for the preset's settings or changed ones.

The run's judgments are refit in order, as the run did (the initial fit on the first
``--fits[0]`` labels with ``initial_epochs``, then one refit per later count with
``reward_epochs``), on lazy store data through the capped clip cache, in this process alone;
then the last model scores ``--heldout-clips`` fresh random-policy clips (Spearman, accuracy
on pairs with different true returns). The pairs are those the run asked (chosen by its own
models), so settings compare on the same labels::

    python scripts/bench_atari.py --overhead --task pong-quick --steps 16384 --labels 300 --seed 0 --out bench_out/ovh
    python scripts/bench_atari_refits.py --run bench_out/ovh/overhead-pong-quick-16384-learned-s0 --fits 150,225,300
    python scripts/bench_atari_refits.py --run ... --fits 150,188,235,294,300 --initial-epochs 8 --train '{"val_every": 1}'
    python scripts/bench_atari_refits.py --run ... --options '{"precision": "bfloat16"}'
    python scripts/bench_atari_refits.py --run ... --refit-replay 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a learned-reward run directory (its prefs.sqlite and clips/)")
    ap.add_argument("--fits", default="150,225,300", help="labels at each fit: the initial fit, then the refits")
    ap.add_argument("--initial-epochs", type=int, help="default: the run's [prefs] initial_epochs")
    ap.add_argument("--epochs", type=int, help="epochs per refit; default: the run's [prefs] reward_epochs")
    ap.add_argument("--members", type=int, help="default: the run's [reward_model] members")
    ap.add_argument("--refit-replay", type=float,
                    help="refits train on the new labels and this many times as many earlier ones; default: the run's [prefs] refit_replay")
    ap.add_argument("--train", default="{}", help="JSON of [reward_train] fields to change, e.g. '{\"val_every\": 1}'")
    ap.add_argument("--options", default="{}",
                    help="JSON of [reward_model.options] to change, e.g. '{\"precision\": \"bfloat16\"}'")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--heldout-clips", type=int, default=400)
    args = ap.parse_args()

    import torch

    from bench_atari import collect_clips, rank_metrics
    from prefrl.control.config import clip_length, load_run_config
    from prefrl.core.engine import replay_mask
    from prefrl.core.ensemble import RewardEnsemble
    from prefrl.core.store import PreferenceStore
    from prefrl.core.trainer import RewardTrainer
    from prefrl.core.utils import set_torch_threads, tune_malloc

    set_torch_threads()
    tune_malloc()
    cfg = load_run_config(args.run)
    task = cfg.task
    net = task.reward_model if args.members is None else dataclasses.replace(task.reward_model, members=args.members)
    net = dataclasses.replace(net, options={**dict(net.options), **json.loads(args.options)})
    train_cfg = dataclasses.replace(task.reward_train, **json.loads(args.train))
    with PreferenceStore(args.run, create=False, readonly=True) as store:
        store.set_cache_mib(task.prefs.clip_cache_mib)
        clips, comps, _ = store.training_data(lazy=True)
        inputs = clips.model_inputs()
        spec = RewardEnsemble.load(args.run / "reward_model.pt").spec  # the run's input spec
        torch.manual_seed(args.seed)  # the fresh model's initial weights (loading the run's used the generator)
        ens = RewardEnsemble(spec, net)
        trainer = RewardTrainer(ens, train_cfg, np.random.default_rng(args.seed))
        fits = [int(x) for x in args.fits.split(",")]
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.process_time()
        ratio = args.refit_replay if args.refit_replay is not None else task.prefs.refit_replay
        for k, n in enumerate(fits):
            epochs = (args.initial_epochs or task.prefs.initial_epochs) if k == 0 else (args.epochs or task.prefs.reward_epochs)
            n = min(n, len(comps))
            mask = replay_mask(n, n - min(fits[k - 1], n), ratio, trainer.rng) if k and ratio is not None else None
            metrics = trainer.fit(inputs, comps[np.arange(n)], epochs=epochs, train_mask=mask)
        out = {"fits": fits, "cpu_s": round(time.process_time() - t0, 1),
               "peak_rss_added_mb": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024),
               "file_reads": store.cache_loads, "oob_accuracy": round(metrics.get("reward/val/accuracy", float("nan")), 3)}
    held, _ = collect_clips(cfg, None, args.heldout_clips, clip_length(task), 60_000)
    m = rank_metrics(ens.predict_clip_returns(held.model_inputs()).mean(axis=1), held.true_returns())
    out.update(heldout_spearman=round(m["spearman"], 3), heldout_pair_accuracy=round(m["pair_accuracy"], 3),
               heldout_clips=m["clips"])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
