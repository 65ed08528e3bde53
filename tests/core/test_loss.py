"""Preference losses against hand-computed values (prefrl.core.loss, Comparisons.from_rankings)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from prefrl.core.loss import (
    PreferenceLoss,
    bradley_terry_loss,
    pairwise_ranking_loss,
    plackett_luce_loss,
    preference_probability,
)
from prefrl.core.types import Comparisons, PrefrlError

# Three comparisons: return differences d = R_left - R_right of 1, 0 and -2,
# labels 1 (left preferred), 0.5 (equal) and 0 (right preferred).
RET_LEFT = torch.tensor([2.0, 0.0, -1.0])
RET_RIGHT = torch.tensor([1.0, 0.0, 1.0])
LABEL = torch.tensor([1.0, 0.5, 0.0])
WEIGHT = torch.tensor([1.0, 2.0, 0.5])

# Plain Bradley-Terry, per comparison, by hand:
#   d=1,  label 1:   -log sigmoid(1)      = log(1 + e^-1) = 0.3132617
#   d=0,  label 0.5: -(0.5 log 0.5 + 0.5 log 0.5) = log 2 = 0.6931472
#   d=-2, label 0:   -log(1 - sigmoid(-2)) = log(1 + e^-2) = 0.1269280
CE_PLAIN = [0.3132617, 0.6931472, 0.1269280]
# With label noise eps = 0.1, P = 0.9 sigmoid(d) + 0.05:
#   d=1:  P = 0.9 * 0.7310586 + 0.05 = 0.7079527,  -log P       = 0.3453780
#   d=0:  P = 0.5,                                  label 0.5   -> log 2 = 0.6931472
#   d=-2: P = 0.9 * 0.1192029 + 0.05 = 0.1572826,  -log(1 - P)  = 0.1711236
CE_NOISY = [0.3453780, 0.6931472, 0.1711236]


def test_bradley_terry_matches_hand_computed_value() -> None:
    loss = bradley_terry_loss(RET_LEFT, RET_RIGHT, LABEL)
    assert float(loss) == pytest.approx(sum(CE_PLAIN) / 3, abs=1e-6)  # 0.3777790


def test_bradley_terry_with_noise_matches_hand_computed_value() -> None:
    loss = bradley_terry_loss(RET_LEFT, RET_RIGHT, LABEL, noise_eps=0.1)
    assert float(loss) == pytest.approx(sum(CE_NOISY) / 3, abs=1e-6)  # 0.4032163
    # The loss object the trainer uses computes the same thing.
    assert float(PreferenceLoss(0.1)(RET_LEFT, RET_RIGHT, LABEL)) == pytest.approx(float(loss), abs=1e-7)


@pytest.mark.parametrize("eps, ce", [(0.0, CE_PLAIN), (0.1, CE_NOISY)])
def test_bradley_terry_weights_give_weighted_mean(eps: float, ce: list[float]) -> None:
    loss = bradley_terry_loss(RET_LEFT, RET_RIGHT, LABEL, WEIGHT, noise_eps=eps)
    expected = (1.0 * ce[0] + 2.0 * ce[1] + 0.5 * ce[2]) / 3.5
    assert float(loss) == pytest.approx(expected, abs=1e-6)


def test_soft_label_half_on_equal_returns_is_log2_whatever_the_noise() -> None:
    for eps in (0.0, 0.1, 0.5):
        loss = bradley_terry_loss(torch.tensor([3.0]), torch.tensor([3.0]), torch.tensor([0.5]), noise_eps=eps)
        assert float(loss) == pytest.approx(math.log(2), abs=1e-6)


def test_soft_label_is_minimised_where_probability_equals_label() -> None:
    """With label 0.7 the loss over d is smallest where sigmoid(d) = 0.7."""
    d = torch.linspace(-3, 3, 601)
    losses = torch.stack([bradley_terry_loss(x[None], torch.zeros(1), torch.tensor([0.7])) for x in d])
    best = float(d[int(losses.argmin())])
    assert best == pytest.approx(math.log(0.7 / 0.3), abs=0.02)


def test_ensemble_returns_sum_member_losses() -> None:
    """(B, M) returns: each member gets its own full loss, summed over members."""
    member_a = bradley_terry_loss(RET_LEFT, RET_RIGHT, LABEL, noise_eps=0.1)
    member_b = bradley_terry_loss(RET_LEFT * 2, RET_RIGHT, LABEL, noise_eps=0.1)
    both = bradley_terry_loss(
        torch.stack([RET_LEFT, RET_LEFT * 2], dim=1), torch.stack([RET_RIGHT, RET_RIGHT], dim=1), LABEL, noise_eps=0.1
    )
    assert float(both) == pytest.approx(float(member_a + member_b), abs=1e-6)


def test_noise_model_bounds_the_loss_of_a_confident_mistake() -> None:
    """A label against a huge predicted difference costs at most -log(eps/2) with noise; no inf/nan without."""
    left, right, label = torch.tensor([-100.0]), torch.tensor([0.0]), torch.tensor([1.0])
    assert float(bradley_terry_loss(left, right, label)) == pytest.approx(100.0, rel=1e-4)
    noisy = float(bradley_terry_loss(left, right, label, noise_eps=0.1))
    assert noisy == pytest.approx(-math.log(0.05), rel=1e-4)
    p = preference_probability(torch.tensor([-1e4, 0.0, 1e4]), torch.zeros(3), noise_eps=0.1)
    assert torch.allclose(p, torch.tensor([0.05, 0.5, 0.95]))


def test_preference_loss_rejects_bad_eps() -> None:
    with pytest.raises(ValueError, match="noise_eps"):
        PreferenceLoss(1.0)
    with pytest.raises(ValueError, match="noise_eps"):
        PreferenceLoss(-0.1)


def test_plackett_luce_for_two_items_equals_bradley_terry() -> None:
    returns = torch.tensor([[1.5, -0.5], [0.0, 2.0], [3.0, 3.0]])  # best first
    pl = plackett_luce_loss(returns)
    bt = bradley_terry_loss(returns[:, 0], returns[:, 1], torch.ones(3))
    assert float(pl) == pytest.approx(float(bt), abs=1e-6)


def test_plackett_luce_three_items_matches_hand_computed_value() -> None:
    # Ranking (a, b, c) = (2, 1, 0), best first:
    #   -log P = -(a - log(e^a + e^b + e^c)) - (b - log(e^b + e^c))
    #          = log(1 + e^-1 + e^-2) + log(1 + e^-1) = 0.4076059 + 0.3132617
    loss = plackett_luce_loss(torch.tensor([[2.0, 1.0, 0.0]]))
    assert float(loss) == pytest.approx(0.4076059 + 0.3132617, abs=1e-6)


def test_pairwise_expansion_weights_each_ranking_one_over_k_choose_2() -> None:
    comps = Comparisons.from_rankings([[3, 1, 2], [0, 4, 5, 6], [7, 8]])
    assert len(comps) == 3 + 6 + 1
    np.testing.assert_allclose(comps.weight[:3], 1 / 3)
    np.testing.assert_allclose(comps.weight[3:9], 1 / 6)
    np.testing.assert_allclose(comps.weight[9:], 1.0)
    # Every ranking carries the weight of one comparison; better item always on the left.
    assert comps.weight.sum() == pytest.approx(3.0)
    assert list(zip(comps.left[:3], comps.right[:3])) == [(3, 1), (3, 2), (1, 2)]
    np.testing.assert_array_equal(comps.label, 1.0)
    with pytest.raises(PrefrlError, match="at least 2"):
        Comparisons.from_rankings([[1]])


def test_pairwise_ranking_loss_equals_weighted_bradley_terry_of_expansion() -> None:
    returns = torch.tensor([[0.3, 1.2, -0.7], [2.0, 0.0, 1.0]])  # (B=2, K=3), rows best first
    comps = Comparisons.from_rankings([[0, 1, 2], [3, 4, 5]])
    flat = returns.reshape(-1)
    bt = bradley_terry_loss(
        flat[comps.left], flat[comps.right], torch.as_tensor(comps.label), torch.as_tensor(comps.weight)
    )
    assert float(pairwise_ranking_loss(returns)) == pytest.approx(float(bt), abs=1e-6)
    # And for K = 2 it is plain Bradley-Terry, like Plackett-Luce.
    two = returns[:, :2]
    assert float(pairwise_ranking_loss(two)) == pytest.approx(float(plackett_luce_loss(two)), abs=1e-6)


def test_comparisons_reject_labels_outside_unit_interval() -> None:
    with pytest.raises(PrefrlError, match="not a probability"):
        Comparisons([0], [1], [1.5])
    kept = Comparisons([0, 1, 2], [1, 2, 0], [1.0, np.nan, 0.0]).labeled()
    assert kept.left.tolist() == [0, 2]
