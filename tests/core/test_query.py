"""Query selection: random pairs, ensemble disagreement, and PEBBLE's entropy sampling."""

from __future__ import annotations

import numpy as np
import pytest

from prefrl.core.engine import PrefsConfig
from prefrl.core.ensemble import RewardEnsemble
from prefrl.core.query import SELECTORS, novelty_pairs, preference_entropy, random_pairs, select_pairs
from prefrl.core.types import PrefrlError

from tests.conftest import TOY_SPEC


class FixedReturns:
    """A stand-in ensemble whose members' raw clip return is a fixed table (N, M)."""

    def __init__(self, returns: np.ndarray):
        self.returns = np.asarray(returns, np.float32)

    @property
    def n_members(self) -> int:
        return self.returns.shape[1]

    def predict_clip_returns(self, inputs, normalised: bool = True, batch_size: int = 256) -> np.ndarray:
        return self.returns[inputs["idx"][:, 0]]


def _inputs(n: int) -> dict[str, np.ndarray]:
    return {"idx": np.arange(n)[:, None]}  # (N, T=1): the clip's own index


def test_entropy_is_log2_for_a_tie_and_small_for_a_clear_pair():
    ens = FixedReturns([[0.0, 0.0], [0.0, 0.0], [10.0, 12.0]])
    pairs = np.array([[0, 1], [0, 2], [2, 1]])
    h = preference_entropy(ens, _inputs(3), pairs)
    assert h[0] == pytest.approx(np.log(2), abs=1e-6)
    assert h[1] < 1e-3 and h[2] < 1e-3
    # averaged over members: one member sure, one undecided -> half of log 2
    h2 = preference_entropy(FixedReturns([[0.0, 0.0], [30.0, 0.0]]), _inputs(2), np.array([[0, 1]]))
    assert h2[0] == pytest.approx(np.log(2) / 2, abs=1e-4)


@pytest.mark.parametrize("members", [1, 3])
def test_entropy_selection_picks_the_ambiguous_pairs(members: int, rng: np.random.Generator):
    # clips 0..9 have distinct returns 10 apart; clips 10 and 11 tie with clip 0 and with each other
    rets = np.concatenate([np.arange(10) * 10.0, [0.0, 0.0]])[:, None].repeat(members, axis=1)
    ens = FixedReturns(rets)
    pairs, scores = select_pairs("entropy", 3, _inputs(12), rng, ens, pool_factor=66)  # the pool covers all 66 pairs
    got = {tuple(sorted(p)) for p in pairs.tolist()}
    assert got == {(0, 10), (0, 11), (10, 11)}
    assert np.allclose(scores, np.log(2), atol=1e-6)
    assert list(scores) == sorted(scores, reverse=True)


def test_entropy_works_on_a_real_ensemble_and_a_single_net(reward_model: RewardEnsemble, rng: np.random.Generator):
    n, t = 20, 5
    inputs = {"obs": rng.normal(size=(n, t, *TOY_SPEC.obs_shape)).astype(np.float32),
              "acts": rng.normal(size=(n, t, *TOY_SPEC.act_shape)).astype(np.float32)}
    pairs, scores = select_pairs("entropy", 4, inputs, rng, reward_model, pool_factor=5)
    assert pairs.shape == (4, 2) and (pairs[:, 0] != pairs[:, 1]).all()
    assert ((scores > 0) & (scores <= np.log(2) + 1e-6)).all()


def test_disagreement_needs_two_members_and_random_needs_no_model(rng: np.random.Generator):
    single = FixedReturns(np.arange(6.0)[:, None])
    _, scores = select_pairs("disagreement", 3, _inputs(6), rng, single)
    assert (scores == 0).all()  # an ensemble of one cannot disagree: random pairs
    pairs, _ = select_pairs("random", 5, _inputs(6), rng, None)
    assert len({tuple(sorted(p)) for p in pairs.tolist()}) == 5


def test_selectors_are_known_to_the_engine_config():
    assert "entropy" in SELECTORS
    assert PrefsConfig(query="entropy").query == "entropy"
    with pytest.raises(PrefrlError, match="entropy"):
        PrefsConfig(query="entropi")
    with pytest.raises(PrefrlError, match="unknown query selection"):
        select_pairs("entropi", 1, _inputs(3), np.random.default_rng(0))


def test_random_pairs_avoid_excluded_pairs(rng: np.random.Generator):
    pairs = random_pairs(4, 5, rng, exclude={(0, 1)})
    assert (0, 1) not in {tuple(sorted(p)) for p in pairs.tolist()}


def _steps(n: int, t: int, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0, 0.1, (n, t, 3)).astype(np.float32)


def test_novelty_asks_first_about_the_clips_with_a_step_unlike_any_asked(rng: np.random.Generator):
    bank = _steps(50, 4, rng).reshape(-1, 3)  # what was asked so far: steps near the origin
    pool = _steps(40, 6, rng)
    pool[7, 3] = [5.0, 0.0, 0.0]  # one step of clip 7 is a rare event
    pool[21, 0] = [5.0, 0.1, 0.0]  # clip 21 holds nearly the same event
    pool[30, 5] = [0.0, -4.0, 0.0]  # clip 30 another one
    pairs, scores = select_pairs("novelty", 3, {"obs": pool}, rng, embeddings=(pool, bank))
    assert pairs[0, 0] in (7, 21) and pairs[1, 0] == 30  # the twin of the first is no longer new: k-center
    assert scores[0] >= scores[1] > scores[2]
    assert (pairs[:, 0] != pairs[:, 1]).all() and len({tuple(sorted(p)) for p in pairs.tolist()}) == 3
    # more pairs than clips: every clip is the novel side once, the rest are random pairs
    pairs, _ = novelty_pairs(pool[:5], bank, 8, rng, exclude={(0, 1)})
    assert len(pairs) == 8 and set(pairs[:5, 0].tolist()) == set(range(5))
    assert (0, 1) not in {tuple(sorted(p)) for p in pairs.tolist()}
    # an empty bank: every clip is equally new, pairs are still valid
    pairs, _ = novelty_pairs(pool, np.zeros((0, 3), np.float32), 4, rng)
    assert len(pairs) == 4 and (pairs[:, 0] != pairs[:, 1]).all()
    with pytest.raises(PrefrlError, match="embeddings"):
        select_pairs("novelty", 2, {"obs": pool}, rng)
    assert PrefsConfig(query="novelty").query == "novelty"
