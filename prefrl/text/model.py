"""The text reward model: a transformer with a scalar head, trained by the core.

A completion is a one-step clip: its model inputs are
``{"input_ids": (N, 1, L), "attention_mask": (N, 1, L)}`` (prompt + completion,
right-padded, cut from the left to keep the completion), and each ensemble member is
a ``transformers.AutoModelForSequenceClassification`` with ``num_labels=1`` returning
(B, 1). So ``RewardEnsemble``, ``RewardTrainer``, ``PreferenceLoss`` and query
selection serve text unchanged.

Each member is a Hugging Face model, so export is ``save_pretrained``: the directory
loads with ``AutoModelForSequenceClassification.from_pretrained`` and ``AutoTokenizer``,
as TRL's reward, GRPO and RLOO trainers do. The ensemble's normalisation (reference
completions average 0, std ``target_std``; Ziegler et al. 2019) is folded into the
exported head: its scale into the ``score`` weights, its shift into a bias when the
head has one, else recorded as ``prefrl_reward_offset`` in ``config.json``.

Example:
    >>> rm = TextRewardModel.load("runs/demo/reward")  # doctest: +SKIP
    >>> rm.score(["The soup"], [" was great."])  # doctest: +SKIP
    array([1.7], dtype=float32)
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from prefrl.core.ensemble import RewardEnsemble
from prefrl.core.nets import InputSpec, RewardModelConfig, register_reward_net
from prefrl.text import require_transformers
from prefrl.text.lm import encode, pad
from prefrl.core.types import PrefrlError

TEXT_REWARD_FORMAT = "prefrl.text_reward/1"
ENSEMBLE_FILE = "reward.pt"
TOKENIZER_DIR = "tokenizer"


def _hf_config(d: dict):
    require_transformers()
    from transformers import AutoConfig

    d = dict(d)
    model_type = d.pop("model_type", None)
    if model_type is None:
        raise PrefrlError("reward net option `hf_config` has no `model_type`")
    return AutoConfig.for_model(model_type, **d)


class TransformerRewardNet(nn.Module):
    """r(prompt + completion): a sequence-classification transformer with one output.

    Reads ``input_ids`` and ``attention_mask`` of shape (B, T, L) (T = 1 for text) and
    returns (B, T) rewards, pooled by the model at the last non-pad token.
    """

    def __init__(self, hf_config: dict):
        super().__init__()
        require_transformers()
        from transformers import AutoModelForSequenceClassification

        config = _hf_config(hf_config)
        if config.num_labels != 1:
            raise PrefrlError(f"a text reward model needs `num_labels=1`, the config has {config.num_labels}")
        if config.pad_token_id is None:
            raise PrefrlError("a text reward model needs `pad_token_id` in its config (pooling finds the last non-pad token)")
        self.model = AutoModelForSequenceClassification.from_config(config)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        b, t, length = ids.shape
        ids, mask = ids.reshape(b * t, length), mask.reshape(b * t, length)  # (B*T, L)
        keep = int(mask.sum(-1).max().clamp_min(1))  # right padding: trailing all-pad columns add nothing
        out = self.model(input_ids=ids[:, :keep], attention_mask=mask[:, :keep]).logits  # (B*T, 1)
        return out.reshape(b, t)


@register_reward_net("transformer")
def _build_transformer(cfg: RewardModelConfig, spec: InputSpec) -> nn.Module:
    if "hf_config" not in cfg.options:
        raise PrefrlError(
            "reward net kind `transformer` needs option `hf_config` (a Hugging Face config dict); "
            "build text reward models with `prefrl.text.model.TextRewardModel.create`"
        )
    return TransformerRewardNet(cfg.options["hf_config"])


def encode_texts(tokenizer, prompts: list[str], completions: list[str], max_length: int) -> dict[str, np.ndarray]:
    """Model inputs of N one-step clips: (N, 1, L) int64 ``input_ids`` and ``attention_mask``.

    Prompt and completion are encoded separately and joined; the joint sequence keeps its
    last ``max_length`` tokens (so the completion is always seen) and is right-padded.
    """
    if len(prompts) != len(completions):
        raise PrefrlError(f"{len(prompts)} prompts but {len(completions)} completions")
    seqs = [(p + c)[-max_length:] or [tokenizer.eos_token_id] for p, c in zip(encode(tokenizer, prompts), encode(tokenizer, completions))]
    ids, mask = pad(seqs, tokenizer.pad_token_id, left=False)  # (N, L)
    return {"input_ids": ids.numpy()[:, None], "attention_mask": mask.numpy()[:, None]}


class TextRewardModel:
    """A reward ensemble over text plus the tokenizer that feeds it.

    Args:
        ensemble: members of kind ``transformer``.
        tokenizer: a Hugging Face tokenizer (pad token set).
        max_length: longest prompt + completion in tokens.
    """

    def __init__(self, ensemble: RewardEnsemble, tokenizer, max_length: int):
        self.ensemble = ensemble
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.extra: dict = {}

    @staticmethod
    def create(
        init_from: str | Path,
        n_members: int = 1,
        target_std: float = 1.0,
        max_length: int | None = None,
        pretrained: bool = True,
    ) -> TextRewardModel:
        """Members initialised from a local causal-LM (or classifier) checkpoint.

        Args:
            init_from: local Hugging Face checkpoint directory (model + tokenizer), e.g. the SFT model.
            n_members: ensemble size; members share the backbone weights and get their own head.
            target_std: std of the normalised reward.
            max_length: tokens kept per text (default: the model's positions).
            pretrained: load the checkpoint's weights (False: its architecture at random init).
        """
        require_transformers()
        from transformers import AutoConfig, AutoModelForSequenceClassification

        from prefrl.text.lm import load_tokenizer

        path = Path(init_from)
        tok = load_tokenizer(path)
        config = AutoConfig.from_pretrained(path, local_files_only=True, num_labels=1)
        config.pad_token_id = tok.pad_token_id
        limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None) or 512
        max_length = int(max_length or limit)
        if max_length > limit:
            raise PrefrlError(f"`max_length` {max_length} exceeds the model's {limit} positions")
        hf = config.to_dict()
        spec = InputSpec(obs_shape=(max_length,), obs_dtype="int64")
        cfg = RewardModelConfig(kind="transformer", hidden=(), use_actions=False, members=n_members, target_std=target_std,
                                options={"hf_config": hf})
        ens = RewardEnsemble(spec, cfg)
        if pretrained:
            src = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True, config=config)
            backbone = {k: v for k, v in src.state_dict().items() if not _is_head(k)}
            for m in ens.members:
                missing, unexpected = m.model.load_state_dict(backbone, strict=False)
                assert not unexpected, unexpected
                assert all(_is_head(k) for k in missing), missing
        return TextRewardModel(ens, tok, max_length)

    # ---- inputs and scores ------------------------------------------------------------------
    def encode(self, prompts: list[str], completions: list[str]) -> dict[str, np.ndarray]:
        """(N, 1, L) model inputs of prompt + completion texts (see ``encode_texts``)."""
        return encode_texts(self.tokenizer, prompts, completions, self.max_length)

    def score(self, prompts: list[str], completions: list[str], normalised: bool = True, batch_size: int = 64) -> np.ndarray:
        """(N,) float32 reward of each completion: member mean, normalised by default."""
        if not completions:
            return np.zeros(0, np.float32)
        out = []
        for s in range(0, len(completions), batch_size):
            inputs = self.encode(prompts[s : s + batch_size], completions[s : s + batch_size])
            out.append(self.ensemble.predict_clip_returns(inputs, normalised=normalised, batch_size=batch_size))
        return np.concatenate(out).mean(axis=1)

    def normalise_on(self, prompts: list[str], completions: list[str]) -> None:
        """Set normalisation so these (reference) completions average 0 with std ``target_std``."""
        self.ensemble.update_normalisation(self.encode(prompts, completions), batch_size=64)

    # ---- files --------------------------------------------------------------------------
    def save(self, path: str | Path, extra: dict | None = None) -> None:
        """Write ``reward.pt`` (core ensemble checkpoint) and ``tokenizer/`` into directory ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        info = {"format": TEXT_REWARD_FORMAT, "max_length": self.max_length, **(extra or {})}
        self.ensemble.save(path / ENSEMBLE_FILE, extra=info)
        self.tokenizer.save_pretrained(path / TOKENIZER_DIR)

    @staticmethod
    def load(path: str | Path) -> TextRewardModel:
        """Load a directory written by ``save`` (``prefrl text reward``)."""
        require_transformers()
        from prefrl.text.lm import load_tokenizer

        path = Path(path)
        if not (path / ENSEMBLE_FILE).is_file():
            raise PrefrlError(f"{path}: not a text reward model directory (no `{ENSEMBLE_FILE}`; write one with `prefrl text reward`)")
        ens = RewardEnsemble.load(path / ENSEMBLE_FILE)
        extra = getattr(ens, "extra", {})
        if extra.get("format") != TEXT_REWARD_FORMAT or ens.cfg.kind != "transformer":
            raise PrefrlError(f"{path}: `{ENSEMBLE_FILE}` is not a text reward model (format {extra.get('format')!r})")
        rm = TextRewardModel(ens, load_tokenizer(path / TOKENIZER_DIR), extra["max_length"])
        rm.extra = extra
        return rm

    def export_hf(self, path: str | Path, member: int = 0) -> Path:
        """Save one member in Hugging Face format (model + tokenizer), normalisation folded in.

        The directory loads with ``AutoModelForSequenceClassification.from_pretrained(path)``
        (``num_labels=1``) and ``AutoTokenizer.from_pretrained(path)``, the way TRL loads reward
        models; its logits equal ``score(..., normalised=True)`` of that member, up to
        ``config.prefrl_reward_offset`` when the head has no bias.
        """
        if not 0 <= member < self.ensemble.n_members:
            raise PrefrlError(f"`member` must be in [0, {self.ensemble.n_members - 1}], got {member}")
        path = Path(path)
        model = copy.deepcopy(self.ensemble.members[member].model).cpu()
        mean = float(self.ensemble.norm_mean[member])
        scale = self.ensemble.target_std / float(self.ensemble.norm_std[member])
        head = _head(model)
        offset = -mean * scale
        with torch.no_grad():
            head.weight.mul_(scale)
            if head.bias is not None:
                head.bias.mul_(scale).add_(offset)
                offset = 0.0
        model.config.prefrl_reward_offset = offset
        model.config.prefrl_member = member
        model.config.architectures = [type(model).__name__]
        model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        (path / "prefrl_reward.json").write_text(
            json.dumps({"member": member, "offset": offset, "target_std": self.ensemble.target_std, **self.extra}, indent=2, default=str)
        )
        return path


_HEAD_NAMES = ("score", "classifier")


def _is_head(key: str) -> bool:
    return key.split(".")[0] in _HEAD_NAMES


def _head(model: nn.Module) -> nn.Linear:
    for name in _HEAD_NAMES:
        head = getattr(model, name, None)
        if isinstance(head, nn.Linear):
            return head
    raise PrefrlError(f"cannot find the scalar head of {type(model).__name__} (looked for {_HEAD_NAMES})")
