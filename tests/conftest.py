"""Shared fixtures: a seeded rng, single-threaded torch, tiny reward models.

Every test that takes ``reward_model`` runs twice: once with a single net (an
ensemble of one) and once with a 3-member ensemble, so both code paths stay covered.
"""

from __future__ import annotations

import dataclasses

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from prefrl.core.ensemble import RewardEnsemble
from prefrl.core.nets import InputSpec, RewardModelConfig
from prefrl.core.utils import set_torch_threads

REPO_ROOT = Path(__file__).resolve().parents[1]

# prefrl.core.toy.toy_clips defaults: obs_dim 4, act_dim 2.
TOY_SPEC = InputSpec(obs_shape=(4,), act_shape=(2,))
TINY_NET = RewardModelConfig(hidden=(32, 32))


@pytest.fixture(autouse=True, scope="session")
def _single_threaded_torch() -> None:
    """The machine is shared: torch uses one thread in every test."""
    set_torch_threads(1)


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    """Fixed torch seed per test, so network initialisation is reproducible."""
    torch.manual_seed(0)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(params=[1, 3], ids=["single", "ensemble"])
def n_members(request: pytest.FixtureRequest) -> int:
    return request.param


@pytest.fixture
def reward_model(n_members: int) -> RewardEnsemble:
    """A fresh tiny reward model on the toy task's inputs: 1 member (single) or 3 (ensemble)."""
    return RewardEnsemble(TOY_SPEC, dataclasses.replace(TINY_NET, members=n_members))


def subprocess_env() -> dict[str, str]:
    """Environment for child Python processes: this checkout importable, one torch thread."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PREFRL_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def popen_python(args: list[str], **kw) -> subprocess.Popen:
    """Start ``python ARGS`` with this interpreter (the project's venv), text pipes."""
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )
