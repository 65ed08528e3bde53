"""The labeling engine: one preference loop for every learner (Christiano et al. 2017, section 2.2).

A learner (SB3 PPO through a callback, an off-policy learner, online text RLHF) calls
``LabelingEngine.step(t, pool)`` between its updates with the env-step (or sample) count
and a pool of recent clips. The engine works out how many labels the schedule says are
due, selects queries over the pool, asks the oracle, stores every judgment the moment it
is made, refits the reward ensemble when enough new judgments arrived, and reports what
it did (``EngineReport``) for logs and progress. It knows nothing of environments, agents
or windows: the learner hands it clips and uses ``engine.ensemble`` as its reward.

The budget is never exceeded: what is asked is the schedule's count minus what the store
already holds (judged or still outstanding), so a resumed run continues mid-schedule from
its store, and late human judgments are picked up by the next ``step`` or by ``finish``.
Skips are stored (they are answers) but never trained on.
"""

from __future__ import annotations

import difflib
import math
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from prefrl.core.ensemble import RewardEnsemble
from prefrl.core.oracles import Oracle
from prefrl.core.query import SELECTORS, random_pairs, select_pairs
from prefrl.core.rundir import Meta
from prefrl.core.store import PreferenceStore, StoredClips
from prefrl.core.trainer import RewardTrainer
from prefrl.core.types import Clips, Comparisons, PrefrlError, TextItems

Items = Clips | TextItems
"""What the engine asks about: clips (control) or text items (a completion of a prompt)."""
TextEncoder = Callable[[list[str], list[str]], dict[str, np.ndarray]]
"""(prompts, completions) -> reward-model inputs with leading (N, 1) dims."""


