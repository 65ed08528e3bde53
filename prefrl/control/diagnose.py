"""How good is a run's reward model where it matters: on the final agent's own behaviour.

The validation split measures the reward model on the clips people (or the oracle) judged;
the agent, though, is trained on what the model says about its *current* behaviour. This
rolls out the saved agent (sampling its actions, as in training) on a fresh env seed, cuts
the stream into clips of the run's clip length, and compares the saved reward model's clip
returns with the true ones: pairwise accuracy over random pairs with different true returns,
and Spearman's rank correlation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import stats

from prefrl.control.config import clip_length, load_run_config
from prefrl.control.evaluate import open_agent
from prefrl.control.reward_wrapper import ClipCollector, LearnedRewardVecEnv
from prefrl.core.ensemble import RewardEnsemble
from prefrl.core.query import random_pairs
from prefrl.core.rundir import RunDir
from prefrl.core.types import PrefrlError


def play_clips(run_dir: str | Path, n: int, frames: bool = False, deterministic: bool = False,
               seed_offset: int = 30_000, termination_input: bool | None = None) -> tuple[ClipCollector, int]:
    """The run's saved agent plays on a fresh env seed until ``n`` clips (the task's clip length)
    are cut or ``50 * n`` clips' worth of steps have passed; returns the collector and that step limit.
    The clips hold what a reward model with ``termination_input`` reads (default: the run's own model's)."""
    task = load_run_config(run_dir).task
    flag = task.reward_model.termination_input if termination_input is None else termination_input
    collector = ClipCollector(1, clip_length(task), n, keep_frames=frames)  # one env
    _, env, model = open_agent(run_dir, seed_offset=seed_offset, render=frames,
                               wrap=lambda venv: LearnedRewardVecEnv(venv, None, collector, termination_input=flag))
    obs = env.reset()
    limit = 50 * n * collector.clip_length
    for _ in range(limit):
        if collector.total_clips >= n:
            break
        action, _ = model.predict(obs, deterministic=deterministic)
        obs, _, _, _ = env.step(action)
    env.close()
    return collector, limit


def reward_check(run_dir: str | Path, n_clips: int = 200, n_pairs: int = 2000, seed_offset: int = 30_000) -> dict:
    """Pairwise accuracy and rank correlation of the run's reward model on fresh on-policy clips.

    Returns:
        ``{"accuracy", "spearman", "clips", "pairs"}``.
    """
    rd = RunDir(run_dir)
    if not rd.reward_model.is_file():
        raise PrefrlError(f"{rd.path}: no {RunDir.REWARD_MODEL} (a true-reward run has no reward model to check)")
    ens = RewardEnsemble.load(rd.reward_model)
    collector, limit = play_clips(rd.path, n_clips, seed_offset=seed_offset, termination_input=ens.cfg.termination_input)
    if len(collector) < 2:
        raise PrefrlError(f"{rd.path}: the agent produced fewer than 2 clips in {limit} steps")
    clips = collector.clips()
    pred = ens.predict_clip_returns(clips.model_inputs(), normalised=False).mean(axis=1)
    true = clips.true_returns()
    pairs = random_pairs(len(clips), n_pairs, np.random.default_rng(seed_offset))
    d_true = true[pairs[:, 0]] - true[pairs[:, 1]]
    d_pred = pred[pairs[:, 0]] - pred[pairs[:, 1]]
    strict = d_true != 0
    acc = float(np.mean((d_true * d_pred > 0)[strict])) if strict.any() else float("nan")
    rho = float(stats.spearmanr(pred, true)[0]) if np.std(true) > 0 and np.std(pred) > 0 else float("nan")
    return {"accuracy": acc, "spearman": rho, "clips": len(clips), "pairs": int(strict.sum())}
