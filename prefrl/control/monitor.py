"""The reward-hacking monitor in an SB3 run (the signals and thresholds are ``prefrl.core.monitor``'s).

``MonitorCallback`` sits after the ``PreferenceCallback`` in the run's ``CallbackList``. It
measures at the moment the preference callback writes its progress row (``progress_log``
wraps the run's ``ProgressLog``), when this rollout's engine step is done and its clip pool
is still held, so the monitor's columns land in the same ``progress.csv`` row:

- the newest clips of each rollout (at most ``clips_per_update``) are kept for ``window``
  rollouts and scored together by the current ensemble: ``rank_corr`` and ``divergence``
  against their true returns, and the ensemble's disagreement on the newest ones against its
  disagreement on labeled clips from the store (``ood_ratio``, the reference level
  recomputed after each refit);
- ``new_accuracy`` pools the engine's ``new_scores`` (each refit's accuracy on judgments it
  was not fit on yet) over its latest refits.

TensorBoard gets ``monitor/*``; an alarm prints one line per episode of alarm and, with
``on_alarm = "stop"``, ends training at the next step (``_on_step`` returns False); with
``"ask"`` it asks the engine (its public ``ask``) for extra pairs over the flagged clips,
brought forward from the rest of the label budget.
"""

from __future__ import annotations

import math

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from tqdm.auto import tqdm

from prefrl.control.callbacks import PreferenceCallback
from prefrl.core.monitor import (
    HackingMonitor,
    MonitorConfig,
    control_flags,
    disagreement_level,
    ood_ratio,
    pooled_accuracy,
    window_signals,
)
from prefrl.core.rundir import ProgressLog
from prefrl.core.store import PackedClips, StoredClips
from prefrl.core.types import Clips

SIGNALS = ("rank_corr", "divergence", "ood_ratio", "new_accuracy", "learned_trend", "true_trend")
MONITOR_FIELDS = [f"monitor_{k}" for k in SIGNALS] + ["monitor_alarm"]
"""The monitor's progress.csv columns."""
WINDOW_BYTES = 64 * 2**20
"""Memory the trend window's clips may take (large clips, e.g. Atari frames, keep fewer per rollout)."""
LABELED_SAMPLE = 128
"""Labeled clips read from the store for the reference disagreement level."""
LOAD_BYTES = 24 * 2**20
"""Observations of labeled clips read from the store at a time (32 Atari clips; all 128 small ones)."""


class MonitoredProgress:
    """A ``ProgressLog`` whose rows get the monitor's columns, measured as each row is written."""

    def __init__(self, log: ProgressLog, monitor: MonitorCallback):
        self.log = log
        self.monitor = monitor

    def write(self, row: dict) -> None:
        self.log.write({**row, **self.monitor.measure(int(row.get("timesteps", 0)))})

    def truncate(self, key: str, last: float) -> int:
        return self.log.truncate(key, last)


