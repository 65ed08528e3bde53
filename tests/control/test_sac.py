"""PEBBLE on the labeling engine: SAC's relabeled replay buffer, the state-entropy reward, run
directory, eval, resume, and the true-reward baseline (tiny runs on Pendulum, whose true reward
is a function of the observation and action, so the kept true reward can be checked exactly)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from prefrl.cli import main
from prefrl.control.config import RunConfig
from prefrl.control.agent import SAC_AGENT_FORMAT
from prefrl.control.sac import (
    REPLAY_FILE,
    PebbleReplayBuffer,
    StateEntropyReward,
    knn_state_entropy,
)
from prefrl.control.tasks import load_task
from prefrl.core.ensemble import RewardEnsemble
from prefrl.core.rundir import RunDir
from prefrl.core.store import PreferenceStore
from prefrl.core.types import PrefrlError

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

TINY_SAC = """
name = "tiny-sac"
steps = 1000
algo = "sac"
[env]
id = "Pendulum-v1"
type = "classic"
episode = "fixed"
normalize_obs = false
normalize_reward = false
render_size = 64
[sac]
learning_starts = 100
unsupervised_steps = 300
feedback_every = 200
batch_size = 32
buffer_size = 5000
net_arch = [16, 16]
entropy_subsample = 300
log_every = 100
reset_updates = 10
[prefs]
labels = 30
clip_length = 10
pool_size = 100
query = "entropy"
reward_epochs = 2
initial_epochs = 10
[reward_model]
hidden = [16, 16]
"""


@pytest.fixture
def tiny_sac(tmp_path: Path) -> Path:
    p = tmp_path / "tiny-sac.toml"
    p.write_text(TINY_SAC)
    return p


def _pendulum_reward(obs: np.ndarray, acts: np.ndarray) -> np.ndarray:
    """Pendulum-v1's reward from the observation the action was taken in and the action."""
    th = np.arctan2(obs[:, 1], obs[:, 0])
    u = np.clip(acts[:, 0], -2.0, 2.0)
    return -(th**2 + 0.1 * obs[:, 2] ** 2 + 0.001 * u**2)


def _buffer(n: int, obs_dim: int = 3, seed: int = 0) -> PebbleReplayBuffer:
    obs_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    buf = PebbleReplayBuffer(64, obs_space, gym.spaces.Box(-2.0, 2.0, (1,), np.float32), device="cpu")
    rng = np.random.default_rng(seed)
    for i in range(n):
        o = rng.normal(size=(1, obs_dim)).astype(np.float32)
        buf.add(o, o + 1, rng.uniform(-1, 1, (1, 1)), np.array([7.0]), np.array([False]), [{"true_reward": float(i)}])
    return buf


# ---- units -------------------------------------------------------------------------------------
def test_knn_entropy_is_larger_for_spread_out_states():
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(200, 4, generator=g) * 3.0
    clustered = torch.randn(200, 4, generator=g) * 0.05
    h_spread = knn_state_entropy(spread, spread, k=6)  # the query is in the reference: 5th neighbour = 6th
    h_clustered = knn_state_entropy(clustered, clustered, k=6)
    assert h_spread.shape == (200,) and (h_clustered >= 0).all()
    assert h_spread.mean() > 5 * h_clustered.mean()
    # an isolated state scores higher than one inside a cluster
    ref = torch.cat([clustered, torch.tensor([[10.0, 10.0, 10.0, 10.0]])])
    h = knn_state_entropy(torch.stack([clustered[0], ref[-1]]), ref, k=6)
    assert h[1] > h[0]
    # matches the direct definition log(1 + ||s - s_kNN||)
    d = torch.cdist(spread[:5], spread).sort(dim=1).values[:, 5]
    torch.testing.assert_close(h_spread[:5], torch.log1p(d), rtol=1e-4, atol=1e-4)


def test_intrinsic_reward_replaces_sampled_rewards_and_is_normalised():
    buf = _buffer(50)
    assert (buf.sample(16).rewards == 7.0).all()
    buf.intrinsic = StateEntropyReward(k=5, subsample=20, rng=np.random.default_rng(0))  # 50 > 20: a subsample
    r = buf.sample(32).rewards
    assert r.shape == (32, 1) and (r > 0).all() and not (r == 7.0).any()
    assert buf.intrinsic.rms.count > 32  # the running std saw the batch
    buf.intrinsic = None
    assert (buf.sample(8).rewards == 7.0).all()


def test_relabel_replaces_every_reward_and_keeps_the_true_one():
    buf = _buffer(40)
    seen = []

    def fn(obs, acts):
        seen.append(len(obs))
        return (obs[:, 0] + 10 * acts[:, 0]).astype(np.float32)

    assert buf.relabel(fn, unscale=lambda a: 2.0 * a, chunk=16) == 40
    assert seen == [16, 16, 8]
    np.testing.assert_allclose(buf.rewards[:40, 0], buf.observations[:40, 0, 0] + 20 * buf.actions[:40, 0, 0], rtol=1e-5)
    assert (buf.rewards[40:] == 0).all()  # rows never filled stay untouched
    np.testing.assert_array_equal(buf.true_rewards[:40, 0], np.arange(40))


def test_replay_npz_round_trip(tmp_path: Path):
    buf = _buffer(30)
    buf.save_npz(tmp_path / "r.npz")
    other = _buffer(0)
    other.load_npz(tmp_path / "r.npz")
    assert other.pos == 30 and not other.full
    for name in ("observations", "actions", "rewards", "true_rewards"):
        np.testing.assert_array_equal(getattr(other, name), getattr(buf, name))
    with pytest.raises(PrefrlError, match="rows of shape"):
        _buffer(0, obs_dim=4).load_npz(tmp_path / "r.npz")


