"""Building environments for a task: Gymnasium wrappers beneath SB3 vector envs.

Stack (bottom to top)::

    gymnasium.make(id)            # MuJoCo / classic control (Atari: prefrl.control.atari)
    FixedLengthWrapper            # `episode = "fixed"`: hide termination, penalise, reset in place
    TerminationAsTruncation       # `episode = "truncate"`: a termination ends the episode as a truncation
    FrameInfoWrapper              # optional: rendered RGB frame in info["frame"] (viewer, videos)
    Monitor                       # SB3: episode statistics of the TRUE reward
    DummyVecEnv                   # SB3 vector env
    LearnedRewardVecEnv           # prefrl.control.reward_wrapper: reward -> r_hat(o, a), true reward in info
    VecNormalize                  # SB3: observation (and reward) normalisation for the policy

Monitor sits beneath the learned-reward wrapper, so logged episode returns are
always true returns, never the learned reward.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import gymnasium as gym
import numpy as np

from prefrl.control.tasks import EnvConfig
from prefrl.core.types import PrefrlError


def ensure_headless_rendering() -> None:
    """MuJoCo renders offscreen with EGL on machines without a screen; set it when unset."""
    os.environ.setdefault("MUJOCO_GL", "egl")


class FixedLengthWrapper(gym.Wrapper):
    """Fixed-length episodes: a termination becomes a penalty and an in-place reset.

    Christiano et al. 2017 (appendix A.1) removed termination from the MuJoCo tasks
    because episode ends leak reward information: an agent can learn "staying alive
    is good" from episode lengths alone, without any preference. Here the agent sees
    no termination; the true reward gets ``penalty`` at that step (so the synthetic
    oracle and the logs see it), the env is reset, and play goes on until
    ``max_steps`` steps since the outer reset, when the episode is truncated.

    Note:
        The wrapper keeps its own step count because the inner reset restarts the
        inner ``TimeLimit``. ``info["terminated_hidden"]`` is True on the steps where
        a termination was hidden.
    """

    def __init__(self, env: gym.Env, penalty: float, max_steps: int):
        super().__init__(env)
        self.penalty = float(penalty)
        self.max_steps = int(max_steps)
        self._t = 0

    def reset(self, **kwargs):  # type: ignore[override]
        self._t = 0
        return self.env.reset(**kwargs)

    def step(self, action):  # type: ignore[override]
        obs, rew, terminated, truncated, info = self.env.step(action)
        self._t += 1
        if terminated:
            rew = float(rew) + self.penalty
            info = dict(info)
            info["terminated_hidden"] = True
            obs, _ = self.env.reset()
            terminated = False
            truncated = False
        if self._t >= self.max_steps:
            truncated = True
        elif truncated:  # the inner time limit is not ours: keep playing
            obs, _ = self.env.reset()
            truncated = False
        return obs, rew, terminated, truncated, info


class TerminationAsTruncation(gym.Wrapper):
    """A termination ends the episode as a truncation: the agent bootstraps through it.

    SB3's PPO treats a truncated episode end as a time limit: the value target at that
    step bootstraps from the value of the last observation, so the agent learns nothing
    from where episodes end (no "game over is bad" or "dying is good" signal, Christiano
    et al. 2017), while the env resets and Monitor logs one return per episode (a game,
    on Atari). ``info["terminated_hidden"]`` is True at such steps.
    """

    def step(self, action):  # type: ignore[override]
        obs, rew, terminated, truncated, info = self.env.step(action)
        if terminated:
            info = dict(info)
            info["terminated_hidden"] = True
            terminated, truncated = False, True
        return obs, rew, terminated, truncated, info


class FrameInfoWrapper(gym.Wrapper):
    """Put the rendered RGB frame of each step into ``info["frame"]`` (uint8, H x W x 3)."""

    def step(self, action):  # type: ignore[override]
        obs, rew, terminated, truncated, info = self.env.step(action)
        info = dict(info)
        info["frame"] = np.asarray(self.env.render(), dtype=np.uint8)
        return obs, rew, terminated, truncated, info


def make_env_fn(cfg: EnvConfig, seed: int, render: bool = False) -> Callable[[], gym.Env]:
    """A thunk building one wrapped env (SB3's vec env constructors take thunks)."""

    def thunk() -> gym.Env:
        from stable_baselines3.common.monitor import Monitor

        env = make_base_env(cfg, render)
        if cfg.episode == "fixed":
            limit = cfg.max_episode_steps or (env.spec.max_episode_steps if env.spec else None) or 1000
            env = FixedLengthWrapper(env, cfg.termination_penalty, limit)
        elif cfg.episode == "truncate":
            env = TerminationAsTruncation(env)
        if render:
            env = FrameInfoWrapper(env)
        env = Monitor(env)
        env.reset(seed=seed)
        env.action_space.seed(seed)
        return env

    return thunk


def make_base_env(cfg: EnvConfig, render: bool = False) -> gym.Env:
    """gymnasium.make with the preset's options; an unknown id gets the close matches."""
    ensure_headless_rendering()
    if cfg.type == "atari":
        from prefrl.control.atari import make_atari_env  # registered by the Atari part

        return make_atari_env(cfg, render)
    kwargs = dict(cfg.make_kwargs)
    if render:
        kwargs["render_mode"] = "rgb_array"
        if cfg.type == "mujoco":
            kwargs.setdefault("width", cfg.render_size)
            kwargs.setdefault("height", cfg.render_size)
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps
    try:
        return gym.make(cfg.id, **kwargs)
    except gym.error.Error as e:
        import difflib

        close = difflib.get_close_matches(cfg.id, list(gym.registry), n=3)
        hint = f"; did you mean {', '.join(f'`{c}`' for c in close)}?" if close else ""
        raise PrefrlError(f"cannot make env `{cfg.id}`: {e}{hint}") from e


def make_vec_env(cfg: EnvConfig, seed: int, render: bool = False):
    """``cfg.n_envs`` envs in an SB3 DummyVecEnv (small MLP envs gain nothing from subprocesses on 2 cores)."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    return DummyVecEnv([make_env_fn(cfg, seed + i, render) for i in range(cfg.n_envs)])


def env_dt(cfg: EnvConfig) -> float | None:
    """Seconds of play per agent step, when the env knows it."""
    env = make_base_env(cfg)
    try:
        dt = getattr(env.unwrapped, "dt", None)
        if dt is None and cfg.type == "atari":
            dt = cfg.atari.get("frame_skip", 4) / 60.0
        return None if dt is None else float(dt)
    finally:
        env.close()
