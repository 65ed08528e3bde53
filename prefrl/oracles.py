"""Oracles: label pairs of clips from their true reward.

``synthetic`` is the perfect labeller of Christiano et al. 2017: the clip with the
higher true return wins, equal returns give 0.5. The scripted irrational teachers
are those of B-Pref (Lee et al. 2021, "B-Pref: Benchmarking Preference-Based
Reinforcement Learning"), with B-Pref's defaults:

==============  =====================================================================
``stochastic``  Boltzmann: P(left) = sigmoid(beta * (R_left - R_right)), beta = 1; label sampled
``myopic``      step t of a T-step clip weighted gamma^(T-1-t), gamma = 0.9 (earlier steps count less)
``mistake``     the rational label flipped with probability eps = 0.1
``skip``        no label (NaN, a skip) when both returns are below 0.1 x the average segment return
``equal``       0.5 when |R_left - R_right| < 0.1 x the average segment return
==============  =====================================================================

All of them are one ``ScriptedOracle`` with different knobs, applied in B-Pref's
order: skip and equal are decided on the undiscounted returns, then the (myopic,
stochastic) label is drawn, then mistakes flip it, then equal overrides.

Labels follow prefrl's convention: P(left preferred), 1.0 left, 0.0 right, 0.5 equal,
NaN = skip (B-Pref codes right as 1 and equal as -1; we don't).

Warning:
    The skip/equal thresholds are relative to the "average true return of a segment".
    Call ``calibrate`` with that number (the RL loop uses the mean true return of the
    clips collected so far); uncalibrated, the oracle uses the mean absolute return of
    the clips in each call.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace

import numpy as np

from prefrl.types import Clips, PrefrlError


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
    """Skip when both returns are below eps_skip x the average segment return."""
    eps_equal: float = 0.0
    """Label 0.5 when returns differ by less than eps_equal x the average segment return."""

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


def check_oracle_name(name: str) -> None:
    if name not in ORACLE_NAMES:
        close = difflib.get_close_matches(name, ORACLE_NAMES, n=3)
        hint = f"; did you mean {', '.join(f'`{c}`' for c in close)}?" if close else ""
        raise PrefrlError(f"unknown oracle `{name}` (known: {', '.join(ORACLE_NAMES)}){hint}")


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
        self.segment_return: float | None = None
        self.n_asked = 0
        self.n_skipped = 0

    def calibrate(self, average_segment_return: float) -> None:
        """Set the reference for the skip and equal thresholds (B-Pref: mean true return of a segment)."""
        self.segment_return = float(abs(average_segment_return))

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
        ref = self.segment_return
        if ref is None:
            ref = float(np.mean(np.abs(np.concatenate([ret_l, ret_r])))) if len(ret_l) else 0.0
        skip = np.zeros(len(ret_l), bool)
        if cfg.eps_skip > 0:
            skip = np.maximum(ret_l, ret_r) < cfg.eps_skip * ref
        equal = (np.abs(ret_l - ret_r) < cfg.eps_equal * ref) if cfg.eps_equal > 0 else ret_l == ret_r
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
    cfg = replace(ORACLE_PRESETS[name], **overrides) if overrides else ORACLE_PRESETS[name]
    return ScriptedOracle(cfg, rng, name=name)
