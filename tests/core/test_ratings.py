"""Bradley-Terry ratings of policies: recovery of known ratings, intervals, adaptive pair choice, the store loop."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from prefrl.core.oracles import open_oracle
from prefrl.core.ratings import (
    POOLS_META,
    RatingConfig,
    RatingPlan,
    Ratings,
    fit_ratings,
    most_uncertain_pair,
    next_pair,
    rate,
    record_pool,
    run_rating,
    stored_pools,
)
from prefrl.core.store import PreferenceStore
from prefrl.core.types import Clips, PrefrlError

TRUE = np.array([-1.2, -0.4, 0.3, 1.3])
TRUE = TRUE - TRUE.mean()


def _simulate(n: int, rng: np.random.Generator, truth: np.ndarray = TRUE):
    k = len(truth)
    left = rng.integers(0, k, n)
    right = (left + rng.integers(1, k, n)) % k
    p = 1.0 / (1.0 + np.exp(-(truth[left] - truth[right])))
    return left, right, (rng.random(n) < p).astype(np.float64)


def test_bradley_terry_recovers_known_ratings_and_intervals_cover_them():
    covered = total = 0
    for seed in range(8):
        rng = np.random.default_rng(seed)
        r = rate(*_simulate(1500, rng), names=list("abcd"), cfg=RatingConfig(bootstrap=200), rng=rng)
        assert r.order() == [3, 2, 1, 0]
        assert np.abs(r.rating - TRUE).max() < 0.35
        assert (r.low < r.rating).all() and (r.rating < r.high).all()
        covered += int(((r.low <= TRUE) & (TRUE <= r.high)).sum())
        total += len(TRUE)
    assert covered / total >= 0.75  # 90% intervals: about 29 of 32 expected
    assert r.separated()
    assert r.comparisons == 1500 and r.games.sum() == 3000


def test_fewer_games_give_wider_intervals():
    rng = np.random.default_rng(0)
    few = rate(*_simulate(60, rng), names=list("abcd"), rng=rng)
    many = rate(*_simulate(2000, rng), names=list("abcd"), rng=rng)
    assert ((few.high - few.low) > 2 * (many.high - many.low)).all()
    assert not few.separated()


def test_a_policy_that_always_wins_has_finite_rating_and_an_honest_interval():
    """Perfect separation (a perfect scripted teacher): the prior keeps ratings finite, and one game is
    not enough to call two policies apart (a resampling bootstrap would say it is)."""
    one = rate([0], [1], [1.0], names=["a", "b"])
    assert np.isfinite(one.rating).all() and one.rating[0] > one.rating[1]
    assert not one.separated()
    many = rate([0] * 30, [1] * 30, np.ones(30), names=["a", "b"])
    assert many.separated() and np.isfinite(many.rating).all()


def test_ties_and_skips():
    r = rate([0, 0, 1, 0], [1, 1, 0, 1], [0.5, 0.5, 0.5, np.nan], names=["a", "b"])
    assert r.skipped == 1 and r.comparisons == 3
    assert abs(r.rating[0] - r.rating[1]) < 1e-6
    assert r.wins.tolist() == [1.5, 1.5]


def test_fit_matches_the_closed_form_for_two_policies():
    """Two policies, w wins of n, no prior to speak of: r_a - r_b = logit(w / n)."""
    labels = np.array([1.0] * 7 + [0.0] * 3)
    r = fit_ratings(np.zeros(10, int), np.ones(10, int), labels, 2, prior_sd=1e3)
    assert r[0] - r[1] == pytest.approx(np.log(7 / 3), abs=1e-4)
    assert r.sum() == pytest.approx(0.0, abs=1e-9)


def test_adaptive_picks_the_pair_whose_intervals_overlap_most():
    k = 4
    games = np.full((k, k), 10) - 10 * np.eye(k, dtype=int)
    r = Ratings(list("abcd"), rating=np.array([-2.0, 0.0, 0.2, 2.0]), low=np.array([-2.5, -0.6, -0.1, 1.5]),
                high=np.array([-1.5, 0.5, 0.6, 2.5]), games=games.sum(1), wins=np.zeros(k), pair_games=games,
                samples=np.zeros((5, k)), ci=0.9)
    rng = np.random.default_rng(0)
    assert most_uncertain_pair(r, rng) == (1, 2)
    assert next_pair("adaptive", r, warmup=2, rng=rng) == (1, 2)
    # before every pair has its warmup games, the least-played pair goes first
    games2 = games.copy()
    games2[0, 3] = games2[3, 0] = 1
    r.pair_games = games2
    assert next_pair("adaptive", r, warmup=2, rng=rng) == (0, 3)
    # uniform: always the least-played pair
    assert next_pair("uniform", r, warmup=2, rng=rng) == (0, 3)
    with pytest.raises(PrefrlError, match="unknown pair scheme"):
        next_pair("greedy", r, warmup=2, rng=rng)


def test_disjoint_intervals_are_not_enough_when_the_difference_is_uncertain():
    """Centred ratings: two policies' own intervals can be clear of each other while the interval of
    their difference (the replicates move together) still holds 0; they are not told apart then."""
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 0.05, 500)
    own = rng.normal(0, 1.0, 500)
    samples = np.stack([shared - own / 2, 1.0 + shared + own / 2], axis=1)
    r = Ratings(["a", "b"], rating=np.array([0.0, 1.0]), low=np.array([-0.2, 0.8]), high=np.array([0.2, 1.2]),
                games=np.array([4, 4]), wins=np.zeros(2), pair_games=np.array([[0, 4], [4, 0]]), samples=samples, ci=0.9)
    assert r.overlap(0, 1) < 0
    lo, hi = r.diff_interval(1, 0)
    assert lo < 0 < hi
    assert r.uncertainty(0, 1) > 0 and not r.separated()


def test_a_rarely_played_policy_does_not_widen_the_others_intervals():
    """Ratings sit on the games-weighted mean: a far-off policy with a handful of games has a wide
    interval of its own, and the well-measured pair keeps the intervals it has without it."""
    rng = np.random.default_rng(0)
    n = 200
    ab = (rng.random(n) < 0.6).astype(float)
    two = rate(np.zeros(n, int), np.ones(n, int), ab, names=["a", "b"], rng=np.random.default_rng(1))
    left = np.r_[np.zeros(n, int), [2] * 4, [2] * 4]
    right = np.r_[np.ones(n, int), [0] * 4, [1] * 4]
    three = rate(left, right, np.r_[ab, np.ones(8)], names=["a", "b", "c"], rng=np.random.default_rng(1))

    def width(r: Ratings, i: int) -> float:
        return float(r.high[i] - r.low[i])

    assert width(three, 0) < 1.25 * width(two, 0) and width(three, 1) < 1.25 * width(two, 1)
    assert width(three, 2) > 2 * width(three, 0)


def test_adaptive_keeps_playing_every_pair():
    """However clear a pair looks, it gets its share: at least sqrt(N / pairs) of N games."""
    k = 3
    games = np.array([[0, 48, 2], [48, 0, 50], [2, 50, 0]])
    r = Ratings(list("abc"), rating=np.array([-3.0, 0.0, 0.1]), low=np.array([-3.5, -0.3, -0.2]),
                high=np.array([-2.5, 0.3, 0.4]), games=games.sum(1), wins=np.zeros(k), pair_games=games,
                samples=np.zeros((5, k)), ci=0.9)
    assert most_uncertain_pair(r, np.random.default_rng(0)) == (1, 2)
    assert next_pair("adaptive", r, warmup=2, rng=np.random.default_rng(0)) == (0, 2)  # 2 < sqrt(100 / 3)


def _toy_store(tmp_path, quality: list[float], n: int = 12, seed: int = 0):
    """A store with ``n`` one-step clips per policy whose true return is quality + noise."""
    rng = np.random.default_rng(seed)
    store = PreferenceStore(tmp_path)
    pools = []
    for k, q in enumerate(quality):
        rew = (q + rng.normal(0, 1.0, (n, 1))).astype(np.float32)
        ids = store.add_clips(Clips(np.zeros((n, 1, 2), np.float32), np.zeros((n, 1, 1), np.float32), true_rew=rew))
        record_pool(store, f"policy{k}", ids)
        pools.append(ids)
    return store, pools


def _plan(store, pools):
    return RatingPlan([f"policy{k}" for k in range(len(pools))], [f"p{k}" for k in range(len(pools))], pools,
                      aligned=False, load=lambda ids: store.load_clips(ids))


@pytest.mark.parametrize("scheme", ["adaptive", "uniform"])
def test_run_rating_orders_toy_policies_and_resumes(tmp_path, scheme):
    store, pools = _toy_store(tmp_path, [0.0, 1.0, 2.0])
    assert stored_pools(store) == {f"policy{k}": p for k, p in enumerate(pools)}
    rng = np.random.default_rng(1)
    plan = _plan(store, pools)
    r = run_rating(store, open_oracle("synthetic", store, rng), plan, 60, scheme, RatingConfig(bootstrap=100), rng)
    assert store.count_judgments() == 60 and r.comparisons == 60
    assert r.order() == [2, 1, 0]
    assert all(r.pair_games[i, j] >= 2 for i, j in itertools.combinations(range(3), 2))
    # every judgment compares clips of two different policies
    owner = {c: k for k, p in enumerate(pools) for c in p}
    assert all(owner[j.left] != owner[j.right] for j in store.judgments())
    # a rerun on the same store keeps the 60 and asks only the missing ones
    r2 = run_rating(store, open_oracle("synthetic", store, rng), plan, 80, scheme, RatingConfig(bootstrap=100), rng)
    assert store.count_judgments() == 80 and r2.comparisons == 80
    store.close()


def test_adaptive_spends_its_games_on_the_close_pair(tmp_path):
    store, pools = _toy_store(tmp_path, [0.0, 4.0, 4.6], n=30)
    rng = np.random.default_rng(0)
    r = run_rating(store, open_oracle("synthetic", store, rng), _plan(store, pools), 60, "adaptive",
                   RatingConfig(bootstrap=100), rng)
    close, far = r.pair_games[1, 2], r.pair_games[0, 1] + r.pair_games[0, 2]
    assert close > 2 * far


def test_stop_when_separated(tmp_path):
    store, pools = _toy_store(tmp_path, [0.0, 10.0])
    rng = np.random.default_rng(0)
    r = run_rating(store, open_oracle("synthetic", store, rng), _plan(store, pools), 100, "adaptive",
                   RatingConfig(bootstrap=100), rng, stop_when_separated=True)
    assert r.separated() and r.comparisons < 100 and store.count_judgments() == r.comparisons


def test_people_judge_through_the_store(tmp_path):
    """With the human oracle the pairs wait in the store's queue; a judgment made there (as the viewer
    would) is what the ratings are fit on."""
    import threading

    store, pools = _toy_store(tmp_path, [0.0, 3.0], n=4)
    plan = _plan(store, pools)
    owner = {c: k for k, p in enumerate(pools) for c in p}
    stop = threading.Event()

    def person():
        with PreferenceStore(tmp_path) as s:
            while not stop.is_set():
                for q in s.pending_queries():
                    s.add_judgment(q.left, q.right, 1.0 if owner[q.left] == 1 else 0.0, source="human",
                                   annotator="ann", query_id=q.id)
                stop.wait(0.05)

    t = threading.Thread(target=person, daemon=True)
    t.start()
    try:
        rng = np.random.default_rng(0)
        r = run_rating(store, open_oracle("human", store, rng), plan, 6, "uniform", RatingConfig(bootstrap=50), rng,
                       batch=3, poll_s=0.05)
    finally:
        stop.set()
        t.join(5)
    assert r.comparisons == 6 and r.order() == [1, 0]
    assert {j.annotator for j in store.judgments()} == {"ann"} and store.count_pending() == 0
    store.close()


def test_damaged_pool_meta_is_refused(tmp_path):
    with PreferenceStore(tmp_path) as store:
        store.set_meta(POOLS_META, [1, 2, 3])
        with pytest.raises(PrefrlError, match="damaged"):
            stored_pools(store)


def test_bad_config_refused():
    with pytest.raises(PrefrlError, match="ci"):
        RatingConfig(ci=1.5)
    with pytest.raises(PrefrlError, match="two different policies"):
        rate([0], [0], [1.0], names=["a", "b"])
