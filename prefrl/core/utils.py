"""Small shared helpers: thread count, seeding, input specs."""

from __future__ import annotations

import os
import random

import numpy as np

from prefrl.core.types import Clips


def set_torch_threads(n: int | None = None) -> int:
    """Set torch's intra-op thread count deliberately.

    Small MLPs (SB3 MLP policies, reward nets) gain nothing from more threads on a
    2-core machine and slow down badly when another process is busy (measured: 11 s
    vs 666 s for the same PPO run), so prefrl uses 1 thread unless ``PREFRL_THREADS``
    or ``n`` says otherwise.
    """
    import torch

    n = n if n is not None else int(os.environ.get("PREFRL_THREADS", "1"))
    torch.set_num_threads(max(1, n))
    return n


def seed_everything(seed: int) -> np.random.Generator:
    """Seed random, numpy and torch; return a Generator for components that take an rng."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def input_spec_from_clips(clips: Clips):
    """An InputSpec matching clip arrays: integer scalar actions are taken as discrete."""
    from prefrl.core.nets import InputSpec

    obs_shape = tuple(clips.obs.shape[2:])
    act_shape = tuple(clips.acts.shape[2:])
    act_n = None
    if np.issubdtype(clips.acts.dtype, np.integer) and act_shape == ():
        act_n = int(clips.acts.max()) + 1 if clips.acts.size else 1
    obs_dtype = "uint8" if clips.obs.dtype == np.uint8 else "float32"
    return InputSpec(obs_shape=obs_shape, act_shape=act_shape, act_n=act_n, obs_dtype=obs_dtype)
