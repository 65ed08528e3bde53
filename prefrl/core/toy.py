"""A toy task with a known reward, for tests, demos and the reward benchmark.

Clips are random walks in a d-dimensional box; the true per-step reward is a fixed
linear-plus-quadratic function of (obs, action), so a reward model can be checked
against the ground truth without running an environment.
"""

from __future__ import annotations

import numpy as np

from prefrl.core.oracles import make_oracle
from prefrl.core.query import random_pairs
from prefrl.core.types import Clips, Comparisons


def toy_reward(obs: np.ndarray, acts: np.ndarray) -> np.ndarray:
    """(..., d), (..., a) -> (...) true reward: move toward +1 on dim 0, small action cost."""
    return obs[..., 0] - 0.5 * np.abs(obs[..., 1]) - 0.1 * (acts**2).sum(-1)


def toy_clips(n: int, length: int = 10, obs_dim: int = 4, act_dim: int = 2, seed: int = 0, frames: bool = False) -> Clips:
    """n clips of a random walk whose drift differs per clip (so returns vary widely).

    ``frames``: add tiny (8 x 8) RGB frames, a dot at the walk's first two coordinates, so the
    clips can be stored for people to look at."""
    rng = np.random.default_rng(seed)
    acts = rng.normal(0, 1, (n, length, act_dim)).astype(np.float32)
    drift = rng.normal(0, 0.3, (n, 1, obs_dim))
    start = rng.normal(0, 1, (n, 1, obs_dim))
    steps = drift + 0.2 * rng.normal(0, 1, (n, length, obs_dim))
    obs = (start + np.cumsum(steps, axis=1)).astype(np.float32)
    rgb = None
    if frames:
        rgb = np.zeros((n, length, 8, 8, 3), np.uint8)
        xy = np.clip(((obs[..., :2] + 4) / 8 * 8).astype(int), 0, 7)
        ni, ti = np.meshgrid(np.arange(n), np.arange(length), indexing="ij")
        rgb[ni, ti, xy[..., 1], xy[..., 0]] = 255
    return Clips(obs=obs, acts=acts, true_rew=toy_reward(obs, acts).astype(np.float32), frames=rgb)


def toy_dataset(
    n_clips: int, n_comparisons: int, seed: int = 0, oracle: str = "synthetic", length: int = 10
) -> tuple[Clips, Comparisons]:
    """Clips plus oracle-labeled random pairs over them."""
    clips = toy_clips(n_clips, length=length, seed=seed)
    rng = np.random.default_rng(seed + 1)
    pairs = random_pairs(n_clips, n_comparisons, rng)
    labels = make_oracle(oracle, rng).label(clips[pairs[:, 0]], clips[pairs[:, 1]])
    return clips, Comparisons(pairs[:, 0], pairs[:, 1], labels)
