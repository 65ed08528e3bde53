"""Preference losses shared by control and text (one implementation for both).

Bradley-Terry (Christiano et al. 2017, eq. 1): P(left > right) = sigmoid(R_left - R_right),
R the summed predicted reward of a clip (a text completion is a one-step clip).
Labels are probabilities (1 left, 0 right, 0.5 equal).

Label noise (Christiano et al. 2017, section 2.2.3): the labeler answers uniformly at
random with probability eps, so P = (1 - eps) * sigmoid(.) + eps / 2. eps = 0 is plain
Bradley-Terry.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from prefrl.core.types import PrefrlError


def preference_probability(ret_left: torch.Tensor, ret_right: torch.Tensor, noise_eps: float = 0.0) -> torch.Tensor:
    """P(left preferred) under Bradley-Terry with optional uniform label noise.

    Args:
        ret_left: (...) predicted returns of the left clips.
        ret_right: (...) predicted returns of the right clips, same shape.
        noise_eps: probability the labeler answered at random.

    Returns:
        (...) probabilities in [eps/2, 1 - eps/2].
    """
    p = torch.sigmoid(ret_left - ret_right)
    return (1.0 - noise_eps) * p + noise_eps / 2.0


def bradley_terry_loss(
    ret_left: torch.Tensor,
    ret_right: torch.Tensor,
    label: torch.Tensor,
    weight: torch.Tensor | None = None,
    noise_eps: float = 0.0,
) -> torch.Tensor:
    """Weighted mean cross-entropy between soft labels and Bradley-Terry probabilities.

    Args:
        ret_left: (B,) or (B, M) predicted returns of the left clips (M ensemble members).
        ret_right: same shape as ``ret_left``.
        label: (B,) float P(left preferred) in [0, 1].
        weight: (B,) per-comparison weight (e.g. 1/C(K,2) for expanded rankings); None = 1.
        noise_eps: label-noise probability (0 = plain Bradley-Terry).

    Returns:
        Scalar loss, averaged over comparisons (weighted) and summed over members.
    """
    diff = ret_left - ret_right
    if diff.dim() == 2:
        label = label[:, None]
    if noise_eps == 0.0:
        # Numerically stable form: softplus-based BCE on logits.
        ce = F.binary_cross_entropy_with_logits(diff, label.expand_as(diff), reduction="none")
    else:
        p = preference_probability(ret_left, ret_right, noise_eps)
        lab = label.expand_as(p)
        ce = -(lab * torch.log(p) + (1.0 - lab) * torch.log1p(-p))
    if ce.dim() == 2:
        ce = ce.sum(dim=1)  # each member gets its own full loss
    if weight is None:
        return ce.mean()
    return (ce * weight).sum() / weight.sum().clamp_min(1e-12)


def plackett_luce_loss(returns: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of rankings under Plackett-Luce.

    Args:
        returns: (B, K) predicted returns, each row ordered best first.

    Returns:
        Scalar mean NLL. For K = 2 this equals the Bradley-Terry loss with label 1.
    """
    # log P(ranking) = sum_k [ r_k - logsumexp(r_k..r_K) ]
    rev_lse = torch.logcumsumexp(returns.flip(-1), dim=-1).flip(-1)  # (B, K)
    return -(returns - rev_lse)[:, :-1].sum(dim=-1).mean()


def pairwise_ranking_loss(returns: torch.Tensor) -> torch.Tensor:
    """K-wise rankings as all C(K,2) pairs, each weighted 1/C(K,2) (Ouyang et al. 2022).

    Args:
        returns: (B, K) predicted returns, each row ordered best first.

    Returns:
        Scalar mean over rankings of the mean pairwise Bradley-Terry loss.
    """
    k = returns.shape[1]
    i, j = torch.triu_indices(k, k, offset=1)
    diff = returns[:, i] - returns[:, j]  # (B, C(K,2)), better minus worse
    return F.softplus(-diff).mean()


@dataclass(frozen=True)
class PreferenceLoss:
    """The one loss object the reward trainer uses for clips and for text.

    Attributes:
        noise_eps: label-noise probability in the Bradley-Terry model (Christiano used 0.1).
    """

    noise_eps: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.noise_eps < 1.0:
            raise PrefrlError(f"`noise_eps` must be in [0, 1), got {self.noise_eps}")

    def __call__(
        self,
        ret_left: torch.Tensor,
        ret_right: torch.Tensor,
        label: torch.Tensor,
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return bradley_terry_loss(ret_left, ret_right, label, weight, self.noise_eps)

    def probability(self, ret_left: torch.Tensor, ret_right: torch.Tensor) -> torch.Tensor:
        return preference_probability(ret_left, ret_right, self.noise_eps)
