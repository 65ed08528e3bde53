"""Oracles and the B-Pref scripted teachers, checked statistically with fixed seeds."""

from __future__ import annotations

import numpy as np
import pytest

from prefrl.core.oracles import ORACLE_NAMES, OracleConfig, TeacherOracle, make_oracle
from prefrl.core.store import PreferenceStore
from prefrl.core.toy import toy_clips
from prefrl.core.types import Clips, PrefrlError

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


def first_step_rewards(returns) -> np.ndarray:
    """(P, T) rewards whose sums are exactly ``returns`` (all of it at the first step)."""
    rew = np.zeros((len(returns), T))
    rew[:, 0] = returns
    return rew


def bpref_skip_equal(avg: float, ret_l: np.ndarray, ret_r: np.ndarray, eps: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """B-Pref's decisions (reward_model.py, get_label), the reference on positive-return tasks.

    teacher_thres_skip = teacher_thres_equal = eps x avg (avg: the average segment return);
    a pair is kept iff max(R_l, R_r) > thres_skip, skipping only when thres_skip > 0;
    equal iff |R_l - R_r| < thres_equal.
    """
    thres = eps * avg
    skip = ~(np.maximum(ret_l, ret_r) > thres) if thres > 0 else np.zeros(len(ret_l), bool)
    return skip, np.abs(ret_l - ret_r) < thres


def reacher_like(rng: np.random.Generator, n: int, length: int = 25) -> np.ndarray:
    """(n, length) Reacher-like rewards in [-1, -0.05]: a level per clip (distance to the target) + jitter."""
    level = rng.uniform(-1.0, -0.05, (n, 1))
    return np.clip(level + rng.normal(0, 0.05, (n, length)), -1.0, -0.05)


def test_skip_returns_nan_when_both_returns_in_the_bottom_of_the_spread(rng: np.random.Generator) -> None:
    oracle = make_oracle("skip", rng)
    oracle.calibrate(np.array([-5.0, 5.0, 15.0]))  # floor -5, spread 10: threshold -5 + 0.1 x 10 = -4
    left = first_step_rewards([-4.5, -4.5, 3.0, -5.0])
    right = first_step_rewards([-4.8, 2.0, -4.9, -4.2])
    labels = oracle.label_rewards(left, right)
    assert np.isnan(labels[0]) and np.isnan(labels[3])  # both <= -4
    assert labels[1:3].tolist() == [0.0, 1.0]  # one above: labelled rationally
    assert oracle.skip_rate == pytest.approx(0.5)


def test_skip_at_exactly_the_threshold_as_b_pref(rng: np.random.Generator) -> None:
    # Positive returns with a zero-return clip: B-Pref's threshold 0.1 x mean(0, 10, 20) = 1.0
    # is ours too (floor 0, spread 10). B-Pref keeps a pair only if max > 1.0: at 1.0 it skips.
    pool = np.array([0.0, 10.0, 20.0])
    oracle = make_oracle("skip", rng)
    oracle.calibrate(pool)
    ret_l, ret_r = np.array([1.0, 0.5, np.nextafter(1.0, 2.0)]), np.array([0.5, 1.0, 0.5])
    labels = oracle.label_rewards(first_step_rewards(ret_l), first_step_rewards(ret_r))
    skip, _ = bpref_skip_equal(float(np.mean(pool)), ret_l, ret_r)
    assert skip.tolist() == [True, True, False]
    np.testing.assert_array_equal(np.isnan(labels), skip)
    # The same boundary on a negative scale: floor -5, spread 10, threshold exactly -4.
    oracle.calibrate(np.array([-5.0, 5.0, 15.0]))
    labels = oracle.label_rewards(first_step_rewards([-4.0, -4.0 + 1e-9]), first_step_rewards([-4.5, -4.5]))
    assert np.isnan(labels[0]) and labels[1] == 1.0


def test_equal_gives_half_when_returns_are_close_relative_to_the_spread(rng: np.random.Generator) -> None:
    oracle = make_oracle("equal", rng)
    oracle.calibrate(np.array([-30.0, -20.0, -10.0]))  # floor -30, spread 10: margin 1.0
    left = first_step_rewards([-15.0, -15.0, -15.0, -23.0, -12.0])
    right = first_step_rewards([-15.5, -14.2, -17.0, -24.5, -12.0])
    assert oracle.label_rewards(left, right).tolist() == [0.5, 0.5, 1.0, 1.0, 0.5]


def test_thresholds_without_calibration_use_the_calls_returns(rng: np.random.Generator) -> None:
    # The call's 4 returns: floor 0.45, mean 5.2375, spread 4.7875 -> margin 0.47875.
    ret_l, ret_r = np.array([10.0, 0.9]), np.array([10.3, 0.45])
    labels = make_oracle("equal", rng).label_rewards(first_step_rewards(ret_l), first_step_rewards(ret_r))
    assert labels.tolist() == [0.5, 0.5]
    calibrated = make_oracle("equal", rng)
    calibrated.calibrate(np.concatenate([ret_l, ret_r]))
    assert calibrated.label_rewards(first_step_rewards(ret_l), first_step_rewards(ret_r)).tolist() == labels.tolist()
    # Skip: threshold 0.45 + 0.1 x 4.7875 = 0.92875; only the second pair lies below it.
    skip = make_oracle("skip", rng).label_rewards(first_step_rewards(ret_l), first_step_rewards(ret_r))
    assert skip[0] == 0.0 and np.isnan(skip[1])
    # A single pair is its own reference: never skipped, never called equal unless tied.
    one = make_oracle("skip", rng).label_rewards(first_step_rewards([-3.0]), first_step_rewards([-3.1]))
    assert one.tolist() == [1.0]


@pytest.mark.parametrize("name", [n for n in ORACLE_NAMES if n != "human"])
@pytest.mark.parametrize("calibrated", [True, False])
def test_labels_do_not_change_when_a_constant_is_added_to_every_reward(name: str, calibrated: bool) -> None:
    data = np.random.default_rng(11)
    pool = reacher_like(data, 400, length=T)
    i, j = data.integers(0, len(pool), (2, 3000))
    runs = []
    for shift in (0.0, -7.25, 3.5):
        oracle = make_oracle(name, np.random.default_rng(12))  # the same draws for every shift
        if calibrated:
            oracle.calibrate((pool + shift).sum(axis=1))
        runs.append(oracle.label_rewards(pool[i] + shift, pool[j] + shift))
    for labels in runs[1:]:
        np.testing.assert_array_equal(labels, runs[0])  # NaN (skips) compare equal
    if name == "skip":
        assert 0 < np.isnan(runs[0]).sum() < len(i)
    if name == "equal":
        assert 0 < (runs[0] == 0.5).sum() < len(i)


@pytest.mark.parametrize("calibrated", [True, False])
def test_reacher_like_negative_returns_are_labelled(calibrated: bool) -> None:
    # Per-step rewards in [-1, -0.05] over 25 steps: every return is negative. The old
    # |mean| thresholds skipped every pair here; B-Pref's (negative) ones never skip.
    data = np.random.default_rng(21)
    pool = reacher_like(data, 400)
    i, j = data.integers(0, len(pool), (2, 20000))
    i, j = i[i != j], j[i != j]
    skipper, equal = make_oracle("skip", np.random.default_rng(22)), make_oracle("equal", np.random.default_rng(23))
    if calibrated:
        skipper.calibrate(pool.sum(axis=1))
        equal.calibrate(pool.sum(axis=1))
    skip_rate = float(np.isnan(skipper.label_rewards(pool[i], pool[j])).mean())
    equal_rate = float((equal.label_rewards(pool[i], pool[j]) == 0.5).mean())
    assert 0 < skip_rate < 0.5, skip_rate  # measured 0.003
    assert 0 < equal_rate < 0.15, equal_rate  # measured 0.10 (the old |mean| margin: 0.10 here, 0.51 with iid steps)


def test_positive_returns_agree_with_b_pref_where_the_definitions_coincide() -> None:
    # Non-negative returns whose minimum is 0 (a zero-return clip in the pool): then
    # floor + eps x spread = eps x mean, B-Pref's threshold. Clips skewed towards 0 (as early in
    # a DMControl run) so that both teachers have plenty to do.
    data = np.random.default_rng(31)
    pool = data.uniform(0, 1, (400, 1)) ** 3 * np.ones((1, T)) + data.uniform(0, 0.02, (400, T))
    pool[0] = 0.0
    i, j = data.integers(0, len(pool), (2, 20000))
    ret = pool.sum(axis=1)
    skip_ref, equal_ref = bpref_skip_equal(float(np.mean(ret)), ret[i], ret[j])
    equal_ref |= ret[i] == ret[j]  # prefrl's tie convention (B-Pref's margin covers them anyway)
    skipper, equal = make_oracle("skip", np.random.default_rng(32)), make_oracle("equal", np.random.default_rng(33))
    skipper.calibrate(ret)
    equal.calibrate(ret)
    np.testing.assert_array_equal(np.isnan(skipper.label_rewards(pool[i], pool[j])), skip_ref)
    np.testing.assert_array_equal(equal.label_rewards(pool[i], pool[j]) == 0.5, equal_ref)
    assert 0.05 < skip_ref.mean() < 0.5 and 0.05 < equal_ref.mean() < 0.5
    # Uncalibrated, on pairs that include the zero-return clip: the call's own mean is B-Pref's avg.
    i[0], j[0] = 0, 0
    call_ret = np.concatenate([ret[i], ret[j]])
    skip_ref, _ = bpref_skip_equal(float(np.mean(call_ret)), ret[i], ret[j])
    uncal = make_oracle("skip", np.random.default_rng(34)).label_rewards(pool[i], pool[j])
    np.testing.assert_array_equal(np.isnan(uncal), skip_ref)


def test_teacher_oracle_calibrates_its_teacher_with_the_returns(tmp_path) -> None:
    returns = np.array([-3.0, -1.0, -2.0, -6.0])
    with PreferenceStore(tmp_path) as store:
        oracle = TeacherOracle(store, make_oracle("skip", np.random.default_rng(0)))
        oracle.calibrate(returns)
        assert oracle.teacher.reference == (-6.0, 3.0)  # floor -6, mean -3
        oracle.calibrate(np.array([]))  # nothing new: the reference is kept
        assert oracle.teacher.reference == (-6.0, 3.0)


def test_oracle_errors_are_clear(rng: np.random.Generator) -> None:
    with pytest.raises(PrefrlError, match="unknown oracle `mistakes`.*did you mean `mistake`"):
        make_oracle("mistakes", rng)
    with pytest.raises(PrefrlError, match="prefrl label"):
        make_oracle("human", rng)
    no_rew = Clips(np.zeros((2, 3, 1)), np.zeros((2, 3, 1)))
    with pytest.raises(PrefrlError, match="needs clips with `true_rew`"):
        make_oracle("synthetic", rng).label(no_rew, no_rew)
    with pytest.raises(PrefrlError, match="not their mean"):
        make_oracle("skip", rng).calibrate(10.0)
    with pytest.raises(PrefrlError, match="non-empty"):
        make_oracle("skip", rng).calibrate(np.array([]))
    for bad in ({"beta": 0.0}, {"gamma": 1.5}, {"eps_mistake": -0.1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            OracleConfig(**bad)
