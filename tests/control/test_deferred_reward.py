"""Learned rewards scored at the end of each PPO rollout (batched) give PPO exactly what per-step scoring gives."""

from __future__ import annotations

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from prefrl.control.callbacks import defer_rewards, settle_rewards
from prefrl.control.reward_wrapper import LearnedRewardVecEnv


def reward_fn(obs: np.ndarray, acts: np.ndarray) -> np.ndarray:
    return (2.0 * obs[:, 0] - 0.5 * obs[:, 2] + 0.1 * np.asarray(acts).reshape(-1)).astype(np.float32)


class Record(BaseCallback):
    def __init__(self, wrapper: LearnedRewardVecEnv, deferred: bool):
        super().__init__()
        self.wrapper, self.deferred, self.seen = wrapper, deferred, []

    def _on_training_start(self) -> None:
        if self.deferred:
            defer_rewards(self.model, self.wrapper)

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        if self.deferred:
            settle_rewards(self.model, self.wrapper, self.locals)
        buf = self.model.rollout_buffer
        self.seen.append((buf.rewards.copy(), buf.advantages.copy(), buf.returns.copy()))


def _run(deferred: bool):
    torch.manual_seed(0)
    venv = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    wrapper = LearnedRewardVecEnv(venv, reward_fn)
    model = PPO("MlpPolicy", wrapper, n_steps=64, batch_size=64, n_epochs=2, seed=0, device="cpu",
                policy_kwargs={"net_arch": [16]})
    cb = Record(wrapper, deferred)
    model.learn(3 * 128, callback=cb)
    assert wrapper.defer == deferred
    params = torch.cat([p.detach().flatten() for p in model.policy.parameters()])
    return cb.seen, wrapper.learned_episode_returns, params


def test_deferred_rewards_equal_per_step_rewards():
    per_step, eps_a, params_a = _run(deferred=False)
    deferred, eps_b, params_b = _run(deferred=True)
    assert len(per_step) == len(deferred) == 3
    assert np.abs(per_step[0][0]).sum() > 0  # the learned reward is not zero
    for (ra, aa, ta), (rb, ab, tb) in zip(per_step, deferred):
        np.testing.assert_allclose(rb, ra, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ab, aa, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(tb, ta, rtol=1e-4, atol=1e-5)
    assert len(eps_a) == len(eps_b) > 0
    np.testing.assert_allclose(eps_b, eps_a, rtol=1e-5)
    torch.testing.assert_close(params_b, params_a, rtol=1e-4, atol=1e-5)  # PPO learned the same policy


def test_an_off_policy_learner_never_defers_its_rewards():
    """SAC stores each step's reward in its replay buffer as it comes: a deferred 0 would stay there."""
    from stable_baselines3 import SAC

    venv = make_vec_env("Pendulum-v1", n_envs=1, seed=0)
    wrapper = LearnedRewardVecEnv(venv, reward_fn, defer=True)
    model = SAC("MlpPolicy", wrapper, learning_starts=10, buffer_size=100, seed=0, device="cpu",
                policy_kwargs={"net_arch": [8]})
    defer_rewards(model, wrapper)
    assert wrapper.defer is False
    model.learn(20)
    stored = model.replay_buffer.rewards[:20, 0]
    obs, acts = model.replay_buffer.observations[:20, 0], model.replay_buffer.actions[:20, 0]
    np.testing.assert_allclose(stored, reward_fn(obs, model.policy.unscale_action(acts)), rtol=1e-5, atol=1e-5)


class ScoredPool(BaseCallback):
    """Settles each rollout (as ``PreferenceCallback``) and checks the clip returns the settling left
    with the collector against scoring the pool afresh; a model change midway (``swap_at``)."""

    def __init__(self, wrapper: LearnedRewardVecEnv, ens, swap_at: int):
        super().__init__()
        self.wrapper, self.ens, self.swap_at = wrapper, ens, swap_at
        self.known_counts, self.rollouts = [], 0

    def _on_training_start(self) -> None:
        defer_rewards(self.model, self.wrapper)

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        settle_rewards(self.model, self.wrapper, self.locals)
        col = self.wrapper.collector
        known = col.scored_returns(self.ens.revision)
        pool, keys = col.clips(), col.keys()
        fresh = self.ens.predict_clip_returns(pool.model_inputs(), normalised=False)
        for k, ret in known.items():
            np.testing.assert_allclose(ret, fresh[keys.index(k)], rtol=1e-5, atol=1e-5)
        self.known_counts.append((len(known), len(keys)))
        if self.rollouts == self.swap_at:  # the rollout after the model change: only its own clips are known
            assert min(known) >= self.cut_before_swap
        self.rollouts += 1
        if self.rollouts == self.swap_at:  # a refit: new weights and normalisation, a new reward callable
            with torch.no_grad():
                for p in self.ens.parameters():
                    p.add_(0.3 * torch.randn_like(p))
            self.ens.update_normalisation(pool.model_inputs())
            self.wrapper.set_reward_fn(self.ens.step_fn())
            assert col.scored_returns(self.ens.revision) == {}  # nothing scored by the new model yet
            self.cut_before_swap = col.total_clips


def test_deferred_scoring_gives_the_pool_its_clip_returns():
    """The rollout's scoring keeps each step's member rewards with the collector: a clip all of whose
    steps one model scored has its member returns without being scored again, equal to scoring it;
    after a model change only clips scored wholly by the new model are known."""
    from conftest import TINY_NET

    import dataclasses

    from prefrl.control.reward_wrapper import ClipCollector
    from prefrl.core.ensemble import RewardEnsemble
    from prefrl.core.nets import InputSpec

    torch.manual_seed(0)
    ens = RewardEnsemble(InputSpec(obs_shape=(4,), act_shape=(), act_n=2), dataclasses.replace(TINY_NET, members=3))
    venv = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    collector = ClipCollector(2, clip_length=8, pool_size=40)
    wrapper = LearnedRewardVecEnv(venv, ens.step_fn(), collector)
    model = PPO("MlpPolicy", wrapper, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu",
                policy_kwargs={"net_arch": [16]})
    cb = ScoredPool(wrapper, ens, swap_at=2)
    model.learn(4 * 128, callback=cb)
    assert cb.rollouts == 4 and collector._log == []  # every logged step was given its rewards
    # scored step by step (not deferred): nothing is logged for later, so nothing piles up
    per_step = LearnedRewardVecEnv(make_vec_env("CartPole-v1", n_envs=2, seed=1), ens.step_fn(), ClipCollector(2, 8, 40))
    per_step.reset()
    for _ in range(50):
        per_step.step(np.zeros(2, dtype=np.int64))
    assert per_step.collector._log == [] and per_step.collector.total_clips > 0
    # a rollout of 2 x 64 steps cuts up to 16 clips of 8 (fewer where an episode ends); each is known
    # unless it spans a model change
    assert all(6 <= known <= pool for known, pool in cb.known_counts), cb.known_counts
