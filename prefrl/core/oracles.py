"""Oracles: label pairs of clips from their true reward.

``synthetic`` is the perfect labeller of Christiano et al. 2017: the clip with the
higher true return wins, equal returns give 0.5. The scripted irrational teachers
are those of B-Pref (Lee et al. 2021, "B-Pref: Benchmarking Preference-Based
Reinforcement Learning"), with B-Pref's defaults:

==============  =====================================================================
``stochastic``  Boltzmann: P(left) = sigmoid(beta * (R_left - R_right)), beta = 1; label sampled
``myopic``      step t of a T-step clip weighted gamma^(T-1-t), gamma = 0.9 (earlier steps count less)
``mistake``     the rational label flipped with probability eps = 0.1
``skip``        no label (NaN, a skip) when both returns lie in the bottom 0.1 of the recent returns' spread
``equal``       0.5 when |R_left - R_right| < 0.1 x the recent returns' spread
==============  =====================================================================

All of them are one ``ScriptedOracle`` with different knobs, applied in B-Pref's
order: skip and equal are decided on the undiscounted returns, then the (myopic,
stochastic) label is drawn, then mistakes flip it, then equal overrides.

Skip and equal thresholds
-------------------------
B-Pref (``reward_model.py``, ``get_label``) measures both thresholds from zero in units of
``avg``, the average true return of a segment (in ``train_PEBBLE.py``: the mean return of the
recent training episodes x segment length / episode length)::

    keep the pair  iff  max(R_left, R_right) > eps_skip x avg      (skipping only if eps_skip x avg > 0)
    equal          iff  |R_left - R_right|   < eps_equal x avg

Its zero is the worst possible return on the tasks it was built for (DMControl rewards lie in
[0, 1], Meta-world's are >= 0). prefrl estimates that floor from the same recent returns
R_1..R_n (``calibrate``; the labeling engine passes the true returns of the clip pool it asks
about) instead of assuming it is 0::

    floor  = min_i R_i
    spread = mean_i R_i - floor                               (B-Pref's avg when floor = 0)
    skip   iff  max(R_left, R_right) <= floor + eps_skip x spread
    equal  iff  |R_left - R_right|    <  eps_equal x spread   (or R_left == R_right)

so the thresholds mean the same on any reward scale and sign: adding a constant to every
reward changes no label of any teacher, and multiplying rewards by a positive number changes
no skip or equal decision (the Boltzmann label does depend on scale, through beta). An uncalibrated teacher
uses the same definition over the 2P returns of the pairs in each call.

* Where they coincide: whenever the recent returns' minimum is exactly 0 and their mean is
  > 0 (e.g. a pool that holds a zero-return clip), floor + eps x spread = eps x avg and the
  decisions are B-Pref's, boundary included: a pair whose larger return equals the skip
  threshold is skipped, as in B-Pref.
* Negative or mixed-sign rewards (Reacher: -distance - control cost): B-Pref's eps x avg is
  <= 0 there, so its skip teacher never skips and its equal teacher never says equal: both are
  the rational teacher. (prefrl used to take |avg|, which made the skip teacher skip every pair
  on Reacher, silently, and the equal teacher answer 0.5 far too often.) Here they skip the
  pairs whose clips are both among the worst recent ones and call equal the pairs closer than
  a tenth of the spread, as B-Pref's do on its tasks.
* Positive rewards with every recent return well above 0 (a competent agent): B-Pref's
  thresholds stay anchored at 0, so its skip teacher stops skipping and its equal margin grows
  relative to the differences between clips; here both keep scaling with the recent spread.
* All recent returns equal (spread 0): the skip threshold is that return, so pairs of clips
  at it are skipped (B-Pref, with avg = 0, turns skipping off), and only exact ties are equal.

Ties: exact ties of the undiscounted returns are labelled 0.5 by every teacher (the
``synthetic`` convention); B-Pref labels them like any pair (its rational label prefers the
first clip, its Boltzmann label flips a fair coin).

The labeling engine talks to every labeler through one protocol, ``Oracle``: it asks pairs
of stored clips (``ask``) and polls the store for the judgments that have come in
(``poll``). ``TeacherOracle`` answers at once with a scripted teacher; ``HumanOracle``
queues the pairs for people, who answer later through the viewer (``prefrl label``).

Labels follow prefrl's convention: P(left preferred), 1.0 left, 0.0 right, 0.5 equal,
NaN = skip (B-Pref codes right as 1 and equal as -1; we don't).
"""

