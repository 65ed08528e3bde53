"""Reward-model benchmark: held-out accuracy vs number of labels, and training throughput.

Two tasks, both labelled by the ``synthetic`` oracle (the higher true return wins):

- ``toy``: prefrl.core.toy clips (random walks, known linear-plus-quadratic reward), 10 steps.
- ``half-cheetah``: 30-step clips (1.5 s, as the half-cheetah preset) of HalfCheetah-v5 rollouts
  from a uniform random policy and from perturbed open-loop gaits (a sine per joint with random
  amplitude, frequency and phase plus Gaussian noise), so clip returns spread from about -30 to +20.

Accuracy: an ensemble is fit (prefrl's default reward model: 3 members of 64x64 MLPs, the
trainer's default config with early stopping) on N random pairs from a pool of training
clips, then scored on 5000 random pairs of *fresh* clips (other seeds, other rollouts): the
fraction ordered like their true returns (pairs with equal true returns left out).

Throughput: a fit of a fixed number of epochs (no early stopping) on 1000 labels, ensemble
sizes 1 and 3, best of 3 repeats (the machine may be shared; the figures move with its load).
"member-comparisons/s" is the trainer's ``reward/comparisons_per_s`` metric
(training comparisons processed, summed over members, per second of the fit loop);
"comparisons/s (wall)" is (epochs x training comparisons) / wall-clock seconds of ``fit()``,
i.e. how fast the whole ensemble gets through the data, validation included.

Usage::

    .venv/bin/python scripts/bench_reward.py                 # both tasks, 3 seeds (~1 min on 1 CPU thread)
    .venv/bin/python scripts/bench_reward.py --tasks toy --seeds 0

Writes bench_out/bench_reward.md (the table printed) and bench_out/bench_reward.json (raw numbers).
"""

from __future__ import annotations

import dataclasses

import contextlib
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from prefrl.core.oracles import make_oracle
from prefrl.core.ensemble import RewardEnsemble
from prefrl.core.nets import RewardModelConfig
from prefrl.core.query import random_pairs
from prefrl.core.trainer import RewardTrainConfig, RewardTrainer
from prefrl.core.toy import toy_clips
from prefrl.core.types import Clips, Comparisons
from prefrl.core.utils import input_spec_from_clips, set_torch_threads


@dataclass
class Args:
    tasks: tuple[str, ...] = ("toy", "half-cheetah")
    """Tasks to run: toy, half-cheetah."""
    labels: tuple[int, ...] = (100, 300, 1000)
    """Label budgets (random pairs labelled by the synthetic oracle)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds: each draws its own clips, pairs and initialisation."""
    members: int = 3
    """Ensemble size for the accuracy runs."""
    train_clips: int = 600
    """Clips in the training pool the pairs are drawn from."""
    test_clips: int = 400
    """Fresh clips for the held-out pairs."""
    test_pairs: int = 5000
    """Held-out pairs scored."""
    throughput_members: tuple[int, ...] = (1, 3)
    """Ensemble sizes for the throughput runs."""
    throughput_epochs: int = 10
    """Epochs of each throughput fit (no early stopping)."""
    repeats: int = 3
    """Throughput fits per ensemble size; the fastest is reported."""
    out: Path = Path("bench_out")
    """Output directory (gitignored)."""


# ---- clips -------------------------------------------------------------------------------------
def toy_pool(n: int, seed: int) -> Clips:
    return toy_clips(n, length=10, seed=seed)


