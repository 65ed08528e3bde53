"""Settings of the text components, kept free of torch so that the CLI starts fast.

Each dataclass belongs to one component (``lm``, ``sft``, ``ppo``, ``dpo``) and is
re-exported there; tyro turns the field docstrings into ``--help`` text. The reward model
is fit with the core ``RewardTrainConfig`` itself; ``text_reward_train`` gives it the
defaults that suit a small transformer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from prefrl.core.types import PrefrlError

if TYPE_CHECKING:
    from prefrl.core.trainer import RewardTrainConfig

TEXT_REWARD_TRAIN: dict[str, Any] = {"lr": 2e-4, "epochs": 10, "batch_size": 32, "patience": 3, "l2": 1e-6, "noise_eps": 0.05}
"""Where the text reward fit departs from the core ``RewardTrainConfig`` defaults (the rest,
e.g. the 1/e held-out fraction, are the core's)."""


def text_reward_train(**overrides: Any) -> RewardTrainConfig:
    """The core ``RewardTrainConfig`` with ``TEXT_REWARD_TRAIN``'s defaults, then ``overrides``.

    Example:
        >>> text_reward_train(lr=3e-4).batch_size
        32
    """
    from prefrl.core.trainer import RewardTrainConfig

    return RewardTrainConfig(**{**TEXT_REWARD_TRAIN, **overrides})


@dataclass(frozen=True)
class TinyGPTConfig:
    """Size of the from-scratch GPT-2 and its tokenizer."""

    vocab_size: int = 1024
    """BPE vocabulary size (byte alphabet + merges + 2 special tokens); 1024 holds every corpus word whole."""
    n_layer: int = 2
    """Transformer blocks."""
    n_head: int = 4
    """Attention heads."""
    n_embd: int = 128
    """Model width."""
    n_positions: int = 96
    """Longest sequence (prompt + completion) in tokens."""

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise PrefrlError(f"`n_embd` ({self.n_embd}) must be a multiple of `n_head` ({self.n_head})")
        if self.vocab_size < 260:
            raise PrefrlError(f"`vocab_size` must be >= 260 (256 bytes + specials), got {self.vocab_size}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SampleConfig:
    """How completions are sampled."""

    max_new_tokens: int = 24
    """Longest completion in tokens (EOS included)."""
    temperature: float = 1.0
    """Softmax temperature (1 = the model's own distribution; PPO divides its logits by the same value)."""
    top_k: int = 0
    """Keep only the k most likely tokens (0 = all; PPO assumes 0: its log-probs ignore the cut)."""
    max_prompt_tokens: int = 48
    """Prompts are cut to their last this-many tokens."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.max_prompt_tokens < 1:
            raise PrefrlError("`max_new_tokens` and `max_prompt_tokens` must be >= 1")
        if self.temperature <= 0:
            raise PrefrlError(f"`temperature` must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise PrefrlError(f"`top_k` must be >= 0, got {self.top_k}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SFTConfig:
    """How the policy is fine-tuned on demonstrations."""

    epochs: int = 3
    """Passes over the examples."""
    lr: float = 1e-3
    """AdamW peak learning rate (1e-3 suits a tiny model trained from scratch; ~5e-5 a pretrained one)."""
    batch_size: int = 32
    """Examples per step."""
    warmup: float = 0.05
    """Fraction of steps with linear warm-up; then linear decay to 0."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Clip the gradient norm at this value."""
    completion_only: bool = True
    """Train on completion tokens only (prompt tokens masked from the loss)."""
    max_prompt_tokens: int = 48
    """Prompts are cut to their last this-many tokens."""

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise PrefrlError("`epochs` and `batch_size` must be >= 1")
        if self.lr <= 0:
            raise PrefrlError(f"`lr` must be > 0, got {self.lr}")
        if not 0 <= self.warmup < 1:
            raise PrefrlError(f"`warmup` must be in [0, 1), got {self.warmup}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters for text (defaults suit the tiny demo model)."""

    steps: int = 60
    """PPO iterations (one rollout batch + its updates each)."""
    batch_size: int = 64
    """Prompts (completions) per rollout."""
    minibatch_size: int = 16
    """Completions per gradient step."""
    ppo_epochs: int = 4
    """Passes over each rollout batch."""
    lr: float = 3e-5
    """Adam learning rate (policy and value head)."""
    clip_range: float = 0.2
    """PPO ratio clip."""
    clip_range_value: float = 0.2
    """Value-prediction clip around the rollout's values."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    entropy_coef: float = 0.0
    """Entropy bonus weight (0: entropy is only logged)."""
    gamma: float = 1.0
    """Discount over completion tokens."""
    lam: float = 0.95
    """GAE lambda."""
    kl_coef: float = 0.1
    """beta: weight of the per-token KL penalty (the initial value when adaptive)."""
    kl_target: float | None = None
    """Target KL (nats per completion) of the adaptive controller; None = fixed beta."""
    kl_horizon: int = 10000
    """Horizon (completions) of the adaptive controller (Ziegler et al.: 10000)."""
    whiten_advantages: bool = True
    """Normalise advantages over each batch's tokens."""
    grad_clip: float = 1.0
    """Clip gradient norm."""
    missing_eos_penalty: float | None = None
    """Subtract this from the score of completions cut at the length limit (None: no penalty)."""
    score_clip: float | None = 10.0
    """Clip scores to [-c, c] before use (None: no clip)."""
    ptx_coef: float = 0.0
    """PPO-ptx: weight of the LM loss on demonstrations (0: off; needs ptx data)."""
    ptx_batch_size: int = 16
    """Demonstrations per gradient step of the pretraining mix."""

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.minibatch_size < 1 or self.batch_size % self.minibatch_size:
            raise PrefrlError(f"`batch_size` ({self.batch_size}) must be a positive multiple of `minibatch_size` ({self.minibatch_size})")
        if self.steps < 0 or self.ppo_epochs < 1:
            raise PrefrlError("`steps` must be >= 0 and `ppo_epochs` >= 1")
        if self.kl_coef < 0:
            raise PrefrlError(f"`kl_coef` must be >= 0, got {self.kl_coef}")
        if self.kl_target is not None and self.kl_target <= 0:
            raise PrefrlError(f"`kl_target` must be > 0 (or None for a fixed beta), got {self.kl_target}")
        if not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
            raise PrefrlError("`gamma` and `lam` must be in [0, 1]")
        if self.ptx_coef < 0:
            raise PrefrlError(f"`ptx_coef` must be >= 0, got {self.ptx_coef}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DPOConfig:
    """DPO settings."""

    beta: float = 0.1
    """Inverse temperature of the implicit reward (Rafailov et al.: 0.1)."""
    epochs: int = 2
    """Passes over the labeled pairs."""
    lr: float = 5e-5
    """AdamW peak learning rate (linear warm-up then decay)."""
    batch_size: int = 16
    """Pairs per step (chosen and rejected go through the model in one forward pass)."""
    noise_eps: float = 0.0
    """Label-noise probability of the Bradley-Terry model (0 = standard DPO)."""
    warmup: float = 0.1
    """Fraction of steps with linear warm-up."""
    grad_clip: float = 1.0
    """Clip gradient norm."""
    max_prompt_tokens: int = 48
    """Prompts are cut to their last this-many tokens."""
    max_completion_tokens: int = 32
    """Completions are cut to this many tokens (EOS included)."""

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise PrefrlError(f"`beta` must be > 0, got {self.beta}")
        if self.epochs < 1 or self.batch_size < 1:
            raise PrefrlError("`epochs` and `batch_size` must be >= 1")

    def to_dict(self) -> dict:
        return asdict(self)
