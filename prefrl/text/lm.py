"""Causal language models: a tiny GPT-2 made from scratch, local checkpoints, sampling, log-probs.

Any local Hugging Face causal-LM checkpoint directory (``config.json`` + weights +
tokenizer files) works; nothing is downloaded (``local_files_only=True``). The demo
model is made here: a byte-level BPE tokenizer trained with ``tokenizers`` on the
corpus, and a 2-layer GPT-2 (``transformers.GPT2LMHeadModel``) initialised at random.

Conventions used by SFT, PPO and DPO alike:

- a sequence is ``prompt ids + completion ids (+ EOS)``, prompt and completion encoded
  separately (so the completion's tokens are known exactly);
- batches of prompts are left-padded, and position ids are ``cumsum(mask) - 1``, so a
  token's position does not depend on padding (``forward``);
- log-probs of a completion are read from the logits one step earlier.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from prefrl.text import require_transformers
from prefrl.text.config import SampleConfig, TinyGPTConfig
from prefrl.core.types import PrefrlError

PAD_TOKEN = "<|pad|>"
EOS_TOKEN = "<|endoftext|>"


def train_tokenizer(texts: list[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer (GPT-2 style, exact round trip) trained on ``texts``.

    Returns:
        ``transformers.PreTrainedTokenizerFast`` with pad ``<|pad|>`` and eos/bos ``<|endoftext|>``.
    """
    require_transformers()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD_TOKEN, EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD_TOKEN, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN)


def new_tiny_lm(tokenizer, cfg: TinyGPTConfig) -> nn.Module:
    """A randomly initialised GPT-2 sized by ``cfg`` for ``tokenizer``."""
    require_transformers()
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=cfg.n_positions,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return GPT2LMHeadModel(config)