def cheetah_pool(n: int, seed: int, clip_len: int = 30, episode_len: int = 300, scratch: Path = Path(".")) -> Clips:
    """n clips cut from HalfCheetah-v5 rollouts: half random policy, half perturbed gaits."""
    import gymnasium as gym

    with contextlib.chdir(scratch):  # mujoco writes MUJOCO_LOG.TXT (a deprecation warning) into the cwd
        env = gym.make("HalfCheetah-v5")
    rng = np.random.default_rng(seed)
    per_ep = episode_len // clip_len
    obs_l, act_l, rew_l = [], [], []
    dt = env.unwrapped.dt
    ep = 0
    while len(obs_l) < n:
        obs, _ = env.reset(seed=int(rng.integers(2**31)))
        gait = ep % 2 == 1
        amp, freq, phase = rng.uniform(0.2, 1.0, 6), rng.uniform(0.5, 3.0), rng.uniform(0, 2 * np.pi, 6)
        o_ep, a_ep, r_ep = [], [], []
        for t in range(per_ep * clip_len):
            if gait:
                a = np.clip(amp * np.sin(2 * np.pi * freq * t * dt + phase) + 0.3 * rng.normal(size=6), -1, 1)
            else:
                a = rng.uniform(-1, 1, 6)
            o_ep.append(obs)
            a_ep.append(a)
            obs, r, _, _, _ = env.step(a)
            r_ep.append(r)
        o = np.asarray(o_ep, np.float32).reshape(per_ep, clip_len, -1)  # (clips, T, 17)
        a = np.asarray(a_ep, np.float32).reshape(per_ep, clip_len, -1)  # (clips, T, 6)
        r = np.asarray(r_ep, np.float32).reshape(per_ep, clip_len)  # (clips, T)
        obs_l += list(o)
        act_l += list(a)
        rew_l += list(r)
        ep += 1
    env.close()
    return Clips(np.stack(obs_l[:n]), np.stack(act_l[:n]), np.stack(rew_l[:n]))


def make_pool(task: str, n: int, seed: int, scratch: Path) -> Clips:
    if task == "toy":
        return toy_pool(n, seed)
    if task == "half-cheetah":
        return cheetah_pool(n, seed, scratch=scratch)
    raise SystemExit(f"unknown task `{task}` (toy, half-cheetah)")


# ---- measurements ------------------------------------------------------------------------------
def label_random_pairs(clips: Clips, n: int, rng: np.random.Generator) -> Comparisons:
    pairs = random_pairs(len(clips), n, rng)
    labels = make_oracle("synthetic", rng).label(clips[pairs[:, 0]], clips[pairs[:, 1]])
    return Comparisons(pairs[:, 0], pairs[:, 1], labels)


def pair_accuracy(model: RewardEnsemble, clips: Clips, pairs: np.ndarray) -> float:
    true = clips.true_returns()
    pred = model.predict_clip_returns(clips.model_inputs()).mean(axis=1)  # (N,) ensemble mean
    dt = true[pairs[:, 0]] - true[pairs[:, 1]]
    dp = pred[pairs[:, 0]] - pred[pairs[:, 1]]
    strict = dt != 0
    return float((np.sign(dp) == np.sign(dt))[strict].mean())


def fit(clips: Clips, comps: Comparisons, members: int, seed: int, cfg: RewardTrainConfig) -> tuple[RewardEnsemble, dict, float]:
    torch.manual_seed(seed)
    model = RewardEnsemble(input_spec_from_clips(clips), dataclasses.replace(RewardModelConfig(), members=members))
    trainer = RewardTrainer(model, cfg, np.random.default_rng(seed))
    t0 = time.perf_counter()
    metrics = trainer.fit(clips.model_inputs(), comps)
    return model, metrics, time.perf_counter() - t0


