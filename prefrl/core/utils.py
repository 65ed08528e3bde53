"""Small shared helpers: thread count, the allocator, seeding, input specs."""

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


MALLOC_MMAP_THRESHOLD = 32 << 20
"""Bytes: blocks this large or larger come from mmap (glibc's largest setting; its default slides from 128 KB)."""
MALLOC_TRIM_THRESHOLD = 128 << 20
"""Bytes of free memory the heap keeps at its top before giving any back to the kernel. 128 MiB keeps
a refit's minibatch buffers (as few page faults as 256 MiB on ``pong-quick``) and holds the early peak
RSS of ``pong-500k``'s learned arm within ~20 MB of glibc's defaults; 256 MiB added ~90 MB there."""

_malloc_tuned: bool | None = None


def tune_malloc() -> bool:
    """Have glibc's malloc keep freed memory for reuse instead of handing it back; True when set.

    With glibc's defaults a block freed above the (sliding) mmap threshold goes back to the
    kernel, and so does free memory at the heap's top above the trim threshold. A reward-model
    refit allocates and frees tens of MB for every minibatch, so each step page-faulted its
    buffers in again: on ``pong-quick``'s CNN, 37 of 249 µs per training frame were system time
    (197 µs in all with this setting), and the whole learned-reward run of
    ``scripts/bench_atari.py --overhead`` took 118 s instead of 148 s (the true-reward arm 77 s
    instead of 90 s). Peak RSS rose by 3-8% in those runs (trim threshold 256 MiB; now 128 MiB, below).

    Sets ``M_MMAP_THRESHOLD`` to ``MALLOC_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` to
    ``MALLOC_TRIM_THRESHOLD`` once per process. Nothing is changed where the C library is not
    glibc, when ``PREFRL_MALLOC=default``, or when ``MALLOC_MMAP_THRESHOLD_`` or
    ``MALLOC_TRIM_THRESHOLD_`` is set in the environment (glibc reads those itself).
    """
    global _malloc_tuned
    if _malloc_tuned is not None:
        return _malloc_tuned
    _malloc_tuned = False
    if os.environ.get("PREFRL_MALLOC", "") == "default" or any(
            k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
        ok = libc.mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD) == 1
        ok = libc.mallopt(m_trim_threshold, MALLOC_TRIM_THRESHOLD) == 1 and ok
    except (OSError, AttributeError):
        return False
    _malloc_tuned = ok
    return ok


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
