"""Per-clip memory and disk figures of Atari clips, and the peak memory of one reward-model refit step.

Measures, on real Pong clips of a random policy (25 steps, 4x84x84 uint8 stacks):

- bytes per clip in memory (pool, clip cache) and on disk (compressed ``.npz`` of the store);
- the RSS one refit minibatch adds (forward and backward of one member, ``[reward_train] batch_size``
  comparisons = 2 x batch x 25 frames), for each preset given, in a fresh process each;

and from them estimates the peak RSS of a learned-reward run of a preset with N labels:
the true-reward arm's peak (``--true-rss-mb``, measured with ``bench_atari.py --overhead``) plus
the clip pool (``pool_mib``), the clip cache (``clip_cache_mib``), one refit minibatch and one
deferred rollout of observations; with ``max_train_labels`` the labels a refit reads are bounded,
but not the memory (the cache is), so the estimate does not grow with labels. Disk grows with them.

    python scripts/bench_atari_memory.py --presets pong pong-500k --labels 5500 --true-rss-mb 650
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def refit_step_rss(preset: str) -> None:
    """In this (fresh) process: RSS added by one refit minibatch of ``preset``'s reward model; prints JSON."""
    import torch

    from prefrl.control.tasks import load_task
    from prefrl.core.ensemble import RewardEnsemble
    from prefrl.core.nets import InputSpec
    from prefrl.core.trainer import RewardTrainer
    from prefrl.core.types import Comparisons
    from prefrl.core.utils import set_torch_threads, tune_malloc

    set_torch_threads()
    tune_malloc()
    task = load_task(preset)
    spec = InputSpec(obs_shape=(4, 84, 84), act_shape=(), act_n=6, obs_dtype="uint8")
    ens = RewardEnsemble(spec, task.reward_model)
    trainer = RewardTrainer(ens, task.reward_train)
    b = task.reward_train.batch_size
    rng = np.random.default_rng(0)
    inputs = {"obs": rng.integers(0, 255, (2 * b, 25, 4, 84, 84), dtype=np.uint8), "acts": np.zeros((2 * b, 25), np.int64)}
    comps = Comparisons(np.arange(b), np.arange(b, 2 * b), np.ones(b))
    ens.train()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(2):
        loss = trainer._member_loss(0, inputs, comps)
        loss.backward()
    with torch.no_grad():
        ens.predict_clip_returns(inputs)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"preset": preset, "batch": b, "refit_step_mb": round((after - before) / 1024, 1)}))


def clip_figures(n_clips: int) -> dict:
    from prefrl.control.envs import make_vec_env
    from prefrl.control.reward_wrapper import ClipCollector, LearnedRewardVecEnv
    from prefrl.control.tasks import load_task
    from prefrl.core.store import PreferenceStore

    task = load_task("pong")
    venv = make_vec_env(task.env, 0)
    collector = ClipCollector(venv.num_envs, 25, n_clips)
    wrapper = LearnedRewardVecEnv(venv, None, collector)
    wrapper.reset()
    rng = np.random.default_rng(0)
    while collector.total_clips < n_clips:
        wrapper.step(rng.integers(0, venv.action_space.n, venv.num_envs))
    wrapper.close()
    clips = collector.clips()
    with tempfile.TemporaryDirectory() as d, PreferenceStore(d) as store:
        ids = store.add_clips(clips)
        disk = [store._clip_path(i).stat().st_size for i in ids]
    return {"clips": n_clips, "memory_bytes": int(collector.clip_nbytes), "disk_bytes_mean": int(np.mean(disk)),
            "disk_bytes_max": int(np.max(disk)), "compression": round(collector.clip_nbytes / np.mean(disk), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["pong", "pong-500k"])
    ap.add_argument("--labels", type=int, default=5500)
    ap.add_argument("--true-rss-mb", type=float, required=True, help="peak RSS of the true-reward arm (MB)")
    ap.add_argument("--clips", type=int, default=48)
    ap.add_argument("--refit-step", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.refit_step:
        refit_step_rss(args.refit_step)
        return
    from prefrl.control.tasks import load_task

    figs = clip_figures(args.clips)
    print(json.dumps(figs))
    mb = 2**20
    rows = []
    for preset in args.presets:
        out = subprocess.run([sys.executable, __file__, "--true-rss-mb", "0", "--refit-step", preset],
                             capture_output=True, text=True, check=True, cwd=ROOT)
        step = json.loads(out.stdout.strip().splitlines()[-1])
        p = load_task(preset).prefs
        pool = min(p.pool_size, (p.pool_mib or 1e9) * mb // figs["memory_bytes"]) * figs["memory_bytes"] / mb
        cache = (p.clip_cache_mib or 0)
        rollout = 128 * 8 * 4 * 84 * 84 / mb  # one deferred rollout's observations (n_steps x n_envs)
        total = args.true_rss_mb + pool + cache + step["refit_step_mb"] + rollout
        clips_judged = 2 * args.labels  # at most two new clips per label
        rows.append({"preset": preset, "labels": args.labels, "pool_mb": round(pool), "cache_mb": cache,
                     "refit_step_mb": step["refit_step_mb"], "rollout_mb": round(rollout),
                     "peak_rss_estimate_mb": round(total), "ratio_to_true": round(total / args.true_rss_mb, 2),
                     "disk_mb": round(clips_judged * figs["disk_bytes_mean"] / mb),
                     "unbounded_cache_mb": round(clips_judged * figs["memory_bytes"] / mb)})
        print(json.dumps(rows[-1]))
    print("| preset | labels | true arm MB | + pool | + clip cache | + refit step | + rollout | peak RSS estimate MB | x true | clips on disk MB | (every judged clip in RAM: MB) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['labels']} | {args.true_rss_mb:.0f} | {r['pool_mb']} | {r['cache_mb']:.0f} | "
              f"{r['refit_step_mb']:.0f} | {r['rollout_mb']} | {r['peak_rss_estimate_mb']} | {r['ratio_to_true']} | "
              f"{r['disk_mb']} | {r['unbounded_cache_mb']} |")


if __name__ == "__main__":
    main()
