"""A small CNN reward net on stacked frames (Christiano et al. 2017, appendix A.2), kind ``cnn``.

Registered with ``register_reward_net("cnn")``; ``prefrl.core.nets`` imports this module
the first time a config names the kind. It follows the net contract: a dict of tensors with
leading (B, T) dims in, per-step rewards (B, T) out, so the ensemble, trainer, loss and query
selection take it unchanged.

Architecture (the paper's, defaults of ``CNNOptions``): frames scaled to [0, 1], four
convolutions of 16 filters, kernels 7/5/3/3, strides 3/2/1/1, each followed by batch norm,
leaky ReLU (0.01) and dropout; then a fully connected layer of 64 (``hidden``) and a scalar.
On 84x84x4 inputs that is about 3.2 M multiply-adds per frame.

Example:
    >>> from prefrl.core.nets import InputSpec, RewardModelConfig, build_reward_net
    >>> spec = InputSpec(obs_shape=(4, 84, 84), act_shape=(), act_n=6, obs_dtype="uint8")
    >>> net = build_reward_net(RewardModelConfig(kind="cnn", hidden=(64,), use_actions=False), spec)
    >>> net({"obs": torch.zeros(2, 25, 4, 84, 84, dtype=torch.uint8), "acts": torch.zeros(2, 25)}).shape
    torch.Size([2, 25])
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from prefrl.core.nets import InputSpec, RewardModelConfig, encode_actions, mlp, register_reward_net
from prefrl.core.types import PrefrlError


PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}
"""``CNNOptions.precision`` names and the dtype the convolutions compute in."""


@dataclass(frozen=True)
class CNNOptions:
    """``RewardModelConfig.options`` read by the ``cnn`` kind (preset: ``[reward_model.options]``)."""

    channels: tuple[int, ...] = (16, 16, 16, 16)
    """Filters of each convolution (Christiano et al.: 16 in all four)."""
    kernels: tuple[int, ...] = (7, 5, 3, 3)
    """Kernel size of each convolution."""
    strides: tuple[int, ...] = (3, 2, 1, 1)
    """Stride of each convolution."""
    batch_norm: bool = True
    """Batch norm after each convolution (the paper's choice)."""
    conv_dropout: float | None = None
    """Dropout after each convolution; None takes the config's `dropout` (paper: 0.5)."""
    channels_last: bool | None = None
    """Observation layout: None guesses (H, W, C) when the last dim is the smallest, else (C, H, W)."""
    precision: str = "float32"
    """Arithmetic of the convolutions: "float32", or "bfloat16" (mixed precision: weights, the head,
    rewards and gradients of the weights stay float32; frames go to bfloat16 straight from uint8, which
    is exact, and the convolutions and batch norm run in bfloat16). On CPUs with native bfloat16
    (AVX512-BF16 or AMX) a forward and backward pass takes less than half the time, a whole refit
    of pong-quick ~2/3; elsewhere it is emulated and slower (a warning says so)."""

    def __post_init__(self) -> None:
        if not (len(self.channels) == len(self.kernels) == len(self.strides)) or not self.channels:
            raise PrefrlError(
                f"cnn options: `channels`, `kernels` and `strides` need the same non-zero length, "
                f"got {len(self.channels)}, {len(self.kernels)}, {len(self.strides)}"
            )
        if self.conv_dropout is not None and not 0.0 <= self.conv_dropout < 1.0:
            raise PrefrlError(f"cnn options: `conv_dropout` must be in [0, 1), got {self.conv_dropout}")
        if self.precision not in PRECISIONS:
            close = difflib.get_close_matches(str(self.precision), list(PRECISIONS), n=1)
            hint = f"; did you mean `{close[0]}`?" if close else ""
            raise PrefrlError(f"cnn options: `precision` must be one of {', '.join(PRECISIONS)}, got `{self.precision}`{hint}")

    @staticmethod
    def from_dict(d: dict) -> CNNOptions:
        names = [f.name for f in dataclasses.fields(CNNOptions)]
        for key in d:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=3)
                hint = f"; did you mean {', '.join(f'`{c}`' for c in close)}?" if close else ""
                raise PrefrlError(f"cnn options: unknown key `{key}` (known: {', '.join(names)}){hint}")
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return CNNOptions(**d)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 convolutions natively (oneDNN's check: AVX512-BF16 or AMX);
    True when torch cannot tell."""
    check = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else True
    except RuntimeError:
        return True


@functools.cache
def _warn_emulated_bf16() -> None:
    warnings.warn("cnn: `precision = \"bfloat16\"` on a CPU without native bfloat16 (AVX512-BF16 or AMX): "
                  "it is emulated and likely slower than float32; set [reward_model.options] precision = \"float32\"",
                  UserWarning, stacklevel=3)


def _layout(obs_shape: tuple[int, ...], channels_last: bool | None) -> tuple[int, int, int, bool]:
    """(C, H, W, channels_last) of an observation shape: (H, W), (C, H, W) or (H, W, C)."""
    if len(obs_shape) == 2:
        return 1, obs_shape[0], obs_shape[1], False
    if len(obs_shape) != 3:
        raise PrefrlError(f"the `cnn` reward net reads image observations (H, W), (C, H, W) or (H, W, C), got shape {obs_shape}")
    last = channels_last if channels_last is not None else obs_shape[-1] < obs_shape[0]
    if last:
        h, w, c = obs_shape
    else:
        c, h, w = obs_shape
    return c, h, w, last


class CNNRewardNet(nn.Module):
    """r(o) or r(o, a) on image observations: convolutions, then an MLP head.

    Args:
        cfg: ``hidden`` are the head's widths, ``dropout`` the head's (and by default the
            convolutions') dropout, ``use_actions`` appends the one-hot action to the features.
        spec: observation shape (image), action shape, dtype (uint8 frames are scaled by 1/255).
    """

    def __init__(self, cfg: RewardModelConfig, spec: InputSpec):
        super().__init__()
        opts = CNNOptions.from_dict(dict(cfg.options))
        self.spec = spec
        self.use_actions = cfg.use_actions
        c, h, w, self.channels_last = _layout(tuple(spec.obs_shape), opts.channels_last)
        self.scale = 1.0 / 255.0 if spec.obs_dtype == "uint8" else 1.0
        self.compute_dtype = PRECISIONS[opts.precision]
        if self.compute_dtype == torch.bfloat16 and not cpu_has_native_bf16():
            _warn_emulated_bf16()
        in_c = c
        drop = cfg.dropout if opts.conv_dropout is None else opts.conv_dropout
        layers: list[nn.Module] = []
        for out, k, s in zip(opts.channels, opts.kernels, opts.strides):
            layers.append(nn.Conv2d(c, out, k, s, bias=not opts.batch_norm))
            if opts.batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.LeakyReLU(0.01, inplace=True))  # in place: one activation less kept per layer
            if drop > 0:
                layers.append(nn.Dropout(drop))
            c = out
        layers.append(nn.Flatten())
        self.conv = nn.Sequential(*layers)
        with torch.no_grad():
            try:
                feat = self.conv.eval()(torch.zeros(1, in_c, h, w)).shape[1]
            except RuntimeError as e:
                raise PrefrlError(f"cnn: observations of {h}x{w} are too small for kernels {opts.kernels} / strides {opts.strides} ({e})") from e
        self.conv.train()
        self.conv.to(memory_format=torch.channels_last)
        act_dim = 0
        if cfg.use_actions:
            act_dim = spec.act_n if spec.act_n is not None else int(torch.tensor(spec.act_shape).prod().item() or 1)
        self.head = mlp(feat + act_dim, tuple(cfg.hidden), 1, cfg.dropout)

    EVAL_CHUNK = 256
    """Frames per forward pass in eval mode: bounds the float copies of large batches
    (256 clips x 25 steps of 4x84x84 would be 720 MB as float32; a chunk of 256 frames is 29 MB)."""

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        obs = batch["obs"]
        b, t = obs.shape[:2]
        frames = obs.reshape(b * t, *obs.shape[2:])  # (B*T, *obs_shape)
        acts = encode_actions(batch["acts"], self.spec).reshape(b * t, -1) if self.use_actions else None
        n, c = len(frames), self.EVAL_CHUNK
        if self.training or n <= c:  # batch norm in training mode needs the whole batch at once
            return self._rewards(frames, acts).reshape(b, t)
        parts = [self._rewards(frames[s : s + c], None if acts is None else acts[s : s + c]) for s in range(0, n, c)]
        return torch.cat(parts).reshape(b, t)  # (B, T)

    @staticmethod
    def stack_torch(members: list[CNNRewardNet]) -> FusedCNNMembers | None:
        """The members as one net for scoring (``FusedCNNMembers``), or None where they cannot be fused:
        bfloat16, or members of different shapes."""
        first = members[0]
        if any(net.compute_dtype != torch.float32 for net in members):
            return None
        shapes = [[tuple(p.shape) for p in net.parameters()] for net in members]
        same = all(s == shapes[0] for s in shapes) and all(
            (net.use_actions, net.channels_last, net.scale) == (first.use_actions, first.channels_last, first.scale)
            for net in members)
        return FusedCNNMembers(members) if same else None

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, T, F) the convolutions' flattened output per step (the head's input, actions left out):
        the space in which the novelty query measures distances. Use under no_grad and eval mode."""
        obs = batch["obs"]
        b, t = obs.shape[:2]
        frames = obs.reshape(b * t, *obs.shape[2:])
        c = self.EVAL_CHUNK
        return torch.cat([self._conv_features(frames[s : s + c]) for s in range(0, len(frames), c)]).reshape(b, t, -1)

    INPUT_CHUNK = 64
    """Frames converted to float at a time for the first convolution (7 MB each on 4x84x84): as fast
    as 256 at a time (the conversion is memory-bound either way) and a quarter of the memory."""

    def _rewards(self, frames: torch.Tensor, acts: torch.Tensor | None) -> torch.Tensor:
        """(N, *obs_shape) frames and (N, A) encoded actions -> (N,) rewards.

        The 1/255 scale of uint8 frames is folded into the first convolution's weights
        (conv(s x) = (s W) * x), so frames are converted to float once and never rescaled,
        ``INPUT_CHUNK`` frames at a time: the input copies were ~1/3 of a refit's time. In
        training, ``_FrameConv`` keeps the uint8 frames for the weight gradient instead of
        their float copy (4x less memory for the largest tensor of a refit step).
        """
        feats = self._conv_features(frames)  # (N, F)
        if acts is not None:
            feats = torch.cat([feats, acts], dim=-1)
        return self.head(feats).squeeze(-1)  # (N,)

    def _conv_features(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, *obs_shape) frames -> (N, F) flattened convolution features."""
        x = _nchw_view(frames, self.channels_last)
        first = self.conv[0]
        weight = first.weight * self.scale if self.scale != 1.0 else first.weight
        y = _FrameConv.apply(x, weight, first.bias, first.stride, first.padding, self.INPUT_CHUNK, self.compute_dtype)
        with torch.autocast(y.device.type, dtype=self.compute_dtype, enabled=self.compute_dtype != torch.float32):
            feats = self.conv[1:](y)
        return feats.float()  # the head, rewards and the loss in float32 (a no-op in float32)


class FusedCNNMembers:
    """Several ``CNNRewardNet`` members as one net for scoring (eval mode, no grad): a snapshot of their weights.

    The members read the same frames, so their first convolutions become one of ``M x 16`` filters
    over frames converted to float once; the later convolutions are grouped (``groups = M``), batch
    norm is folded into the convolutions (running statistics, as in eval mode), and the heads run
    as one batched matmul per layer. The same rewards as the members' eval forward passes to float
    rounding, ~1.4-1.6x faster for 3 members of ``pong-quick``'s CNN (per 1,024 frames: 192 against
    317 ms on the idle machine, 128 frames a pass; 288 against 403 ms beside other jobs, 64 frames a
    pass). Built by ``CNNRewardNet.stack_torch``; call ``(batch) -> (B, T, M)`` raw rewards.
    """

    CHUNK = 64
    """Frames per pass: 64 (7 MB of float frames). 128 scored ~5% faster per frame, but its larger
    transient tensors raised the learned arm's peak RSS on ``pong-quick`` seed 1 from 864 to 963 MB
    (the allocator keeps what they leave behind)."""

    def __init__(self, members: list[CNNRewardNet]):
        first = members[0]
        self.m = len(members)
        self.spec, self.use_actions, self.channels_last = first.spec, first.use_actions, first.channels_last
        self.convs: list[tuple[torch.Tensor, torch.Tensor, tuple, tuple, int]] = []  # weight, bias, stride, padding, groups
        layers = [[mod for mod in net.conv if isinstance(mod, (nn.Conv2d, nn.BatchNorm2d))] for net in members]
        with torch.no_grad():
            depth = 0
            for k in range(len(layers[0])):
                if not isinstance(layers[0][k], nn.Conv2d):
                    continue
                ws, bs = [], []
                for net, mods in zip(members, layers):
                    conv = mods[k]
                    w = conv.weight.float() * (net.scale if depth == 0 else 1.0)
                    b = conv.bias.float() if conv.bias is not None else torch.zeros(len(w))
                    bn = mods[k + 1] if k + 1 < len(mods) and isinstance(mods[k + 1], nn.BatchNorm2d) else None
                    if bn is not None:  # y = (conv(x) - mean) / sqrt(var + eps) * gamma + beta
                        g = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                        w, b = w * g[:, None, None, None], (b - bn.running_mean) * g + bn.bias
                    ws.append(w)
                    bs.append(b)
                conv = layers[0][k]
                weight = torch.cat(ws).contiguous(memory_format=torch.channels_last)
                self.convs.append((weight, torch.cat(bs), conv.stride, conv.padding, 1 if depth == 0 else self.m))
                depth += 1
            heads = [[mod for mod in net.head if isinstance(mod, nn.Linear)] for net in members]
            self.heads = [(torch.stack([h[d].weight.T for h in heads]).float(), torch.stack([h[d].bias for h in heads]).float()[:, None])
                          for d in range(len(heads[0]))]  # (M, in, out), (M, 1, out)

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        obs = batch["obs"]
        b, t = obs.shape[:2]
        frames = obs.reshape(b * t, *obs.shape[2:])
        acts = encode_actions(batch["acts"], self.spec).reshape(b * t, -1) if self.use_actions else None
        with torch.no_grad():
            parts = [self._rewards(frames[s : s + self.CHUNK], None if acts is None else acts[s : s + self.CHUNK])
                     for s in range(0, len(frames), self.CHUNK)]
        out = torch.cat(parts) if parts else torch.zeros(0, self.m)
        return out.reshape(b, t, self.m)

    def _rewards(self, frames: torch.Tensor, acts: torch.Tensor | None) -> torch.Tensor:
        x = _to_float_nhwc(_nchw_view(frames, self.channels_last), torch.float32)
        for w, bias, stride, padding, groups in self.convs:
            x = F.leaky_relu(F.conv2d(x, w, bias, stride, padding, 1, groups), 0.01)
        h = x.reshape(len(x), self.m, -1).transpose(0, 1)  # (M, N, F): each member's flattened (C, H, W) features
        if acts is not None:
            h = torch.cat([h, acts.expand(self.m, *acts.shape)], dim=-1)
        for d, (w, bias) in enumerate(self.heads):
            h = torch.baddbmm(bias, h, w)
            if d < len(self.heads) - 1:
                h = F.leaky_relu(h, 0.01)
        return h[..., 0].T  # (N, M)


def _nchw_view(frames: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """(N, C, H, W) view of (N, H, W), (N, C, H, W) or, with ``channels_last``, (N, H, W, C) frames."""
    if frames.dim() == 3:
        return frames.unsqueeze(1)  # (N, 1, H, W)
    return frames.permute(0, 3, 1, 2) if channels_last else frames  # a view of NHWC memory, or as it is


def _to_float_nhwc(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A copy of (N, C, H, W) frames in ``dtype`` with NHWC memory (faster convolutions on CPU), laid out
    on the uint8 frames before the float copy (a no-op where they already are, as the store builds them)."""
    return x.contiguous(memory_format=torch.channels_last).to(dtype)


def _float_chunks(x: torch.Tensor, chunk: int, dtype: torch.dtype) -> Iterator[tuple[int, torch.Tensor]]:
    """(start, NHWC-layout copy in ``dtype``) of ``chunk`` frames at a time of uint8 (or float) frames."""
    for s in range(0, len(x), chunk):
        yield s, _to_float_nhwc(x[s : s + chunk], dtype)


class _FrameConv(torch.autograd.Function):
    """The first convolution over raw frames, converted to float a chunk at a time.

    Autograd would keep the whole float copy of the batch for the weight gradient (90 MB for
    800 stacked 84x84 frames); this keeps the frames as they came (uint8: a quarter of that)
    and converts them again, chunk by chunk, in the backward pass. No gradient flows to the
    frames themselves. Frames, weight and bias are converted to ``dtype`` (float32 or bfloat16:
    both hold the integers 0-255 exactly); the output is in ``dtype``, while the weight and bias
    gradients are summed in float32 and returned in their parameters' dtype.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, chunk, dtype):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.conf = (bias is not None, stride, padding, chunk, dtype)
        w, b = weight.to(dtype), None if bias is None else bias.to(dtype)
        parts = [F.conv2d(xf, w, b, stride, padding) for _, xf in _float_chunks(x, chunk, dtype)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        has_bias, stride, padding, chunk, dtype = ctx.conf
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        if grad_w is not None:
            for s, xf in _float_chunks(x, chunk, dtype):
                grad_w += torch.nn.grad.conv2d_weight(xf, weight.shape, grad[s : s + chunk], stride, padding)
            grad_w = grad_w.to(weight.dtype)
        grad_b = grad.sum(dim=(0, 2, 3), dtype=torch.float32) if has_bias and ctx.needs_input_grad[2] else None
        return None, grad_w, grad_b, None, None, None, None


@register_reward_net("cnn")
def _build_cnn(cfg: RewardModelConfig, spec: InputSpec) -> nn.Module:
    return CNNRewardNet(cfg, spec)