def run(args: Args) -> dict:
    set_torch_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(args).items()}, "accuracy": [], "throughput": []}
    for task in args.tasks:
        for seed in args.seeds:
            t0 = time.perf_counter()
            train = make_pool(task, args.train_clips, seed, args.out)
            test = make_pool(task, args.test_clips, 10_000 + seed, args.out)
            collect_s = time.perf_counter() - t0
            test_pairs = random_pairs(len(test), args.test_pairs, np.random.default_rng(20_000 + seed))
            for n in args.labels:
                comps = label_random_pairs(train, n, np.random.default_rng(seed))
                model, metrics, wall = fit(train, comps, args.members, seed, RewardTrainConfig())
                acc = pair_accuracy(model, test, test_pairs)
                row = {"task": task, "seed": seed, "labels": n, "held_out_accuracy": acc,
                       "val_accuracy": metrics.get("reward/val/accuracy"), "fit_s": wall, "collect_s": collect_s}
                results["accuracy"].append(row)
                print(f"[acc] {task:12s} seed {seed} labels {n:5d}: held-out {acc:.3f}  val {row['val_accuracy']:.3f}  fit {wall:.1f}s", flush=True)
        # Throughput on the last seed's pool, 1000 labels (or the largest budget).
        n = max(args.labels)
        comps = label_random_pairs(train, n, np.random.default_rng(0))
        cfg = RewardTrainConfig(epochs=args.throughput_epochs, patience=args.throughput_epochs + 1)
        n_train = int(round(n * (1 - cfg.val_fraction)))
        for m in args.throughput_members:
            fit(train, comps[:50], m, 0, RewardTrainConfig(epochs=1))  # warm-up (allocator, first-call costs)
            # Best of `repeats`: the machine is shared, the fastest run is the least disturbed one.
            _, metrics, wall = min((fit(train, comps, m, 0, cfg) for _ in range(args.repeats)), key=lambda r: r[2])
            row = {"task": task, "members": m, "labels": n, "epochs": cfg.epochs, "fit_s": wall,
                   "member_comparisons_per_s": metrics["reward/comparisons_per_s"],
                   "comparisons_per_s_wall": cfg.epochs * n_train / wall}
            results["throughput"].append(row)
            print(f"[thr] {task:12s} members {m}: {row['member_comparisons_per_s']:.0f} member-comparisons/s, "
                  f"{row['comparisons_per_s_wall']:.0f} comparisons/s wall, fit {wall:.2f}s", flush=True)
    return results


def markdown(results: dict, command: str, wall_s: float) -> str:
    acc = results["accuracy"]
    load = results.get("loadavg_1min", [])
    lines = [f"Command: `{command}` ({wall_s / 60:.1f} min, torch {torch.__version__}, 1 CPU thread, "
             f"{platform.processor() or platform.machine()}, Python {platform.python_version()}; "
             f"machine load average {' -> '.join(f'{x:.1f}' for x in load)} over {os.cpu_count()} cores)", ""]
    tasks = list(dict.fromkeys(r["task"] for r in acc))
    budgets = sorted({r["labels"] for r in acc})
    seeds = sorted({r["seed"] for r in acc})
    lines += ["Held-out pair accuracy (fresh clips, ensemble of "
              f"{results['args']['members']}, mean ± sd over seeds {', '.join(map(str, seeds))}; fit seconds in brackets):", ""]
    lines += ["| task | " + " | ".join(f"{b} labels" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
    for task in tasks:
        cells = []
        for b in budgets:
            a = np.array([r["held_out_accuracy"] for r in acc if r["task"] == task and r["labels"] == b])
            s = np.array([r["fit_s"] for r in acc if r["task"] == task and r["labels"] == b])
            cells.append(f"{a.mean():.3f} ± {a.std():.3f} ({s.mean():.1f} s)")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    thr = results["throughput"]
    if thr:
        lines += ["", f"Training throughput ({thr[0]['labels']} labels, {thr[0]['epochs']} epochs, no early stopping, "
                  f"best of {results['args']['repeats']}):", "",
                  "| task | members | fit s | member-comparisons/s (trainer metric) | comparisons/s (wall) |",
                  "|---|---|---|---|---|"]
        for r in thr:
            lines.append(f"| {r['task']} | {r['members']} | {r['fit_s']:.2f} | {r['member_comparisons_per_s']:,.0f} | "
                         f"{r['comparisons_per_s_wall']:,.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = tyro.cli(Args)
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    results = run(args)
    wall = time.perf_counter() - t0
    results["loadavg_1min"] = [load0, os.getloadavg()[0]]  # other processes slow the throughput figures
    command = " ".join([".venv/bin/python", "scripts/bench_reward.py", *sys.argv[1:]])
    table = markdown(results, command, wall)
    (args.out / "bench_reward.md").write_text(table)
    (args.out / "bench_reward.json").write_text(json.dumps(results, indent=1))
    print()
    print(table)


if __name__ == "__main__":
    main()