@dataclass
class PrefsConfig:
    """Preference collection: clips, label budget and schedule, query selection, refits (preset ``[prefs]``)."""

    labels: int = 700
    """Total label budget (comparisons asked)."""
    clip_seconds: float | None = 1.5
    """Clip length in seconds of play (Christiano et al.: 1.5 s on MuJoCo); uses the env's dt."""
    clip_length: int | None = None
    """Clip length in steps (overrides clip_seconds)."""
    initial_fraction: float = 0.25
    """Share of the budget labeled on random-policy clips before training (Christiano: 25%)."""
    initial_labels: int | None = None
    """Labels on random-policy clips before training; overrides initial_fraction (Christiano, Atari: 500)."""
    rate_horizon: float = 2e6
    """Label rate decays as H / (T + H) with T env steps (Christiano, MuJoCo: H = 2e6)."""
    query: str = "disagreement"
    """Query selection: `disagreement` (variance of P(left) across members), `entropy` (entropy of
    the members' mean P(left), PEBBLE), `novelty` (the clips least like those already asked about,
    in the reward net's embedding; ``prefrl.core.query``) or `random`."""
    novelty_bank: int = 2048
    """`novelty` query: steps of asked clips (a uniform sample, 4 per clip) that novelty is measured
    against; their inputs are kept in memory (2048 Atari frame stacks: 58 MB)."""
    pool_size: int = 500
    """Recent clips kept as query candidates (Christiano: clips of recent trajectories)."""
    pool_mib: float | None = None
    """Memory cap of the clip pool in MiB: it keeps min(pool_size, cap / bytes per clip) clips (None: no cap)."""
    pool_factor: int = 10
    """Candidate pairs drawn per query for disagreement and entropy selection."""
    reward_epochs: int = 5
    """Reward-model epochs per refit during training (warm-started)."""
    retrain_fraction: float = 0.05
    """Refit once the new judgments reach this fraction of those in the last fit (at least 1 new one)."""
    initial_epochs: int = 40
    """Reward-model epochs on the initial labels."""
    keep_frames: bool = False
    """Render and keep RGB frames with clips (always on for the human oracle)."""
    refit_replay: float | None = None
    """A warm-started refit trains on the judgments new since the last fit and this many times as many
    earlier ones, drawn afresh at each refit (replay, as in continual learning); validation and the
    metrics still use all of them. None: every refit trains on all judgments. The initial fit always does."""
    max_train_labels: int | None = None
    """Refit on the newest this many labels only (Christiano et al., Atari: the last 3,000); None: all."""
    clip_cache_mib: float | None = 256.0
    """Byte cap (MiB) of the store's in-memory clip cache: least recently used clips are evicted
    and read again from their (compressed) files when a refit needs them; None: no cap."""

    def __post_init__(self) -> None:
        _check_int(self, "labels", 0)
        _check_int(self, "pool_size", 2)
        _check_int(self, "pool_factor", 1)
        _check_int(self, "novelty_bank", 1)
        _check_int(self, "reward_epochs", 1)
        _check_int(self, "initial_epochs", 1)
        if self.clip_length is not None:
            _check_int(self, "clip_length", 1)
        if self.initial_labels is not None:
            _check_int(self, "initial_labels", 0)
        if self.max_train_labels is not None:
            _check_int(self, "max_train_labels", 1)
        if self.refit_replay is not None:
            _check_number(self, "refit_replay", 0.0, None)
        if self.clip_cache_mib is not None:
            _check_number(self, "clip_cache_mib", 0.0, None)
        _check_number(self, "initial_fraction", 0.0, 1.0)
        _check_number(self, "retrain_fraction", 0.0, None)
        _check_number(self, "rate_horizon", 0.0, None, open_low=True)
        if self.clip_seconds is not None:
            _check_number(self, "clip_seconds", 0.0, None, open_low=True)
        if self.pool_mib is not None:
            _check_number(self, "pool_mib", 0.0, None, open_low=True)
        if self.query not in SELECTORS:
            close = difflib.get_close_matches(str(self.query), SELECTORS, n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            raise PrefrlError(f"[prefs] query must be one of {', '.join(SELECTORS)}, got {self.query!r}{hint}")
        if not isinstance(self.keep_frames, bool):
            raise PrefrlError(f"[prefs] keep_frames must be true or false, got {self.keep_frames!r}")

    @property
    def initial_share(self) -> float:
        """Share of the budget labeled up front: ``initial_labels / labels`` (at most 1) when set."""
        if self.initial_labels is None:
            return self.initial_fraction
        return min(1.0, self.initial_labels / self.labels) if self.labels else 0.0

    def schedule(self, total_steps: int) -> LabelSchedule:
        return LabelSchedule(self.labels, total_steps, self.initial_share, self.rate_horizon)


def _check_int(obj: object, name: str, low: int) -> None:
    v = getattr(obj, name)
    if isinstance(v, bool) or not isinstance(v, int):
        raise PrefrlError(f"[prefs] {name} must be an integer, got {v!r}")
    if v < low:
        raise PrefrlError(f"[prefs] {name} must be >= {low}, got {v}")


def _check_number(obj: object, name: str, low: float, high: float | None, open_low: bool = False) -> None:
    v = getattr(obj, name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
        raise PrefrlError(f"[prefs] {name} must be a number, got {v!r}")
    if (v <= low if open_low else v < low) or (high is not None and v > high):
        rng = f"({low}, " if open_low else f"[{low}, "
        rng += f"{high}]" if high is not None else "inf)"
        raise PrefrlError(f"[prefs] {name} must be in {rng}, got {v}")


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
        frac = math.log1p(max(t, 0) / self.horizon) / math.log1p(self.total_steps / self.horizon)
        return min(self.budget, self.initial + int(round((self.budget - self.initial) * min(frac, 1.0))))


@dataclass
class EngineReport:
    """What one ``step`` did."""

    timesteps: int
    asked: int = 0
    """Pairs asked in this step."""
    new_judgments: int = 0
    """Judgments that arrived since the previous step."""
    refit: dict[str, float] | None = None
    """The refit's metrics, when the reward model changed."""
    labels: int = 0
    """Judgments in the store now (skips included)."""
    outstanding: int = 0
    """Pairs asked and not answered yet (people)."""


def replay_mask(n: int, n_new: int, ratio: float, rng: np.random.Generator) -> np.ndarray | None:
    """(n,) bools: the newest ``n_new`` of ``n`` comparisons (oldest first) and ``ratio`` times as many
    of the others drawn at random (``[prefs] refit_replay``); None when that is all of them."""
    old = n - n_new
    if n_new <= 0 or math.ceil(ratio * n_new) >= old:
        return None
    mask = np.zeros(n, bool)
    mask[old:] = True
    mask[rng.choice(old, math.ceil(ratio * n_new), replace=False)] = True
    return mask


def sample_steps(inputs: dict[str, np.ndarray], per_clip: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``per_clip`` distinct random steps of each clip of ``inputs`` (leading (N, T)), as one-step clips
    (N * per_clip, 1, ...): what the novelty query's bank keeps of an asked clip."""
    n, t = next(iter(inputs.values())).shape[:2]
    k = min(per_clip, t)
    at = np.stack([rng.choice(t, k, replace=False) for _ in range(n)])  # (n, k)
    return {name: v[np.arange(n)[:, None], at].reshape(n * k, 1, *v.shape[2:]) for name, v in inputs.items()}


@dataclass
class LabelingEngine:
    """Schedule, query selection, oracle, store and refits of one run (see the module docstring).

    Args:
        store: the run's preference store (judgments are written there the moment they are made).
        oracle: who answers (``prefrl.core.oracles``), bound to ``store``.
        trainer: fits ``trainer.ensemble``, the reward model the learner uses.
        schedule: how many labels are due after t steps.
        cfg: query selection and refit cadence.
        rng: randomness of query selection.
        keep_frames: store rendered frames with asked clips (forced on when the oracle needs them).
        encode_texts: for a text learner, how the reward model reads stored (prompt, completion)
            items at a refit; its pools are then ``TextItems`` and its judgments compare text items.
    """

    store: PreferenceStore
    oracle: Oracle
    trainer: RewardTrainer
    schedule: LabelSchedule
    cfg: PrefsConfig = field(default_factory=PrefsConfig)
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    keep_frames: bool = False
    encode_texts: TextEncoder | None = None

    def __post_init__(self) -> None:
        self.keep_frames = self.keep_frames or self.oracle.needs_frames
        self.fit_judgment_id = 0
        """The newest judgment id the current reward model was fit on."""
        self.labels_at_fit = 0
        self.n_refits = 0
        self.metrics: dict[str, float] = {}
        self.new_scores: list[tuple[float, float]] = []
        """(strict new judgments, accuracy on them) of each refit that had any: the model scored on
        judgments it was not fit on yet (``reward/new_*``), in refit order."""
        self._returns: dict[Hashable, np.ndarray] = {}
        """Raw (M,) clip returns of pool clips under the current model, by the learner's clip key;
        emptied by every refit."""
        self._asked_returns: dict[int, np.ndarray] = {}
        """Raw (M,) returns of clips asked about, under the current model, by store id (the pool's
        cached ones, taken when they were stored): a refit's score on judgments it was not fit on
        reads them instead of scoring the clips again. Emptied by every refit."""
        self._embeddings: dict[Hashable, np.ndarray] = {}
        """(T, F) step embeddings of pool clips under the current model, by clip key (novelty query);
        emptied by every refit."""
        self._bank: dict[str, np.ndarray] | None = None
        """Novelty query: inputs (B, 1, ...) of a sample of asked clips' steps; None until first needed."""
        self._bank_emb: np.ndarray | None = None
        """(B, F) embeddings of ``_bank`` under the current model; None when stale (after a refit)."""
        self.store.set_cache_mib(self.cfg.clip_cache_mib)
        self.store.set_meta(Meta.LABEL_BUDGET.value, self.schedule.budget)

    @property
    def ensemble(self) -> RewardEnsemble:
        return self.trainer.ensemble

    @property
    def labels(self) -> int:
        return self.store.count_judgments()

    # ---- what is due -----------------------------------------------------------------------
    def asked(self) -> int:
        """Pairs asked so far: judged (skips included) or still outstanding."""
        return self.store.count_judgments() + self.oracle.outstanding()

    def due(self, t: int) -> int:
        """How many more pairs to ask after ``t`` steps (never past the budget)."""
        return max(0, min(self.schedule.due(t), self.schedule.budget) - self.asked())

    def initial_due(self) -> int:
        """How many of the up-front labels (random-policy clips) are still to ask."""
        return max(0, self.schedule.initial - self.asked())

    # ---- pool predictions ------------------------------------------------------------------
    def clip_returns(self, pool: Items, keys: Sequence[Hashable] | None = None, normalised: bool = False,
                     known: Mapping[Hashable, np.ndarray] | None = None) -> np.ndarray:
        """(N, M) clip returns of the current reward model on ``pool``: raw, or at the RL-time scale.

        With ``keys`` (one stable id per clip, e.g. the collector's serial numbers), each clip is
        scored once between refits: clips already scored are served from the cache, only new
        ones go through the model, and keys no longer in the pool are dropped. A refit empties
        the cache. ``known``: {key: (M,) raw returns} the caller already has from the current
        model (a learner's rollout scoring), taken instead of scoring those clips.
        """
        if keys is None:
            raw = self.ensemble.predict_clip_returns(pool.model_inputs(), normalised=False)
        else:
            keys = list(keys)
            if len(keys) != len(pool):
                raise PrefrlError(f"clip_returns: {len(keys)} keys for a pool of {len(pool)} clips")
            if known:
                self._returns.update((k, known[k]) for k in keys if k not in self._returns and k in known)
            missing = [i for i, k in enumerate(keys) if k not in self._returns]
            if missing:
                fresh = self.ensemble.predict_clip_returns(pool[np.array(missing)].model_inputs(), normalised=False)
                for i, r in zip(missing, fresh):
                    self._returns[keys[i]] = r
            self._returns = {k: self._returns[k] for k in keys}
            raw = np.stack([self._returns[k] for k in keys]) if keys else np.zeros((0, self.ensemble.n_members), np.float32)
        if not normalised:
            return raw
        length = int(next(iter(pool.model_inputs().values())).shape[1])
        return self.ensemble.normalise_clip_returns(raw, length)

    # ---- asking ----------------------------------------------------------------------------
    def ask(self, pool: Items, n: int, method: str | None = None, keys: Sequence[Hashable] | None = None,
            known: Mapping[Hashable, np.ndarray] | None = None) -> int:
        """Select ``n`` pairs over ``pool`` (by the configured query method), store their clips, ask the oracle.

        ``keys``: stable ids of the pool's clips, so their predictions are cached between refits;
        ``known``: as ``clip_returns``.
        """
        if n <= 0 or len(pool) < 2:
            return 0
        if pool.true_rew is not None:
            self.oracle.calibrate(pool.true_returns())
        method = method or self.cfg.query
        use_returns = keys is not None and method in ("disagreement", "entropy")
        returns = self.clip_returns(pool, keys, known=known) if use_returns else None
        embeddings = (self.pool_embeddings(pool, keys), self.bank_embeddings()) if method == "novelty" else None
        pairs, scores = select_pairs(method, n, pool.model_inputs(), self.rng, self.ensemble,
                                     pool_factor=self.cfg.pool_factor, returns=returns, embeddings=embeddings)
        return self._ask_pairs(pool, pairs, scores, keys)

    # ---- the novelty query's embeddings ----------------------------------------------------
    BANK_STEPS_PER_CLIP = 4

    def pool_embeddings(self, pool: Items, keys: Sequence[Hashable] | None = None) -> np.ndarray:
        """(N, T, F) step embeddings of ``pool`` under the current model, cached by ``keys`` between
        refits as ``clip_returns`` caches returns."""
        if isinstance(pool, TextItems):
            raise PrefrlError("query selection `novelty` works on clips, not text items")
        if keys is None:
            return self.ensemble.embed_steps(pool.model_inputs())
        keys = list(keys)
        missing = [i for i, k in enumerate(keys) if k not in self._embeddings]
        if missing:
            fresh = self.ensemble.embed_steps(pool[np.array(missing)].model_inputs())
            self._embeddings.update((keys[i], e) for i, e in zip(missing, fresh))
        self._embeddings = {k: self._embeddings[k] for k in keys}
        return np.stack([self._embeddings[k] for k in keys])

    def bank_embeddings(self) -> np.ndarray:
        """(B, F) embeddings of the sampled steps of asked clips, under the current model."""
        bank = self._novelty_bank()
        if not bank:
            return np.zeros((0, 0), np.float32)
        if self._bank_emb is None:
            self._bank_emb = self.ensemble.embed_steps(bank)[:, 0]
        return self._bank_emb

    def _novelty_bank(self) -> dict[str, np.ndarray]:
        """The bank of asked steps; at first use, sampled from the clips the store already holds (a
        resumed run measures novelty against what it asked before the crash)."""
        if self._bank is None:
            self._bank = {}
            judged = self.store.judgments()
            ids = sorted({j.left for j in judged} | {j.right for j in judged})
            if ids and self.encode_texts is None:
                take = self.rng.permutation(ids)[: max(1, self.cfg.novelty_bank // self.BANK_STEPS_PER_CLIP)]
                for s in range(0, len(take), self.ASK_CHUNK):
                    self._bank_add(self.store.load_clips(sorted(take[s : s + self.ASK_CHUNK].tolist())))
        return self._bank

    def _bank_add(self, clips: Clips) -> None:
        """Add ``BANK_STEPS_PER_CLIP`` random steps of each of ``clips`` to the bank, keeping a uniform
        sample of at most ``novelty_bank`` steps."""
        new = sample_steps(clips.model_inputs(), self.BANK_STEPS_PER_CLIP, self.rng)
        new_emb = self.ensemble.embed_steps(new)[:, 0] if self._bank_emb is not None else None
        bank = self._bank or {}
        self._bank = {name: np.concatenate([bank[name], v]) if bank else v for name, v in new.items()}
        if new_emb is not None:
            self._bank_emb = np.concatenate([self._bank_emb, new_emb]) if len(self._bank_emb) else new_emb
        size = len(next(iter(self._bank.values())))
        if size > self.cfg.novelty_bank:
            keep = np.sort(self.rng.choice(size, self.cfg.novelty_bank, replace=False))
            self._bank = {name: v[keep] for name, v in self._bank.items()}
            if self._bank_emb is not None:
                self._bank_emb = self._bank_emb[keep]

    def ask_initial(self, clips: Items) -> int:
        """The up-front labels: random pairs of (random-policy) ``clips``, topping up after a crash."""
        n = self.initial_due()
        if n <= 0 or len(clips) < 2:
            return 0
        if clips.true_rew is not None:
            self.oracle.calibrate(clips.true_returns())
        return self._ask_pairs(clips, random_pairs(len(clips), n, self.rng), None)

    ASK_CHUNK = 32
    """Clips stored, and pairs asked, per batch: each batch copies its clips out of the pool, so
    only this many are copied at once (32 Atari clips: 23 MB) however many labels are due."""

    def _ask_pairs(self, clips: Items, pairs: np.ndarray, scores: np.ndarray | None,
                   keys: Sequence[Hashable] | None = None) -> int:
        if len(pairs) == 0:
            return 0
        used = np.unique(pairs)
        c = self.ASK_CHUNK
        novelty = self.cfg.query == "novelty" and isinstance(clips, Clips)
        if novelty:
            self._novelty_bank()  # sampled from the store before these clips join it
        ids = []
        for s in range(0, len(used), c):
            part = clips[used[s : s + c]]
            ids.append(self._store_items(part))
            if novelty:
                self._bank_add(part)
        ids = np.concatenate(ids)
        if keys is not None:  # what the pool's cache holds of them, for the next refit's score on new judgments
            self._asked_returns.update((int(cid), self._returns[keys[u]]) for cid, u in zip(ids, used) if keys[u] in self._returns)
        pos = np.full(int(used.max()) + 1, -1)
        pos[used] = np.arange(len(used))
        store_pairs = np.stack([ids[pos[pairs[:, 0]]], ids[pos[pairs[:, 1]]]], axis=1)
        for s in range(0, len(pairs), c):
            p = pairs[s : s + c]
            self.oracle.ask(store_pairs[s : s + c], clips[p[:, 0]], clips[p[:, 1]],
                            None if scores is None else scores[s : s + c])
        return len(pairs)

    def _store_items(self, items: Items) -> list[int]:
        if isinstance(items, TextItems):
            if self.encode_texts is None:
                raise PrefrlError("text items need a text engine (LabelingEngine(..., encode_texts=...))")
            return self.store.add_texts(items.prompts, items.completions, items.scores)
        return self.store.add_clips(items, keep_frames=self.keep_frames)

    def training_data(self) -> tuple[Items | StoredClips | None, Comparisons]:
        """The judged items with the judgments over them (skips kept as NaN), from the store: every
        judgment, or the newest ``max_train_labels`` labels' worth. Clips come as ``StoredClips``,
        read through the store's capped cache as a refit indexes them."""
        if self.encode_texts is None:
            clips, comps, _ = self.store.training_data(max_labels=self.cfg.max_train_labels, lazy=True)
            return clips, comps
        texts, comps, _ = self.store.text_training_data()
        if not texts:
            return None, comps
        prompts, completions = [t[0] for t in texts], [t[1] for t in texts]
        return TextItems(prompts, completions, self.encode_texts(prompts, completions)), comps

    def wait_for_initial(self, timeout_s: float, on_wait: Callable[[int, int], None] | None = None,
                         poll_s: float = 0.5) -> None:
        """Block until the up-front labels are judged (people); scripted teachers return at once."""
        need = self.schedule.initial
        t0, last = time.monotonic(), 0.0
        while self.store.count_judgments() < need:
            if time.monotonic() - t0 > timeout_s:
                raise PrefrlError(f"waited {timeout_s:.0f} s for {need} initial labels, got {self.store.count_judgments()}")
            if on_wait is not None and time.monotonic() - last > 15:
                on_wait(self.store.count_judgments(), need)
                last = time.monotonic()
            time.sleep(poll_s)

    # ---- refits ----------------------------------------------------------------------------
    def new_judgments(self) -> int:
        """Judgments that arrived after the current model's fit."""
        return len(self.store.judgments(since_id=self.fit_judgment_id))

    def refit(self, epochs: int | None = None, ref: Items | None = None,
              ref_keys: Sequence[Hashable] | None = None) -> dict[str, float]:
        """Fit the ensemble on every judgment so far and renormalise its output on ``ref`` (recent clips).

        Returns the trainer's metrics ({} when there is nothing labeled yet). The pool predictions
        cached by ``clip_returns`` are dropped: they belong to the model before the fit. With
        ``ref_keys`` (``ref``'s clip ids, as ``clip_returns`` takes them), the new model's returns of
        ``ref``, scored for the normalisation, fill that cache.
        """
        js_last = self.store.last_judgment_id()  # read first: a judgment arriving meanwhile triggers another refit
        n_new = len(self.store.judgments(since_id=self.fit_judgment_id)) if self.n_refits else 0
        clips, comps = self.training_data()
        self.labels_at_fit = len(comps)
        self.fit_judgment_id = js_last
        if clips is None or len(comps.labeled()) == 0:
            return {}
        inputs = clips.model_inputs()
        before = self._score_new(inputs, comps, n_new, getattr(clips, "ids", None))
        self._returns, self._embeddings, self._bank_emb, self._asked_returns = {}, {}, None, {}
        m = self.trainer.fit(inputs, comps, epochs=epochs or self.cfg.reward_epochs,
                             train_mask=self._replay_mask(len(comps), n_new))
        m.update(before)
        if "reward/new_accuracy" in before:
            self.new_scores.append((before["reward/new_count"], before["reward/new_accuracy"]))
        use_ref = ref is not None and len(ref) > 0
        raw = self.ensemble.update_normalisation((ref if use_ref else clips).model_inputs())
        if use_ref and ref_keys is not None and len(ref_keys) == len(raw):
            self._returns = dict(zip(ref_keys, raw))
        self.store.set_meta(Meta.FIT_JUDGMENT_ID.value, js_last)
        self.n_refits += 1
        self.metrics.update(m)
        self.metrics["reward/refits"] = float(self.n_refits)
        return m

    def _replay_mask(self, n: int, n_new: int) -> np.ndarray | None:
        """Which of ``n`` comparisons a refit trains on (``replay_mask``); the initial fit: all."""
        if self.cfg.refit_replay is None or not self.n_refits:
            return None
        return replay_mask(n, n_new, self.cfg.refit_replay, self.trainer.rng)

    def _score_new(self, inputs: dict[str, np.ndarray], comps: Comparisons, n_new: int,
                   ids: np.ndarray | None = None) -> dict[str, float]:
        """The current model scored on the judgments it has not been fit on yet (held out by time).

        Comparisons are in judgment order, so the newest ``n_new`` are those after the last fit.
        Before the first refit there is no model to score. ``ids``: the store ids of ``inputs``' clips;
        when the returns of all the new judgments' clips were cached as they were asked, those are
        read instead of scoring the clips. Returns ``reward/new_accuracy``, ``reward/new_loss`` and
        ``reward/new_count`` (strict preferences scored), or {}.
        """
        if n_new <= 0:
            return {}
        new = comps[np.arange(len(comps) - min(n_new, len(comps)), len(comps))].labeled()
        if len(new) == 0:
            return {}
        known = self._asked_returns
        if ids is not None and all(int(ids[c]) in known for c in np.concatenate([new.left, new.right])):
            ev = self.trainer.pair_metrics(np.stack([known[int(ids[c])] for c in new.left]),
                                           np.stack([known[int(ids[c])] for c in new.right]), new)
        else:
            ev = self.trainer.evaluate(inputs, new)
        strict = int((new.label != 0.5).sum())
        out = {"reward/new_count": float(strict), "reward/new_loss": ev["loss"]}
        if strict:
            out["reward/new_accuracy"] = ev["accuracy"]
        return out

    def step(self, t: int, pool: Items | None, keys: Sequence[Hashable] | None = None,
             known: Mapping[Hashable, np.ndarray] | None = None) -> EngineReport:
        """Between learner updates: ask what is due over ``pool``, refit when enough new judgments arrived.

        ``keys``: stable ids of the pool's clips (see ``clip_returns``), or None to score the pool afresh;
        ``known``: raw returns of some of them by the current model (``clip_returns``).
        """
        report = EngineReport(timesteps=int(t))
        if pool is not None and len(pool) >= 2:
            report.asked = self.ask(pool, self.due(t), keys=keys, known=known)
        new = self.oracle.poll()
        report.new_judgments = len(new)
        pending = self.new_judgments()
        if pending and pending >= max(1.0, self.cfg.retrain_fraction * self.labels_at_fit):
            report.refit = self.refit(self.cfg.reward_epochs, ref=pool, ref_keys=keys)
        report.labels = self.store.count_judgments()
        report.outstanding = self.oracle.outstanding()
        return report

    def finish(self, ref: Items | None = None) -> dict[str, float] | None:
        """At the end of training: refit on judgments that arrived after the last refit (late human labels)."""
        self.oracle.poll()
        if self.new_judgments():
            return self.refit(self.cfg.reward_epochs, ref=ref)
        return None