def test_sac_presets_and_config_checks(tiny_sac: Path):
    for name in ("half-cheetah-sac", "inverted-pendulum-sac"):
        t = load_task(name)
        assert t.algo == "sac" and t.sac.batch_size == 256 and t.sac.net_arch == [256, 256]
    ppo = load_task("half-cheetah")
    assert ppo.algo == "ppo" and ppo.sac.learning_starts == 10_000  # rl-zoo defaults under --algo sac
    with pytest.raises(PrefrlError, match="algo"):
        ppo.with_overrides({"algo": "td3"})
    with pytest.raises(PrefrlError, match=r"\[sac\].*ent_coef"):
        ppo.with_overrides({"sac": {"ent_coef": "sometimes"}})
    with pytest.raises(PrefrlError, match="pre-training steps"):
        RunConfig(task=load_task(str(tiny_sac)), run_dir="x", steps=400)


# ---- tiny runs -----------------------------------------------------------------------------------
def test_pebble_run_relabels_buffer_writes_run_dir_evals_and_resumes(tiny_sac: Path, tmp_path: Path):
    run = tmp_path / "run"
    s = main(["train", "--task", str(tiny_sac), "--run-dir", str(run), "--eval-episodes", "1", "--no-video",
              "--oracle", "synthetic", "--seed", "1", "--baseline"])
    rd = RunDir(run)
    for f in (rd.config, rd.agent, rd.reward_model, rd.progress, rd.summary, rd / REPLAY_FILE, rd.store, rd.curve):
        assert f.exists(), f
    assert s["algo"] == "sac" and s["timesteps"] == 1000 and s["labels"] == 30 and s["eval_return_mean"] is not None
    # --baseline: SAC on the true reward, same steps and seed, in RUN_DIR/baseline
    b = s["baseline"]
    assert b["algo"] == "sac" and b["reward"] == "true" and b["timesteps"] == 1000 and b["labels"] == 0
    assert b["eval_return_mean"] < 0 and s["eval_return_ratio"] is None  # Pendulum's returns are negative: no ratio
    assert not rd.baseline.store.exists()
    zb = np.load(rd.baseline.path / REPLAY_FILE)
    np.testing.assert_array_equal(zb["rewards"], zb["true_rewards"])
    np.testing.assert_allclose(zb["true_rewards"][:, 0],
                               _pendulum_reward(zb["observations"][:, 0], zb["actions"][:, 0] * 2.0), rtol=1e-4, atol=1e-4)

    # every stored reward is the saved model's prediction; the true reward is kept beside it
    z = np.load(run / REPLAY_FILE)
    obs, acts = z["observations"][:, 0], z["actions"][:, 0] * 2.0  # stored scaled to [-1, 1]; Pendulum acts in [-2, 2]
    assert len(obs) == 1000
    pred = RewardEnsemble.load(rd.reward_model).step_fn()(obs, acts)
    np.testing.assert_allclose(z["rewards"][:, 0], pred, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(z["true_rewards"][:, 0], _pendulum_reward(obs, acts), rtol=1e-4, atol=1e-4)
    assert np.std(pred) > 0

    # the first labels came at the end of pre-training (learning_starts + unsupervised_steps = 400)
    rows = [line.split(",") for line in rd.progress.read_text().splitlines()[1:]]
    labels = {int(r[0]): int(r[1]) for r in rows}
    assert labels[100] == labels[300] == 0 and labels[400] == 8 and labels[1000] == 30  # 25% of 30 up front
    # the reward-hacking monitor watches PEBBLE once pre-training ends (no reward model before)
    import csv
    with rd.progress.open() as f:
        mon = {int(r["timesteps"]): float(r["monitor_rank_corr"]) for r in csv.DictReader(f)}
    assert np.isnan(mon[100]) and np.isnan(mon[300])
    assert np.isfinite([mon[t] for t in range(500, 1001, 100)]).all(), mon
    assert s["monitor"]["updates"] == 7 and "monitor" not in s["baseline"]  # rows at 400..1000
    store = PreferenceStore(run)
    assert store.count_judgments() == 30
    store.close()

    ckpt = torch.load(rd.agent, map_location="cpu", weights_only=True)
    assert ckpt["format"] == SAC_AGENT_FORMAT and {"actor", "critic", "critic_target", "actor_optimizer",
                                                   "critic_optimizer", "log_ent_coef"} <= set(ckpt)
    assert json.loads(ckpt["pebble_json"])["pretrained"] is True

    ev = main(["eval", "--run-dir", str(run), "--episodes", "1", "--video"])
    assert Path(ev["video"]).stat().st_size > 1000

    # an interrupted run continues from its checkpoint with its buffer and labels
    rd.summary.unlink()
    s2 = main(["train", "--run-dir", str(run), "--resume", "--steps", "1200", "--eval-episodes", "0", "--no-video"])
    assert s2["timesteps"] == 1200 and s2["labels"] == 30
    z = np.load(run / REPLAY_FILE)
    assert len(z["rewards"]) == 1200
    pred = RewardEnsemble.load(rd.reward_model).step_fn()(z["observations"][:, 0], z["actions"][:, 0] * 2.0)
    np.testing.assert_allclose(z["rewards"][:, 0], pred, rtol=1e-5, atol=1e-5)
    with pytest.raises(PrefrlError, match="--algo"):
        main(["train", "--run-dir", str(run), "--resume", "--algo", "ppo"])