class MonitorCallback(BaseCallback):
    """Watches a learned-reward PPO run for reward hacking (see the module docstring).

    Args:
        cfg: thresholds and the reaction.
        pref: the run's preference callback (its engine, clip pool and latest report are read).
        seed: randomness of which newest clips are kept.
    """

    def __init__(self, cfg: MonitorConfig, pref: PreferenceCallback, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        self.pref = pref
        self.rng = np.random.default_rng(seed + 7_000)
        self.mon = HackingMonitor(cfg, control_flags(cfg), say=lambda msg: tqdm.write(msg), unit="env step")
        self.window: list[PackedClips] = []
        """The newest clips of the last ``window`` rollouts, held packed (a frame stack's distinct frames
        once: 3.6x less memory on Atari) and unpacked to be scored after a refit."""
        self._window_returns: list[np.ndarray | None] = []
        """Beside ``window``: (n, M) member clip returns of each entry under the model of refit
        ``_returns_refit`` (None: not scored yet), so a clip is scored once between refits."""
        self._returns_refit = -1
        self.seen_clips = pref.collector.total_clips
        self.labeled_level = float("nan")
        self.true_spread = 0.0  # the largest within-rollout std of true clip returns so far
        self._level_refit = -1  # engine.n_refits when labeled_level was measured (-1: never)
        self.stop_requested: int | None = None
        self.asked = 0

    def progress_log(self, log: ProgressLog) -> MonitoredProgress:
        """``log`` for the preference callback: its rows get the monitor's columns."""
        return MonitoredProgress(log, self)

    def _on_step(self) -> bool:
        return self.stop_requested is None

    # ---- measuring -------------------------------------------------------------------------
    def newest_clips(self) -> tuple[Clips, np.ndarray | None] | None:
        """This rollout's clips (a random subset of at most ``clips_per_update``) from the pool, and
        their (n, M) member returns under the current model at the RL-time scale (as
        ``predict_clip_returns`` scores the window's older clips), served by the engine's pool predictions
        (the pool was scored for this rollout's queries and row; None when the collector has no
        serial numbers)."""
        col = self.pref.collector
        pool = self.pref._rollout_pool  # this rollout's pool (views of the ring), held while the row is written
        last, self.seen_clips = self.seen_clips, col.total_clips
        if pool is None or col.total_clips <= last:
            return None
        idx = self._new_indices(col, len(pool), last)
        keep = min(self.cfg.clips_per_update, len(idx), self._per_update_cap(col.clip_nbytes))
        if keep < len(idx):
            idx = self.rng.choice(idx, keep, replace=False)
        idx = np.sort(idx)
        sub = pool[idx]  # fancy indexing copies out of the ring
        keys = getattr(col, "keys", None)
        returns = None
        if keys is not None:
            returns = self.pref.engine.clip_returns(pool, keys(), normalised=True, known=self.pref._known)[idx]
        # frames only when the flagged clips may be shown to people (`ask` with a viewer)
        keep_frames = self.cfg.on_alarm == "ask" and self.pref.engine.keep_frames
        return Clips(sub.obs, sub.acts, sub.true_rew, sub.frames if keep_frames else None), returns

    @staticmethod
    def _new_indices(col, n_pool: int, last: int) -> np.ndarray:
        """Pool positions of the clips cut after the first ``last`` clips of the run."""
        keys = getattr(col, "keys", None)
        if keys is not None:  # serial numbers of the pool's clips
            return np.flatnonzero(np.asarray(keys()) >= last)
        # a ring: the run's clip i sits at i % capacity, the newest just before total % capacity
        new = min(col.total_clips - last, n_pool)
        end = col.total_clips % col.capacity if col.total_clips > col.capacity else n_pool
        return (end - 1 - np.arange(new)) % n_pool

    def _per_update_cap(self, clip_nbytes: int | None) -> int:
        if not clip_nbytes:
            return self.cfg.clips_per_update
        return max(4, WINDOW_BYTES // (self.cfg.window * clip_nbytes))

    def measure(self, t: int) -> dict[str, float]:
        """The monitor's columns for this rollout's progress row (also TensorBoard; may warn, stop or ask)."""
        engine = self.pref.engine
        if not self.pref.pretrained:  # PEBBLE's pre-training: no reward model to watch yet
            self.seen_clips = self.pref.collector.total_clips
            return {f"monitor_{k}": float("nan") for k in SIGNALS} | {"monitor_alarm": 0}
        if engine.n_refits != self._level_refit:  # a refit since the last row (PEBBLE writes rows between refits)
            self.labeled_level = self._labeled_level()
            self._level_refit = engine.n_refits
        got = self.newest_clips()
        newest, newest_returns = (None, None) if got is None else got
        if newest is not None:
            self.window = (self.window + [PackedClips(newest)])[-self.cfg.window:]
            self._window_returns = (self._window_returns + [None])[-self.cfg.window:]
        values = {"rank_corr": float("nan"), "divergence": float("nan"), "ood_ratio": float("nan")}
        if self.window:
            members = self._window_member_returns(newest_returns)  # (n, M) each
            if all(c.true_rew is not None for c in self.window):
                true = [c.true_returns() for c in self.window]
                self.true_spread = max(self.true_spread, float(np.std(true[-1])))
                values.update(window_signals([m.mean(axis=1) for m in members], true, self.true_spread))
            if newest is not None:
                values["ood_ratio"] = ood_ratio(disagreement_level(members[-1]), self.labeled_level)
        values["new_accuracy"], _ = pooled_accuracy(engine.new_scores, self.cfg.min_new_judgments)
        step = self.mon.observe(t, values)
        for k in SIGNALS:
            v = values.get(k, float("nan"))
            if not math.isnan(v):
                self.logger.record(f"monitor/{k}", v)
        self.logger.record("monitor/alarm", float(step.alarm))
        if step.started:
            self._react(t)
        return {f"monitor_{k}": values.get(k, float("nan")) for k in SIGNALS} | {"monitor_alarm": int(step.alarm)}

    def _window_member_returns(self, newest: np.ndarray | None = None) -> list[np.ndarray]:
        """(n, M) member clip returns of each window entry under the current model; entries scored
        since the last refit are served from ``_window_returns`` (the same numbers: the model has
        not changed), so each clip goes through the model once between refits. ``newest``: the
        returns of the entry just added, when the engine had them."""
        engine = self.pref.engine
        if engine.n_refits != self._returns_refit:  # a new model: every entry is scored again
            self._window_returns, self._returns_refit = [None] * len(self.window), engine.n_refits
        if newest is not None and self._window_returns:
            self._window_returns[-1] = newest
        self._window_returns = [engine.ensemble.predict_clip_returns(c.clips().model_inputs()) if r is None else r
                                for c, r in zip(self.window, self._window_returns)]
        return self._window_returns  # type: ignore[return-value]

    def _labeled_level(self) -> float:
        """Median ensemble disagreement on (a sample of) the labeled clips in the store."""
        store = self.pref.engine.store
        ids = store.clip_ids()
        if len(ids) < 2 or self.pref.engine.ensemble.n_members < 2:
            return float("nan")
        if len(ids) > LABELED_SAMPLE:
            ids = sorted(self.rng.choice(ids, LABELED_SAMPLE, replace=False).tolist())
        clips = StoredClips(store, ids)  # read LOAD_BYTES of clips at a time (128 Atari clips are 90 MB)
        per_batch = max(1, LOAD_BYTES // max(1, clips.obs[0].nbytes))
        return disagreement_level(self.pref.engine.ensemble.predict_clip_returns(clips.model_inputs(), batch_size=per_batch))

    def _react(self, t: int) -> None:
        if self.cfg.on_alarm == "stop":
            self.stop_requested = t
            tqdm.write(f"prefrl monitor: stopping training at env step {t} (on_alarm = stop)")
        elif self.cfg.on_alarm == "ask":
            engine = self.pref.engine
            left = engine.schedule.budget - engine.asked()
            flagged = self.window[-1].clips() if self.window else None
            n = min(self.cfg.ask_labels, left)
            if flagged is None or len(flagged) < 2 or n <= 0:
                tqdm.write("prefrl monitor: no extra labels asked (the label budget is spent)" if n <= 0 else
                           "prefrl monitor: no extra labels asked (too few recent clips)")
                return
            got = engine.ask(flagged, n)
            self.asked += got
            tqdm.write(f"prefrl monitor: asked {got} extra pairs over the flagged clips "
                       f"({left - got} of the budget left)")

    def state(self) -> dict:
        """What a resume continues from (saved in agent.pt with each checkpoint): the alarm state and
        counts, the largest true-return spread seen and the extra labels asked. The window of clips
        is not kept: it refills over the next ``window`` rollouts."""
        return {"monitor": self.mon.state(), "true_spread": self.true_spread, "asked": self.asked}

    def load_state(self, d: dict) -> None:
        if d:
            self.mon.load_state(d.get("monitor", {}))
            self.true_spread = float(d.get("true_spread", 0.0))
            self.asked = int(d.get("asked", 0))

    def summary(self) -> dict:
        """The ``monitor`` block of summary.json."""
        out = self.mon.summary()
        if self.stop_requested is not None:
            out["stopped_at"] = self.stop_requested
        if self.cfg.on_alarm == "ask":
            out["extra_labels_asked"] = self.asked
        return out
