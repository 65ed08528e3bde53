"""The online preference loop as an SB3 callback (Christiano et al. 2017, section 2.2).

Between PPO rollouts (``_on_rollout_end``): ask for the labels the schedule says
are due (query selection over recent clips, labels from a scripted oracle or, for
``human``, enqueued for ``prefrl label``), retrain the reward ensemble when new
labels arrived, refresh its normalisation on recent clips, hand the new reward to
the env wrapper and log. ``_on_step`` does nothing, so the loop costs nothing per step.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats
from stable_baselines3.common.callbacks import BaseCallback

from prefrl.oracles import ScriptedOracle
from prefrl.preferences import PreferenceStore
from prefrl.reward.query import select_pairs
from prefrl.reward.trainer import RewardTrainer
from prefrl.rl.reward_wrapper import ClipCollector, LearnedRewardVecEnv
from prefrl.types import Clips


@dataclass(frozen=True)
class LabelSchedule:
    """How many labels should have been asked after ``t`` env steps.

    An initial batch (``initial_fraction`` of the budget, on random-policy clips),
    then a rate proportional to H / (t + H) (Christiano et al. 2017, MuJoCo: H = 2e6),
    scaled so the whole budget is spent by ``total_steps``.
    """

    budget: int
    total_steps: int
    initial_fraction: float = 0.25
    horizon: float = 2e6

    @property
    def initial(self) -> int:
        return int(round(self.budget * self.initial_fraction))

    def due(self, t: int) -> int:
        if self.total_steps <= 0:
            return self.budget
        frac = math.log1p(t / self.horizon) / math.log1p(self.total_steps / self.horizon)
        return min(self.budget, self.initial + int(round((self.budget - self.initial) * min(frac, 1.0))))


class ProgressWriter:
    """Appends one row per PPO update to progress.csv (header written once)."""

    FIELDS = [
        "timesteps", "labels", "true_return_mean", "learned_return_mean", "reward_val_accuracy",
        "reward_corr", "wall_s",
    ]

    def __init__(self, path: Path):
        self.path = path
        self._new = not path.exists() or path.stat().st_size == 0

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.FIELDS, extrasaction="ignore")
            if self._new:
                w.writeheader()
                self._new = False
            w.writerow(row)


def store_pair_clips(store: PreferenceStore, clips: Clips, pairs: np.ndarray, keep_frames: bool) -> np.ndarray:
    """Store the clips that ``pairs`` (indices into ``clips``) use; returns the pairs as store clip ids."""
    used = np.unique(pairs)
    ids = np.array(store.add_clips(clips[used], keep_frames=keep_frames))
    pos = np.full(int(used.max()) + 1, -1)
    pos[used] = np.arange(len(used))
    return np.stack([ids[pos[pairs[:, 0]]], ids[pos[pairs[:, 1]]]], axis=1)


def label_pairs(
    store: PreferenceStore, oracle: ScriptedOracle, clips: Clips, pairs: np.ndarray, keep_frames: bool
) -> np.ndarray:
    """Store the clips of ``pairs`` (indices into ``clips``), label them, store the judgments."""
    store_pairs = store_pair_clips(store, clips, pairs, keep_frames)
    labels = oracle.label(clips[pairs[:, 0]], clips[pairs[:, 1]])
    store.add_judgments(store_pairs, labels, source=oracle.name)
    return labels


def enqueue_pairs(store: PreferenceStore, clips: Clips, pairs: np.ndarray, scores: np.ndarray | None = None) -> None:
    """Store the clips of ``pairs`` with their frames and queue the pairs for human labelers."""
    store.add_queries(store_pair_clips(store, clips, pairs, keep_frames=True), scores)


class PreferenceCallback(BaseCallback):
    """Online preference collection and reward retraining between PPO rollouts.

    Args:
        wrapper: the learned-reward env wrapper (its collector supplies clips).
        trainer: reward trainer (holds the ensemble).
        store: preference store of the run.
        schedule: label schedule.
        oracle: scripted oracle, or None for human labels through the store's queue.
        query: query selection method.
        rng: randomness for query selection.
        progress: progress.csv writer.
        pool_factor: candidate pairs per query (disagreement).
        reward_epochs: epochs per retrain.
        retrain_fraction: retrain once new labels reach this fraction of those in the last fit.
        keep_frames: store rendered frames with labeled clips.
        checkpoint_fn: called with the callback every ``checkpoint_every`` rollouts and at the end.
        checkpoint_every: rollouts between checkpoints.
    """

    def __init__(
        self,
        wrapper: LearnedRewardVecEnv,
        trainer: RewardTrainer,
        store: PreferenceStore,
        schedule: LabelSchedule,
        oracle: ScriptedOracle | None,
        query: str,
        rng: np.random.Generator,
        progress: ProgressWriter,
        pool_factor: int = 10,
        reward_epochs: int = 5,
        retrain_fraction: float = 0.05,
        keep_frames: bool = False,
        checkpoint_fn=None,
        checkpoint_every: int = 10,
        t0: float | None = None,
        wall_offset: float = 0.0,
    ):
        super().__init__()
        self.wrapper = wrapper
        self.collector: ClipCollector = wrapper.collector  # type: ignore[assignment]
        self.trainer = trainer
        self.ensemble = trainer.ensemble
        self.store = store
        self.schedule = schedule
        self.oracle = oracle
        self.query = query
        self.rng = rng
        self.progress = progress
        self.pool_factor = pool_factor
        self.reward_epochs = reward_epochs
        self.retrain_fraction = retrain_fraction
        self.labels_at_fit = 0
        self.keep_frames = keep_frames
        self.checkpoint_fn = checkpoint_fn
        self.checkpoint_every = checkpoint_every
        self.t0 = t0 if t0 is not None else time.perf_counter()
        self.wall_offset = wall_offset
        self.last_judgment_id = max((j.id for j in store.judgments()), default=0)
        self.metrics: dict[str, float] = {}
        self.n_rollouts = 0

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        t = self.num_timesteps
        if len(self.collector) >= 2:
            if self.oracle is not None:
                self._ask_oracle(t)
            else:
                self._enqueue_for_humans(t)
        new = self.store.judgments(since_id=self.last_judgment_id)
        if new and len(new) >= max(1.0, self.retrain_fraction * self.labels_at_fit):
            self.last_judgment_id = new[-1].id
            self.retrain(self.reward_epochs)
        self._log(t)
        self.n_rollouts += 1
        if self.checkpoint_fn is not None and self.n_rollouts % self.checkpoint_every == 0:
            self.checkpoint_fn(self)

    def _ask_oracle(self, t: int) -> None:
        n = self.schedule.due(t) - self.store.count_judgments()
        if n <= 0:
            return
        pool = self.collector.clips()
        assert self.oracle is not None
        self.oracle.calibrate(float(np.mean(pool.true_returns())))
        pairs, _ = select_pairs(
            self.query, n, pool.model_inputs(), self.rng, self.ensemble, pool_factor=self.pool_factor
        )
        if len(pairs):
            label_pairs(self.store, self.oracle, pool, pairs, self.keep_frames)

    def _enqueue_for_humans(self, t: int) -> None:
        asked = self.store.count_judgments() + self.store.count_pending()
        n = min(self.schedule.due(t), self.schedule.budget) - asked
        if n <= 0:
            return
        pool = self.collector.clips()
        pairs, scores = select_pairs(
            self.query, n, pool.model_inputs(), self.rng, self.ensemble, pool_factor=self.pool_factor
        )
        if len(pairs):
            enqueue_pairs(self.store, pool, pairs, scores)

    def retrain(self, epochs: int) -> dict[str, float]:
        """Fit the ensemble on every judgment so far and hand the new reward to the env."""
        clips, comps, _ = self.store.training_data()
        self.labels_at_fit = len(comps)
        if clips is None or len(comps.labeled()) == 0:
            return {}
        m = self.trainer.fit(clips.model_inputs(), comps, epochs=epochs)
        ref = self.collector.clips() if len(self.collector) else clips
        self.ensemble.update_normalisation(ref.model_inputs())
        self.wrapper.set_reward_fn(self.ensemble.step_fn())
        self.metrics.update(m)
        return m

    def _log(self, t: int) -> None:
        ep_true = [ep["r"] for ep in self.model.ep_info_buffer] if self.model is not None else []
        true_mean = float(np.mean(ep_true)) if ep_true else float("nan")
        learned = self.wrapper.learned_episode_returns[-len(ep_true) or -100 :]
        learned_mean = float(np.mean(learned)) if learned else float("nan")
        corr = float("nan")
        if len(self.collector) >= 10:
            pool = self.collector.clips()
            pred = self.ensemble.predict_clip_returns(pool.model_inputs()).mean(axis=1)
            true = pool.true_returns()
            if np.std(pred) > 0 and np.std(true) > 0:
                corr = float(stats.pearsonr(pred, true)[0])
                self.logger.record("reward/pool/spearman", float(stats.spearmanr(pred, true)[0]))
        labels = self.store.count_judgments()
        wall = self.wall_offset + time.perf_counter() - self.t0
        self.logger.record("rl/true_return", true_mean)
        self.logger.record("rl/learned_return", learned_mean)
        self.logger.record("rl/labels", labels)
        self.logger.record("reward/pool/corr", corr)
        if self.oracle is not None:
            self.logger.record("oracle/skip_rate", self.oracle.skip_rate)
        for k, v in self.metrics.items():
            self.logger.record(k, v)
        self.progress.write({
            "timesteps": t,
            "labels": labels,
            "true_return_mean": true_mean,
            "learned_return_mean": learned_mean,
            "reward_val_accuracy": self.metrics.get("reward/val/accuracy", float("nan")),
            "reward_corr": corr,
            "wall_s": round(wall, 2),
        })


class TrueRewardLogger(BaseCallback):
    """Progress rows for the true-reward baseline arm (same file format, no labels)."""

    def __init__(self, progress: ProgressWriter, checkpoint_fn=None, checkpoint_every: int = 10,
                 t0: float | None = None, wall_offset: float = 0.0):
        super().__init__()
        self.progress = progress
        self.checkpoint_fn = checkpoint_fn
        self.checkpoint_every = checkpoint_every
        self.t0 = t0 if t0 is not None else time.perf_counter()
        self.wall_offset = wall_offset
        self.n_rollouts = 0

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        ep_true = [ep["r"] for ep in self.model.ep_info_buffer]
        true_mean = float(np.mean(ep_true)) if ep_true else float("nan")
        self.logger.record("rl/true_return", true_mean)
        self.progress.write({
            "timesteps": self.num_timesteps, "labels": 0, "true_return_mean": true_mean,
            "learned_return_mean": float("nan"), "reward_val_accuracy": float("nan"), "reward_corr": float("nan"),
            "wall_s": round(self.wall_offset + time.perf_counter() - self.t0, 2),
        })
        self.n_rollouts += 1
        if self.checkpoint_fn is not None and self.n_rollouts % self.checkpoint_every == 0:
            self.checkpoint_fn(self)