def load_tokenizer(path: str | Path):
    """A tokenizer from a local directory; a missing pad token falls back to EOS."""
    require_transformers()
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise PrefrlError(f"{path}: no such model directory (expected a local Hugging Face checkpoint)")
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as e:
        raise PrefrlError(f"{path}: cannot load a tokenizer from it ({type(e).__name__}: {str(e)[:200]})") from e
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise PrefrlError(f"{path}: the tokenizer has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    return tok


def load_lm(path: str | Path) -> tuple[nn.Module, object]:
    """(causal LM, tokenizer) from a local Hugging Face checkpoint directory, in train mode."""
    require_transformers()
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(Path(path), local_files_only=True)
    except Exception as e:
        raise PrefrlError(f"{path}: cannot load a causal language model from it ({type(e).__name__}: {str(e)[:200]})") from e
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    model.train()
    return model, tok


def save_lm(model: nn.Module, tokenizer, path: str | Path, info: dict | None = None) -> None:
    """Save model and tokenizer with ``save_pretrained`` (safetensors), plus ``prefrl.json``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    if info is not None:
        (path / "prefrl.json").write_text(json.dumps(info, indent=2, default=str))


def max_positions(model: nn.Module) -> int | None:
    cfg = model.config
    return getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)


# ---- encoding -------------------------------------------------------------------------------
def encode(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, no special tokens added."""
    return [list(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def encode_prompts(tokenizer, prompts: list[str], max_len: int) -> list[list[int]]:
    """Prompt ids, keeping the last ``max_len`` tokens; an empty prompt becomes ``[eos]``."""
    out = []
    for ids in encode(tokenizer, prompts):
        ids = ids[-max_len:] if ids else [tokenizer.eos_token_id]
        out.append(ids)
    return out


def pad(seqs: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) int64 ids and (B, L) int64 mask, padded on the left or the right."""
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        if not s:
            continue
        if left:
            ids[i, n - len(s) :] = torch.tensor(s)
            mask[i, n - len(s) :] = 1
        else:
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
    return ids, mask


def positions(mask: torch.Tensor) -> torch.Tensor:
    """(B, L) position ids that ignore left padding: cumsum(mask) - 1, clamped at 0."""
    return (mask.cumsum(-1) - 1).clamp_min(0)


def forward(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, hidden: bool = False):
    """Logits (B, L, V) (and last hidden states (B, L, D) if ``hidden``) with padding-safe positions."""
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), output_hidden_states=hidden, use_cache=False)
    return (out.logits, out.hidden_states[-1]) if hidden else out.logits


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, G, V) logits, (B, G) targets -> (B, G) log-probabilities of the targets."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def completion_logprobs(
    model: nn.Module, query: torch.Tensor, query_mask: torch.Tensor, response: torch.Tensor, response_mask: torch.Tensor
) -> torch.Tensor:
    """Per-token log-probs of the response given the (left-padded) query.

    Args:
        query: (B, P) prompt ids, left-padded; query_mask (B, P).
        response: (B, G) completion ids, right-padded; response_mask (B, G).

    Returns:
        (B, G) float32 log pi(response_t | query, response_<t); padded positions hold junk (mask them).
    """
    ids = torch.cat([query, response], dim=1)
    mask = torch.cat([query_mask, response_mask], dim=1)
    p = query.shape[1]
    logits = forward(model, ids, mask)[:, p - 1 : -1]  # (B, G, V): step t predicts response_t
    return token_logprobs(logits, response)


# ---- sampling -------------------------------------------------------------------------------
@dataclass
class Samples:
    """Completions sampled for a batch of prompts.

    Attributes:
        prompts: (B,) prompt texts.
        completions: (B,) decoded completions (EOS and padding removed).
        query: (B, P) int64 left-padded prompt ids; query_mask (B, P).
        response: (B, G) int64 completion ids incl. EOS, right-padded; response_mask (B, G) float32.
        ended: (B,) bool, True where the completion ended with EOS (not cut at the length limit).
    """

    prompts: list[str]
    completions: list[str]
    query: torch.Tensor
    query_mask: torch.Tensor
    response: torch.Tensor
    response_mask: torch.Tensor
    ended: torch.Tensor

    @property
    def n_tokens(self) -> int:
        return int(self.response_mask.sum().item())


@torch.no_grad()
def sample(
    model: nn.Module, tokenizer, prompts: list[str], cfg: SampleConfig, generator: torch.Generator | None = None
) -> Samples:
    """Sample one completion per prompt (KV cache, left padding), stopping at EOS.

    Raises:
        PrefrlError: when prompt + completion would exceed the model's positions.
    """
    was_training = model.training
    model.eval()
    eos, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    query, query_mask = pad(encode_prompts(tokenizer, prompts, cfg.max_prompt_tokens), pad_id, left=True)
    b, p = query.shape
    limit = max_positions(model)
    if limit is not None and p + cfg.max_new_tokens > limit:
        raise PrefrlError(
            f"prompt ({p} tokens) + `max_new_tokens` ({cfg.max_new_tokens}) exceed the model's {limit} positions; "
            "shorten prompts (`max_prompt_tokens`) or completions"
        )
    mask = query_mask.clone()
    out = model(input_ids=query, attention_mask=mask, position_ids=positions(mask), use_cache=True)
    past, logits = out.past_key_values, out.logits[:, -1]
    next_pos = mask.sum(-1, keepdim=True)  # (B, 1)
    tokens, done = [], torch.zeros(b, dtype=torch.bool)
    resp_mask = []
    for _ in range(cfg.max_new_tokens):
        logits = logits.float() / cfg.temperature
        if cfg.top_k > 0:
            kth = torch.topk(logits, min(cfg.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        tok = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(-1)  # (B,)
        tok = torch.where(done, torch.full_like(tok, pad_id), tok)
        resp_mask.append((~done).float())
        tokens.append(tok)
        done = done | (tok == eos)
        if done.all():
            break
        mask = torch.cat([mask, torch.ones(b, 1, dtype=torch.long)], dim=1)
        out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos, past_key_values=past, use_cache=True)
        past, logits = out.past_key_values, out.logits[:, -1]
        next_pos = next_pos + 1
    response = torch.stack(tokens, dim=1)  # (B, G)
    response_mask = torch.stack(resp_mask, dim=1)  # (B, G)
    texts = []
    for row, m in zip(response.tolist(), response_mask.tolist()):
        ids = [t for t, k in zip(row, m) if k > 0 and t != eos]
        texts.append(tokenizer.decode(ids, skip_special_tokens=True))
    model.train(was_training)
    return Samples(list(prompts), texts, query, query_mask, response, response_mask, done)


def sample_texts(
    model: nn.Module, tokenizer, prompts: list[str], cfg: SampleConfig, seed: int = 0, batch_size: int = 64
) -> list[str]:
    """Completions for many prompts, in batches (convenience for labeling and evaluation)."""
    g = torch.Generator().manual_seed(seed)
    out: list[str] = []
    for s in range(0, len(prompts), batch_size):
        out += sample(model, tokenizer, prompts[s : s + batch_size], cfg, g).completions
    return out


@torch.no_grad()
def sequence_kl(
    policy: nn.Module, ref: nn.Module, tokenizer, prompts: list[str], cfg: SampleConfig, seed: int = 0, batch_size: int = 64
) -> tuple[float, list[str]]:
    """Monte-Carlo KL(policy || ref) per sequence: mean over samples of sum_t log pi - log ref.

    Returns:
        (mean KL in nats per completion, the sampled completions).
    """
    g = torch.Generator().manual_seed(seed)
    total, n, texts = 0.0, 0, []
    for s in range(0, len(prompts), batch_size):
        smp = sample(policy, tokenizer, prompts[s : s + batch_size], cfg, g)
        was = policy.training, ref.training
        policy.eval(), ref.eval()
        lp = completion_logprobs(policy, smp.query, smp.query_mask, smp.response, smp.response_mask.long())
        lr = completion_logprobs(ref, smp.query, smp.query_mask, smp.response, smp.response_mask.long())
        policy.train(was[0]), ref.train(was[1])
        total += float(((lp - lr) * smp.response_mask).sum())
        n += len(smp.prompts)
        texts += smp.completions
    return total / max(n, 1), texts


def make_tiny_checkpoint(path: str | Path, texts: list[str], cfg: TinyGPTConfig | None = None, seed: int = 0) -> Path:
    """Write a randomly initialised tiny GPT-2 and a BPE tokenizer trained on ``texts`` (tests, quick starts)."""
    torch.manual_seed(seed)
    tok = train_tokenizer(texts, (cfg or TinyGPTConfig()).vocab_size)
    save_lm(new_tiny_lm(tok, cfg or TinyGPTConfig()), tok, path, {"kind": "random", "tiny": (cfg or TinyGPTConfig()).to_dict()})
    return Path(path)