from __future__ import annotations

import difflib
import time
from dataclasses import dataclass, replace

import numpy as np

from prefrl.core.store import Judgment, PreferenceStore
from prefrl.core.types import Clips, PrefrlError


@dataclass(frozen=True)
class OracleConfig:
    """Knobs of a scripted teacher (B-Pref names)."""

    beta: float = float("inf")
    """Rationality: inf = deterministic; finite = Boltzmann sampling with sigmoid(beta * dR)."""
    gamma: float = 1.0
    """Myopia: step t of a T-step clip is weighted gamma^(T-1-t)."""
    eps_mistake: float = 0.0
    """Probability of flipping the label."""
    eps_skip: float = 0.0
    """Skip when both returns are <= floor + eps_skip x spread of the recent returns (see the module doc)."""
    eps_equal: float = 0.0
    """Label 0.5 when returns differ by less than eps_equal x the spread of the recent returns."""

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise PrefrlError(f"`beta` must be > 0 (inf for a rational teacher), got {self.beta}")
        if not 0 < self.gamma <= 1:
            raise PrefrlError(f"`gamma` must be in (0, 1], got {self.gamma}")
        for name in ("eps_mistake", "eps_skip", "eps_equal"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise PrefrlError(f"`{name}` must be in [0, 1], got {v}")


ORACLE_PRESETS: dict[str, OracleConfig] = {
    "synthetic": OracleConfig(),
    "stochastic": OracleConfig(beta=1.0),
    "myopic": OracleConfig(gamma=0.9),
    "mistake": OracleConfig(eps_mistake=0.1),
    "skip": OracleConfig(eps_skip=0.1),
    "equal": OracleConfig(eps_equal=0.1),
}
ORACLE_NAMES = (*ORACLE_PRESETS, "human")


def return_floor_and_spread(returns: np.ndarray) -> tuple[float, float]:
    """(floor, spread) of clip returns: their minimum, and their mean's distance above it.

    The reference of the skip and equal thresholds (see the module doc): B-Pref's
    "average segment return" is the spread when the floor is 0.

    Example:
        >>> return_floor_and_spread(np.array([-5.0, 5.0, 15.0]))
        (-5.0, 10.0)
    """
    r = np.asarray(returns, np.float64)
    if r.ndim != 1 or len(r) == 0:
        raise PrefrlError(f"expected a non-empty 1-D array of clip returns, got shape {r.shape}")
    r = r[np.isfinite(r)]
    if len(r) == 0:
        raise PrefrlError("no finite clip return to set the skip/equal thresholds from")
    floor = float(r.min())
    return floor, float(r.mean()) - floor


ORACLE_ENTRY_POINT_GROUP = "prefrl.oracles"
"""Entry-point group of oracle kinds beyond the built-in ones (pyproject.toml); e.g. ``ai`` (prefrl.text.judge)."""


def plugin_oracles() -> dict[str, object]:
    """Oracle kinds registered by other packages: name -> entry point (loaded only when used).

    A plugin kind is named ``KIND`` or ``KIND:ARGUMENT`` (``ai:/path/to/model``); its entry point is a
    callable ``(argument or None, store, rng, since_id) -> Oracle``. The core never imports the
    package that defines it, as with the ``prefrl.reward_nets`` kinds.
    """
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ORACLE_ENTRY_POINT_GROUP) if ep.name not in ORACLE_NAMES}


def check_oracle_name(name: str) -> None:
    """Raise a PrefrlError for an oracle name that is neither built in nor a registered kind (close matches named)."""
    if name in ORACLE_NAMES:
        return
    plugins = plugin_oracles()
    if name.split(":", 1)[0] in plugins:
        return
    known = (*ORACLE_NAMES, *sorted(plugins))
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {', '.join(f'`{c}`' for c in close)}?" if close else ""
    raise PrefrlError(f"unknown oracle `{name}` (known: {', '.join(known)}){hint}")


class ScriptedOracle:
    """Labels pairs of clips from their true rewards.

    Args:
        cfg: the teacher's knobs.
        rng: randomness for stochastic labels and mistakes.
        name: recorded as the judgment's source.

    Example:
        >>> o = make_oracle("synthetic", np.random.default_rng(0))
        >>> left = Clips(np.zeros((2, 3, 1)), np.zeros((2, 3, 1)), true_rew=np.array([[1, 1, 1], [0, 0, 0]]))
        >>> right = Clips(np.zeros((2, 3, 1)), np.zeros((2, 3, 1)), true_rew=np.array([[0, 0, 0], [0, 0, 0]]))
        >>> o.label(left, right).tolist()
        [1.0, 0.5]
    """

    def __init__(self, cfg: OracleConfig, rng: np.random.Generator, name: str = "scripted"):
        self.cfg = cfg
        self.rng = rng
        self.name = name
        self.reference: tuple[float, float] | None = None
        """(floor, spread) of the recent clip returns; None: taken from each call's returns."""
        self.n_asked = 0
        self.n_skipped = 0

    def calibrate(self, returns: np.ndarray) -> None:
        """Set the skip/equal thresholds' reference from recent clips' (N,) true returns (module doc)."""
        if np.ndim(returns) == 0:
            raise PrefrlError("`calibrate` takes the recent clips' true returns (an array), not their mean")
        self.reference = return_floor_and_spread(returns)

    def label(self, left: Clips, right: Clips) -> np.ndarray:
        """(P,) float labels: P(left preferred), NaN for a skip."""
        return self.label_rewards(left.true_rew, right.true_rew)

    def label_rewards(self, rew_left: np.ndarray | None, rew_right: np.ndarray | None) -> np.ndarray:
        """Label from (P, T) true rewards of the left and right clips."""
        if rew_left is None or rew_right is None:
            raise PrefrlError(f"the `{self.name}` oracle needs clips with `true_rew`")
        rew_left = np.asarray(rew_left, np.float64)
        rew_right = np.asarray(rew_right, np.float64)
        cfg = self.cfg
        ret_l, ret_r = rew_left.sum(axis=1), rew_right.sum(axis=1)
        skip = np.zeros(len(ret_l), bool)
        equal = ret_l == ret_r  # exact ties: 0.5 for every teacher
        if (cfg.eps_skip > 0 or cfg.eps_equal > 0) and len(ret_l):
            floor, spread = self.reference or return_floor_and_spread(np.concatenate([ret_l, ret_r]))
            if cfg.eps_skip > 0:
                skip = np.maximum(ret_l, ret_r) <= floor + cfg.eps_skip * spread  # <=: B-Pref skips at the threshold
            if cfg.eps_equal > 0:
                equal |= np.abs(ret_l - ret_r) < cfg.eps_equal * spread
        t = rew_left.shape[1]
        w = cfg.gamma ** np.arange(t - 1, -1, -1)  # (T,) gamma^(T-1-t)
        diff = (rew_left * w).sum(axis=1) - (rew_right * w).sum(axis=1)
        if np.isinf(cfg.beta):
            labels = np.where(diff > 0, 1.0, np.where(diff < 0, 0.0, 0.5))
        else:
            p_left = 1.0 / (1.0 + np.exp(-np.clip(cfg.beta * diff, -50, 50)))
            labels = (self.rng.random(len(diff)) < p_left).astype(np.float64)
        if cfg.eps_mistake > 0:
            flip = self.rng.random(len(labels)) < cfg.eps_mistake
            labels[flip] = 1.0 - labels[flip]
        labels[equal] = 0.5
        labels[skip] = np.nan
        self.n_asked += len(labels)
        self.n_skipped += int(skip.sum())
        return labels.astype(np.float32)

    @property
    def skip_rate(self) -> float:
        return self.n_skipped / max(self.n_asked, 1)


def make_oracle(name: str, rng: np.random.Generator, **overrides: float) -> ScriptedOracle:
    """Build a named oracle (``synthetic``, ``stochastic``, ``myopic``, ``mistake``, ``skip``, ``equal``).

    ``overrides`` replace knobs of the preset, e.g. ``make_oracle("stochastic", rng, beta=10)``.
    ``human`` is not built here: human labels come through the preference store.
    """
    check_oracle_name(name)
    if name == "human":
        raise PrefrlError("the `human` oracle labels through `prefrl label`, not a scripted oracle")
    if name not in ORACLE_PRESETS:
        raise PrefrlError(f"`{name}` is not a scripted teacher (those are {', '.join(ORACLE_PRESETS)}); open it with `open_oracle`")
    cfg = replace(ORACLE_PRESETS[name], **overrides) if overrides else ORACLE_PRESETS[name]
    return ScriptedOracle(cfg, rng, name=name)


# ---- the protocol the labeling engine uses --------------------------------------------------------
class Oracle:
    """Who answers the engine's queries, bound to the run's preference store.

    ``ask`` hands over pairs of stored clips; the answers arrive in the store, now (a scripted
    teacher) or later (a person), and ``poll`` returns each new judgment exactly once. The
    engine never needs to know which kind it talks to.

    Args:
        store: the run's preference store.
        since_id: judgments up to this id count as already seen.
    """

    name = "oracle"
    needs_frames = False
    """The clips of asked pairs must be stored with their rendered frames (a person looks at them)."""

    def __init__(self, store: PreferenceStore, since_id: int = 0):
        self.store = store
        self.last_id = since_id

    def calibrate(self, returns: np.ndarray) -> None:
        """Recent clips' true returns (the scripted teachers' skip/equal thresholds); people ignore it."""

    def ask(self, pairs: np.ndarray, left: Clips, right: Clips, scores: np.ndarray | None = None) -> None:
        """Ask for judgments of (P, 2) pairs of store clip ids; ``left``/``right`` are their clips."""
        raise NotImplementedError

    def outstanding(self) -> int:
        """Pairs asked and not answered yet."""
        return 0

    def poll(self) -> list[Judgment]:
        """Judgments made since the last poll, oldest first (never blocks)."""
        new = self.store.judgments(since_id=self.last_id)
        if new:
            self.last_id = new[-1].id
        return new

    def wait(self, n: int, timeout_s: float, poll_s: float = 0.1) -> list[Judgment]:
        """Poll until ``n`` new judgments arrived or ``timeout_s`` passed (scripts; the RL loop never blocks)."""
        got: list[Judgment] = []
        end = time.monotonic() + timeout_s
        while len(got) < n and time.monotonic() < end:
            got += self.poll()
            if len(got) < n:
                time.sleep(poll_s)
        return got


class TeacherOracle(Oracle):
    """A scripted teacher (``ScriptedOracle``) answering in ``ask``: its judgments are stored at once."""

    def __init__(self, store: PreferenceStore, teacher: ScriptedOracle, since_id: int = 0):
        super().__init__(store, since_id)
        self.teacher = teacher
        self.name = teacher.name

    def calibrate(self, returns: np.ndarray) -> None:
        if len(returns):
            self.teacher.calibrate(returns)

    def ask(self, pairs: np.ndarray, left: Clips, right: Clips, scores: np.ndarray | None = None) -> None:
        labels = self.teacher.label(left, right)
        self.store.add_judgments(np.asarray(pairs, np.int64).reshape(-1, 2), labels, source=self.teacher.name)

    @property
    def skip_rate(self) -> float:
        return self.teacher.skip_rate


class HumanOracle(Oracle):
    """People, through the store: ``ask`` queues the pairs (best score first) for ``prefrl label``.

    As in rl-teacher, the learner never blocks on people: it keeps training on the latest
    reward model while they judge.
    """

    name = "human"
    needs_frames = True

    def ask(self, pairs: np.ndarray, left: Clips | None = None, right: Clips | None = None,
            scores: np.ndarray | None = None) -> list[int]:
        """Queue (P, 2) pairs of clip ids; higher ``scores`` are shown first. Returns the query ids."""
        return self.store.add_queries(np.asarray(pairs, np.int64).reshape(-1, 2), scores)

    def outstanding(self) -> int:
        return self.store.count_pending()


def open_oracle(name: str, store: PreferenceStore, rng: np.random.Generator, since_id: int = 0) -> Oracle:
    """The oracle called ``name`` bound to ``store``: ``human``, a scripted teacher, or a registered kind
    (``KIND[:ARGUMENT]``, found through the ``prefrl.oracles`` entry points, e.g. ``ai:/path/to/model``)."""
    check_oracle_name(name)
    if name == "human":
        return HumanOracle(store, since_id)
    if name in ORACLE_PRESETS:
        return TeacherOracle(store, make_oracle(name, rng), since_id)
    kind, _, arg = name.partition(":")
    try:
        factory = plugin_oracles()[kind].load()  # type: ignore[attr-defined]
    except ImportError as e:
        raise PrefrlError(f"oracle kind `{kind}` needs an optional dependency: {e}") from e
    oracle = factory(arg or None, store, rng, since_id)
    if not isinstance(oracle, Oracle):
        raise PrefrlError(f"oracle kind `{kind}`: its entry point returned {type(oracle).__name__}, not an Oracle")
    return oracle
