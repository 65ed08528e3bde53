"""SB3 callbacks: the labeling engine's adapter for PPO, progress rows, checkpoints, a named progress bar.

``ProgressCallback`` writes one ``progress.csv`` row and TensorBoard scalars per PPO
rollout and checkpoints every ``checkpoint_every`` rollouts (both arms).
``PreferenceCallback`` adds the preference loop: between rollouts it hands the engine the
env-step count and the clip pool (views of the collector's ring, with each clip's serial
number so the engine scores a clip once between refits, and the member returns of the clips
the deferred rollout scoring already scored with the current model, so those are not scored
again), and when the engine refit the reward model, gives the new reward to the env wrapper. ``_on_step`` does nothing, so the loop costs nothing per step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
from scipy import stats
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

from prefrl.control.reward_wrapper import ClipCollector, LearnedRewardVecEnv
from prefrl.core.engine import EngineReport, LabelingEngine
from prefrl.core.rundir import ProgressLog

PROGRESS_FIELDS = [
    "timesteps", "labels", "true_return_mean", "learned_return_mean", "reward_val_accuracy",
    "reward_corr", "wall_s",
]


class WallClock:
    """Seconds of training so far, across resumes (``offset``: the wall time saved in the checkpoint)."""

    def __init__(self, offset: float = 0.0):
        self.offset = offset
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return self.offset + time.perf_counter() - self.t0


class ProgressCallback(BaseCallback):
    """A progress row and TensorBoard scalars per rollout, a checkpoint every ``checkpoint_every`` rollouts.

    Args:
        progress: the run's progress log.
        clock: wall time of the run.
        checkpoint_fn: called with no arguments to write the checkpoint.
        checkpoint_every: rollouts between checkpoints.
        bar: a progress bar (``ProgressBar``) or None.
    """

    def __init__(self, progress: ProgressLog, clock: WallClock, checkpoint_fn: Callable[[], None] | None = None,
                 checkpoint_every: int = 10, bar: ProgressBar | None = None):
        super().__init__()
        self.progress = progress
        self.clock = clock
        self.checkpoint_fn = checkpoint_fn
        self.checkpoint_every = checkpoint_every
        self.bar = bar
        self.n_rollouts = 0

    def _on_step(self) -> bool:
        if self.bar is not None:
            self.bar.update(self.num_timesteps)
        return True

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def true_return(self) -> float:
        ep = [e["r"] for e in (self.model.ep_info_buffer or [])] if self.model is not None else []
        return float(np.mean(ep)) if ep else float("nan")

    def _on_rollout_end(self) -> None:
        row = self.row()
        for k, v in row.items():
            if k not in ("timesteps", "wall_s"):
                self.logger.record(_TB_NAMES.get(k, k), v)
        self.progress.write(row)
        self.n_rollouts += 1
        if self.checkpoint_fn is not None and self.n_rollouts % self.checkpoint_every == 0:
            self.checkpoint_fn()

    def row(self) -> dict:
        return {"timesteps": self.num_timesteps, "labels": 0, "true_return_mean": self.true_return(),
                "learned_return_mean": float("nan"), "reward_val_accuracy": float("nan"),
                "reward_corr": float("nan"), "wall_s": round(self.clock(), 2)}


_TB_NAMES = {"true_return_mean": "rl/true_return", "learned_return_mean": "rl/learned_return",
             "labels": "rl/labels", "reward_corr": "reward/pool/corr", "reward_val_accuracy": "reward/val/accuracy"}


class PreferenceCallback(ProgressCallback):
    """The labeling engine between PPO rollouts (Christiano et al. 2017, section 2.2).

    Args:
        engine: asks for labels, stores them, refits the reward model.
        wrapper: the learned-reward env wrapper (its collector supplies the clip pool).
        progress, clock, checkpoint_fn, checkpoint_every, bar: as ``ProgressCallback``.
    """

    pretrained = True
    """The reward model has been fit and drives the agent (PEBBLE: only once pre-training ends)."""

    def __init__(self, engine: LabelingEngine, wrapper: LearnedRewardVecEnv, progress: ProgressLog, clock: WallClock,
                 checkpoint_fn: Callable[[], None] | None = None, checkpoint_every: int = 10,
                 bar: ProgressBar | None = None):
        super().__init__(progress, clock, checkpoint_fn, checkpoint_every, bar)
        self.engine = engine
        self.wrapper = wrapper
        self.collector: ClipCollector = wrapper.collector  # type: ignore[assignment]
        self.report = EngineReport(timesteps=0)
        self._rollout_pool = None  # this rollout's view of the pool, shared by the engine and the progress row
        self._known: dict = {}  # this rollout's pool clips whose returns the rollout scoring gave (by serial)

    def pool(self, copy: bool = True):
        return self.collector.clips(copy=copy) if len(self.collector) >= 2 else None

    def _on_training_start(self) -> None:
        defer_rewards(self.model, self.wrapper)

    def _on_rollout_end(self) -> None:
        settle_rewards(self.model, self.wrapper, self.locals)
        # views of the collector's ring (no copy): the env does not step until this returns; the
        # engine copies the clips it stores, and predictions are cached by clip serial number; the
        # clips whose steps the deferred scoring just scored with this model are not scored again
        self._rollout_pool = self.pool(copy=False)
        self._known = self.collector.scored_returns(self.engine.ensemble.revision)
        try:
            self.report = self.engine.step(self.num_timesteps, self._rollout_pool, keys=self.collector.keys(),
                                           known=self._known)
            if self.report.refit is not None:
                self.wrapper.set_reward_fn(self.engine.ensemble.step_fn())
            if self.bar is not None:
                self.bar.postfix(labels=self.report.labels, refits=self.engine.n_refits,
                                 waiting=self.report.outstanding or None)
            super()._on_rollout_end()
        finally:
            self._rollout_pool, self._known = None, {}  # no second copy of the pool held between rollouts

    def row(self) -> dict:
        row = super().row()
        ep_true = self.model.ep_info_buffer or []
        learned = self.wrapper.learned_episode_returns[-len(ep_true) or -100:]
        row["labels"] = self.report.labels
        row["learned_return_mean"] = float(np.mean(learned)) if learned else float("nan")
        row["reward_val_accuracy"] = self.engine.metrics.get("reward/val/accuracy", float("nan"))
        row["reward_corr"] = self._pool_correlation()
        for k, v in self.engine.metrics.items():
            self.logger.record(k, v)
        skip_rate = getattr(self.engine.oracle, "skip_rate", None)
        if skip_rate is not None:
            self.logger.record("oracle/skip_rate", skip_rate)
        return row

    def _pool_correlation(self) -> float:
        """Pearson correlation of predicted and true clip returns over the pool (Spearman to TensorBoard)."""
        if len(self.collector) < 10:
            return float("nan")
        pool = self._rollout_pool if self._rollout_pool is not None else self.collector.clips(copy=False)
        pred = self.engine.clip_returns(pool, self.collector.keys(), normalised=True, known=self._known).mean(axis=1)
        true = pool.true_returns()
        if np.std(pred) == 0 or np.std(true) == 0:
            return float("nan")
        self.logger.record("reward/pool/spearman", float(stats.spearmanr(pred, true)[0]))
        return float(stats.pearsonr(pred, true)[0])


def defer_rewards(model, wrapper: LearnedRewardVecEnv) -> None:
    """Score PPO's rollouts at their end, in large batches (``LearnedRewardVecEnv.defer``): PPO reads
    rewards only once a rollout is over. Not when VecNormalize normalises rewards, which needs them per step,
    and never for an off-policy learner (SAC): its replay buffer stores each step's reward as it comes."""
    if not isinstance(model, OnPolicyAlgorithm):
        wrapper.defer = False
        return
    venv_norm = model.get_vec_normalize_env()
    wrapper.defer = venv_norm is None or not venv_norm.norm_reward


