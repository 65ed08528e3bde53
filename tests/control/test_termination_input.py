"""The reward model's termination input: a 0/1 feature at the steps whose termination was hidden."""

from __future__ import annotations

import os

import numpy as np
import pytest

from prefrl.control.envs import make_vec_env
from prefrl.control.reward_wrapper import ClipCollector, LearnedRewardVecEnv, with_termination_flag
from prefrl.control.sac import PebbleReplayBuffer
from prefrl.control.tasks import EnvConfig, load_task
from prefrl.core.ensemble import RewardEnsemble
from prefrl.core.nets import FLAG_SCALE, InputSpec, RewardModelConfig
from prefrl.core.trainer import RewardTrainConfig, RewardTrainer
from prefrl.core.types import Clips, Comparisons, PrefrlError

os.environ.setdefault("MUJOCO_GL", "egl")


def test_the_reward_model_sees_a_flag_exactly_where_a_fall_was_hidden():
    cfg = EnvConfig(id="InvertedPendulum-v5", episode="fixed", termination_penalty=-10.0, max_episode_steps=200,
                    n_envs=2)
    venv = make_vec_env(cfg, seed=3)
    seen: list[np.ndarray] = []

    def reward_fn(obs, acts):
        seen.append(obs.copy())
        return np.zeros(len(obs), np.float32)

    collector = ClipCollector(2, 10, 100)
    wrapper = LearnedRewardVecEnv(venv, reward_fn, collector, termination_input=True)
    wrapper.reset()
    falls = []
    for _ in range(200):
        _, _, _, infos = wrapper.step(np.stack([venv.action_space.sample() for _ in range(2)]))
        falls.append([bool(i.get("terminated_hidden", False)) for i in infos])
    falls_arr = np.array(falls)
    flags = np.stack(seen)[..., -1]  # (steps, envs): the last feature
    assert falls_arr.sum() > 10  # a random policy falls often
    np.testing.assert_array_equal(flags, falls_arr.astype(np.float32))
    assert np.stack(seen).shape[-1] == venv.observation_space.shape[0] + 1
    clips = collector.clips()
    assert clips.obs.shape[-1] == venv.observation_space.shape[0] + 1
    assert set(np.unique(clips.obs[..., -1])) <= {0.0, 1.0} and clips.obs[..., -1].sum() > 0
    # the falls show in the true reward of the same steps
    fell = clips.obs[..., -1] == 1.0
    assert np.all(clips.true_rew[fell] < -5) and np.all(clips.true_rew[~fell] > 0)
    wrapper.close()


def test_the_flag_enters_at_a_fixed_scale_and_a_net_learns_that_falls_are_bad():
    """Clips of random states where the judge prefers fewer falls: the net ranks held-out pairs
    from the flag, which enters at its fixed scale (a flag never seen in the labeled clips stays
    bounded: FLAG_SCALE, not 1 / a std of ~0)."""
    rng = np.random.default_rng(0)
    n, t, d = 400, 20, 4
    obs = rng.normal(size=(n, t, d)).astype(np.float32)
    flags = (rng.random((n, t)) < 0.05).astype(np.float32)
    x = with_termination_flag(obs.reshape(n * t, d), flags.reshape(-1)).reshape(n, t, d + 1)
    clips = Clips(obs=x, acts=rng.normal(size=(n, t, 1)).astype(np.float32), true_rew=1.0 - 11.0 * flags)
    spec = InputSpec(obs_shape=(d + 1,), act_shape=(1,))
    ens = RewardEnsemble(spec, RewardModelConfig(hidden=(32, 32), members=2, termination_input=True))
    trainer = RewardTrainer(ens, RewardTrainConfig(epochs=60, validation="oob"), rng)
    ret = clips.true_returns()
    left, right = rng.integers(0, 300, 600), rng.integers(0, 300, 600)
    keep = ret[left] != ret[right]
    comps = Comparisons(left=left[keep], right=right[keep], label=(ret[left] > ret[right])[keep].astype(np.float32))
    trainer.fit(clips[np.arange(300)].model_inputs(), comps)
    for m in ens.members:
        assert m.in_mean[d].item() == 0.0  # the flag column: a fixed scale, not the data's statistics
        assert m.in_std[d].item() == pytest.approx(1.0 / FLAG_SCALE)
        assert m.in_std[:d].min().item() > 0.5  # the other features: standardised
    pred = ens.predict_clip_returns(clips[np.arange(300, 400)].model_inputs(), normalised=False).mean(axis=1)
    true = ret[300:]
    i, j = np.triu_indices(100, 1)
    differ = true[i] != true[j]
    acc = np.mean((pred[i] > pred[j])[differ] == (true[i] > true[j])[differ])
    assert acc > 0.9, acc
    one = ens.predict_step(np.concatenate([np.zeros((1, d)), [[1.0]]], axis=1).astype(np.float32),
                           np.zeros((1, 1), np.float32))
    zero = ens.predict_step(np.zeros((1, d + 1), np.float32), np.zeros((1, 1), np.float32))
    assert one[0] < zero[0]  # a fall costs reward


def test_replay_relabeling_scores_each_row_with_its_flag():
    import gymnasium as gym

    obs_space = gym.spaces.Box(-1, 1, (3,), np.float32)
    act_space = gym.spaces.Box(-1, 1, (1,), np.float32)
    buf = PebbleReplayBuffer(32, obs_space, act_space, device="cpu", n_envs=1)
    for k in range(10):
        info = {"true_reward": 1.0, "terminated_hidden": k in (3, 7)}
        buf.add(np.full((1, 3), k, np.float32), np.zeros((1, 3), np.float32), np.zeros((1, 1), np.float32),
                np.zeros(1), np.zeros(1), [info])
    buf.termination_input = True
    assert buf.relabel(lambda o, a: o[:, -1] * 10.0 + o[:, 0]) == 10
    expect = np.arange(10) + np.where(np.isin(np.arange(10), (3, 7)), 10.0, 0.0)
    np.testing.assert_allclose(buf.rewards[:10, 0], expect)


def test_a_termination_input_needs_hidden_terminations_and_an_mlp():
    task = load_task("inverted-pendulum")
    assert task.reward_model.termination_input  # the preset's choice (issue 13 ablation)
    with pytest.raises(PrefrlError, match="episode"):
        task.with_overrides({"env": {"episode": "terminate"}})
    with pytest.raises(PrefrlError, match="needs the `mlp` reward net"):
        RewardModelConfig(kind="cnn", termination_input=True)
