"""Per-step reward networks and the registry that makes them swappable.

Every net maps a batch of clips to per-step rewards: ``forward(batch) -> (B, T)``,
where ``batch`` is a dict of tensors with leading (B, T) dimensions (``obs``,
``acts`` for control). The ensemble, trainer, loss and query selection only see
that contract, so a CNN on frames (Atari) or a transformer on tokens (text)
plugs in by registering a builder under a new ``kind``.

Example:
    >>> spec = InputSpec(obs_shape=(3,), act_shape=(1,))
    >>> net = build_reward_net(RewardNetConfig(kind="mlp", hidden=(8,)), spec)
    >>> net({"obs": torch.zeros(2, 5, 3), "acts": torch.zeros(2, 5, 1)}).shape
    torch.Size([2, 5])
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from prefrl.types import PrefrlError


@dataclass(frozen=True)
class InputSpec:
    """What the reward model reads, saved with every checkpoint.

    Attributes:
        obs_shape: shape of one observation (no batch or time dims).
        act_shape: shape of one action; () for discrete actions.
        act_n: number of discrete actions (one-hot encoded), or None for continuous.
        obs_dtype: numpy dtype name of observations ("float32", "uint8" for frames, "int64" for tokens).
    """

    obs_shape: tuple[int, ...]
    act_shape: tuple[int, ...] = ()
    act_n: int | None = None
    obs_dtype: str = "float32"

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> InputSpec:
        return InputSpec(
            obs_shape=tuple(d["obs_shape"]),
            act_shape=tuple(d["act_shape"]),
            act_n=d.get("act_n"),
            obs_dtype=d.get("obs_dtype", "float32"),
        )


@dataclass(frozen=True)
class RewardNetConfig:
    """Architecture of one ensemble member."""

    kind: str = "mlp"
    """Registered net kind: `mlp` (vector obs), `cnn` (stacked frames), `transformer` (tokens)."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden layer widths of the MLP (and of the CNN's head)."""
    dropout: float = 0.0
    """Dropout probability after each hidden layer (Christiano et al. used 0.5 on Atari)."""
    use_actions: bool = True
    """Feed actions to the net (r(o, a)); False gives a state-only reward r(o)."""
    options: dict = field(default_factory=dict)
    """Extra options a registered net kind reads (e.g. CNN channels)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.dropout < 1.0:
            raise PrefrlError(f"`dropout` must be in [0, 1), got {self.dropout}")
        _import_optional_kinds(self.kind)
        if self.kind not in REWARD_NETS:
            close = difflib.get_close_matches(self.kind, list(REWARD_NETS), n=3)
            hint = f"; did you mean {', '.join(f'`{c}`' for c in close)}?" if close else ""
            raise PrefrlError(f"unknown reward net kind `{self.kind}` (known: {sorted(REWARD_NETS)}){hint}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @staticmethod
    def from_dict(d: dict) -> RewardNetConfig:
        d = dict(d)
        d["hidden"] = tuple(d.get("hidden", (64, 64)))
        return RewardNetConfig(**d)


NetBuilder = Callable[[RewardNetConfig, InputSpec], nn.Module]
REWARD_NETS: dict[str, NetBuilder] = {}


def register_reward_net(kind: str) -> Callable[[NetBuilder], NetBuilder]:
    """Decorator: register a builder ``(config, spec) -> nn.Module`` under ``kind``."""

    def deco(fn: NetBuilder) -> NetBuilder:
        REWARD_NETS[kind] = fn
        return fn

    return deco


def build_reward_net(cfg: RewardNetConfig, spec: InputSpec) -> nn.Module:
    return REWARD_NETS[cfg.kind](cfg, spec)


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int, dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.LeakyReLU(0.01)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        d = h
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


def encode_actions(acts: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """(B, T, *act_shape) -> (B, T, A) float: one-hot for discrete actions."""
    if spec.act_n is not None:
        return nn.functional.one_hot(acts.long().reshape(acts.shape[:2]), spec.act_n).float()
    return acts.float().reshape(*acts.shape[:2], -1)


def encode_actions_np(acts: np.ndarray, spec: InputSpec) -> np.ndarray:
    """(B, *act_shape) -> (B, A) float32, the numpy twin of ``encode_actions`` for one step."""
    if spec.act_n is not None:
        return np.eye(spec.act_n, dtype=np.float32)[acts.astype(np.int64).reshape(len(acts))]
    return acts.astype(np.float32).reshape(len(acts), -1)


class MLPRewardNet(nn.Module):
    """r(o, a): an MLP on flattened observations and (one-hot or continuous) actions."""

    def __init__(self, cfg: RewardNetConfig, spec: InputSpec):
        super().__init__()
        self.spec = spec
        self.use_actions = cfg.use_actions
        obs_dim = int(torch.tensor(spec.obs_shape).prod().item()) if spec.obs_shape else 1
        act_dim = 0
        if cfg.use_actions:
            act_dim = spec.act_n if spec.act_n is not None else int(torch.tensor(spec.act_shape).prod().item() or 1)
        self.body = mlp(obs_dim + act_dim, cfg.hidden, 1, cfg.dropout)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        obs = batch["obs"]
        b, t = obs.shape[:2]
        x = obs.float().reshape(b, t, -1)  # (B, T, obs_dim)
        if self.use_actions:
            x = torch.cat([x, encode_actions(batch["acts"], self.spec)], dim=-1)
        return self.body(x).squeeze(-1)  # (B, T)


@register_reward_net("mlp")
def _build_mlp(cfg: RewardNetConfig, spec: InputSpec) -> nn.Module:
    return MLPRewardNet(cfg, spec)


_OPTIONAL_KIND_MODULES = {"cnn": "prefrl.reward.cnn", "transformer": "prefrl.text.model"}


def _import_optional_kinds(kind: str) -> None:
    """Import the module that registers an optional net kind (CNN, text transformer) on first use."""
    if kind in REWARD_NETS or kind not in _OPTIONAL_KIND_MODULES:
        return
    import importlib

    try:
        importlib.import_module(_OPTIONAL_KIND_MODULES[kind])
    except ImportError as e:
        raise PrefrlError(f"reward net kind `{kind}` needs an optional dependency: {e}") from e