def settle_rewards(model, wrapper: LearnedRewardVecEnv, rollout_locals: dict) -> None:
    """At a rollout's end: add its deferred learned rewards to PPO's buffer and redo its advantages.

    The buffer holds 0 for each step (plus gamma V(terminal obs) where an episode was
    truncated); adding the rewards and recomputing returns and advantages from the same
    values gives what per-step rewards would have given. ``rollout_locals``: the callback's
    ``locals`` (``values`` of the last observation and the last ``dones``).
    """
    if not wrapper.defer:
        return
    rews = wrapper.settle()
    buf = model.rollout_buffer
    if rews.shape != buf.rewards.shape:
        raise RuntimeError(f"deferred rewards of shape {rews.shape} for a rollout buffer of {buf.rewards.shape}")
    buf.rewards += rews
    buf.compute_returns_and_advantage(last_values=rollout_locals["values"], dones=rollout_locals["dones"])


class ProgressBar:
    """A tqdm bar named after the arm, ending at the real step count, with labels and refits shown."""

    def __init__(self, name: str, total: int, initial: int = 0):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=initial, desc=name, unit="step", dynamic_ncols=True, mininterval=0.5)
        self.last = initial

    def update(self, n: int) -> None:
        if n > self.last:
            self.bar.update(n - self.last)
            self.last = n

    def postfix(self, **kw: object) -> None:
        self.bar.set_postfix({k: v for k, v in kw.items() if v is not None}, refresh=False)

    def close(self) -> None:
        self.bar.close()


def rollout_total(steps: int, n_steps: int, n_envs: int) -> int:
    """The step count PPO really reaches for ``steps``: whole rollouts of ``n_steps x n_envs``."""
    per = n_steps * n_envs
    return int(math.ceil(steps / per) * per)
