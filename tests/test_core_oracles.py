"""Oracles and the B-Pref scripted teachers, checked statistically with fixed seeds."""

from __future__ import annotations

import numpy as np
import pytest

from prefrl.oracles import ORACLE_NAMES, OracleConfig, make_oracle
from prefrl.toy import toy_clips
from prefrl.types import Clips, PrefrlError

T = 10


def rewards_with_returns(returns: np.ndarray, length: int = T) -> np.ndarray:
    """(P, T) per-step rewards, spread evenly, whose sums are ``returns``."""
    return np.repeat(np.asarray(returns, np.float64)[:, None] / length, length, axis=1)


def random_pair_rewards(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n pairs of (P, T) rewards with distinct, well-separated returns."""
    left = rng.normal(0, 1, (n, T))
    right = rng.normal(0, 1, (n, T))
    keep = np.abs(left.sum(1) - right.sum(1)) > 0.05
    return left[keep], right[keep]


def test_oracle_names_match_the_design() -> None:
    assert set(ORACLE_NAMES) == {"synthetic", "human", "stochastic", "myopic", "mistake", "skip", "equal"}


def test_synthetic_prefers_higher_return_is_deterministic_and_ties_are_half(rng: np.random.Generator) -> None:
    left, right = random_pair_rewards(rng, 2000)
    a = make_oracle("synthetic", np.random.default_rng(1)).label_rewards(left, right)
    b = make_oracle("synthetic", np.random.default_rng(2)).label_rewards(left, right)
    np.testing.assert_array_equal(a, b)  # no randomness at all
    np.testing.assert_array_equal(a, (left.sum(1) > right.sum(1)).astype(np.float32))
    ties = make_oracle("synthetic", rng).label_rewards(rewards_with_returns([1.0, -2.0, 0.0]), rewards_with_returns([1.0, -2.0, 0.0]))
    np.testing.assert_array_equal(ties, [0.5, 0.5, 0.5])
    # Same answer through Clips.
    clips = toy_clips(20, seed=3)
    labels = make_oracle("synthetic", rng).label(clips[:10], clips[10:])
    np.testing.assert_array_equal(labels, (clips.true_returns()[:10] > clips.true_returns()[10:]).astype(np.float32))


def test_mistake_flips_about_eps_of_labels(rng: np.random.Generator) -> None:
    left, right = random_pair_rewards(rng, 20000)
    rational = make_oracle("synthetic", rng).label_rewards(left, right)
    noisy = make_oracle("mistake", np.random.default_rng(3)).label_rewards(left, right)
    assert set(np.unique(noisy)) <= {0.0, 1.0}
    flipped = float((noisy != rational).mean())
    assert flipped == pytest.approx(0.1, abs=0.01)  # binomial sd ~0.002 at n=20000
    heavier = make_oracle("mistake", np.random.default_rng(4), eps_mistake=0.3).label_rewards(left, right)
    assert float((heavier != rational).mean()) == pytest.approx(0.3, abs=0.015)


@pytest.mark.parametrize("beta", [1.0, 3.0])
def test_stochastic_matches_boltzmann_frequency(beta: float) -> None:
    oracle = make_oracle("stochastic", np.random.default_rng(5), beta=beta)
    n = 4000
    for d in (-1.0, 0.25, 0.5, 1.0, 2.0):
        labels = oracle.label_rewards(rewards_with_returns(np.full(n, d)), rewards_with_returns(np.zeros(n)))
        assert set(np.unique(labels)) <= {0.0, 1.0}  # a sampled hard label, not the probability
        expected = 1.0 / (1.0 + np.exp(-beta * d))
        assert labels.mean() == pytest.approx(expected, abs=0.03), f"dR={d}"  # sd <= 0.008


def test_stochastic_default_beta_is_one_and_large_beta_is_nearly_rational(rng: np.random.Generator) -> None:
    assert make_oracle("stochastic", rng).cfg.beta == 1.0
    left, right = random_pair_rewards(rng, 3000)
    rational = make_oracle("synthetic", rng).label_rewards(left, right)
    sharp = make_oracle("stochastic", rng, beta=1e3).label_rewards(left, right)
    assert (sharp == rational).mean() > 0.99


def test_myopic_flips_the_decision_when_early_and_late_reward_differ(rng: np.random.Generator) -> None:
    # Left earns 5 at the first step, right earns 3 at the last one. Undiscounted,
    # left wins (5 > 3); with gamma = 0.9 the first step counts 0.9^9 = 0.387, so
    # the myopic teacher sees 1.94 < 3 and prefers right.
    left = np.zeros((1, T))
    left[0, 0] = 5.0
    right = np.zeros((1, T))
    right[0, -1] = 3.0
    assert make_oracle("synthetic", rng).label_rewards(left, right).tolist() == [1.0]
    myopic = make_oracle("myopic", rng)
    assert myopic.cfg.gamma == 0.9
    assert myopic.label_rewards(left, right).tolist() == [0.0]
    # Swapping sides swaps the answer; with both at the same step it agrees with synthetic.
    assert myopic.label_rewards(right, left).tolist() == [1.0]
    late_left = np.zeros((1, T))
    late_left[0, -1] = 5.0
    assert myopic.label_rewards(late_left, right).tolist() == [1.0]


def test_skip_returns_nan_when_both_returns_below_threshold(rng: np.random.Generator) -> None:
    oracle = make_oracle("skip", rng)
    oracle.calibrate(10.0)  # threshold = 0.1 x 10 = 1.0
    left = rewards_with_returns([0.5, 0.5, 3.0, -4.0])
    right = rewards_with_returns([0.2, 2.0, 0.9, -1.0])
    labels = oracle.label_rewards(left, right)
    assert np.isnan(labels[0]) and np.isnan(labels[3])  # both below 1.0
    assert labels[1:3].tolist() == [0.0, 1.0]  # one above: labelled rationally
    assert oracle.skip_rate == pytest.approx(0.5)


def test_equal_gives_half_when_returns_are_close(rng: np.random.Generator) -> None:
    oracle = make_oracle("equal", rng)
    oracle.calibrate(-10.0)  # the threshold uses the magnitude: 0.1 x 10 = 1.0
    left = rewards_with_returns([5.0, 5.0, 5.0, -3.0])
    right = rewards_with_returns([5.5, 4.2, 7.0, -4.5])
    assert oracle.label_rewards(left, right).tolist() == [0.5, 0.5, 0.0, 1.0]


def test_thresholds_without_calibration_use_the_call_mean_abs_return(rng: np.random.Generator) -> None:
    # Mean |return| over both sides = (10 + 10 + 0.5 + 0.45) / 4 = 5.24 -> threshold 0.524.
    labels = make_oracle("equal", rng).label_rewards(rewards_with_returns([10.0, 0.5]), rewards_with_returns([10.0, 0.45]))
    assert labels.tolist() == [0.5, 0.5]


def test_oracle_errors_are_clear(rng: np.random.Generator) -> None:
    with pytest.raises(PrefrlError, match="unknown oracle `mistakes`.*did you mean `mistake`"):
        make_oracle("mistakes", rng)
    with pytest.raises(PrefrlError, match="prefrl label"):
        make_oracle("human", rng)
    no_rew = Clips(np.zeros((2, 3, 1)), np.zeros((2, 3, 1)))
    with pytest.raises(PrefrlError, match="needs clips with `true_rew`"):
        make_oracle("synthetic", rng).label(no_rew, no_rew)
    for bad in ({"beta": 0.0}, {"gamma": 1.5}, {"eps_mistake": -0.1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            OracleConfig(**bad)
