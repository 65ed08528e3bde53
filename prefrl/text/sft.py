"""Supervised fine-tuning (SFT) of a causal LM on ``{"prompt", "completion"}`` examples.

The loss is next-token cross-entropy on the completion and its EOS (prompt tokens
are masked out unless ``completion_only`` is False). The same ``lm_loss`` is the
pretraining-mix term of PPO-ptx (Ouyang et al. 2022, eq. 2).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

from prefrl.text.config import SFTConfig
from prefrl.text.data import SFTExample
from prefrl.text.lm import encode, max_positions, pad, positions

IGNORE = -100


def make_lm_batch(
    tokenizer, examples: list[SFTExample], max_len: int | None, completion_only: bool = True, max_prompt_tokens: int = 48
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (ids, mask, labels), each (B, L); labels are IGNORE on prompt and padding."""
    p_ids = encode(tokenizer, [e.prompt for e in examples])
    c_ids = encode(tokenizer, [e.completion for e in examples])
    seqs, labs = [], []
    for p, c in zip(p_ids, c_ids):
        p = p[-max_prompt_tokens:] if p else [tokenizer.eos_token_id]
        c = c + [tokenizer.eos_token_id]
        if max_len is not None:
            c = c[: max(max_len - len(p), 1)]
        seqs.append(p + c)
        labs.append(([IGNORE] * len(p) if completion_only else p) + c)
    ids, mask = pad(seqs, tokenizer.pad_token_id, left=False)
    labels, _ = pad(labs, IGNORE, left=False)
    return ids, mask, labels


def lm_loss(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over label tokens (labels (B, L), IGNORE skipped)."""
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), use_cache=False).logits
    return nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1), ignore_index=IGNORE
    )


def linear_schedule(opt: torch.optim.Optimizer, total: int, warmup: float) -> torch.optim.lr_scheduler.LambdaLR:
    n_warm = max(1, int(total * warmup))

    def f(step: int) -> float:
        if step < n_warm:
            return (step + 1) / n_warm
        return max(0.0, (total - step) / max(1, total - n_warm))

    return torch.optim.lr_scheduler.LambdaLR(opt, f)


def train_sft(
    model: nn.Module, tokenizer, examples: list[SFTExample], cfg: SFTConfig, rng: np.random.Generator, log=None
) -> dict[str, float]:
    """Fine-tune ``model`` in place; returns slash-path metrics.

    Args:
        log: optional callable ``(step, metrics)`` called every few steps (CSV/TensorBoard logger).

    Returns:
        ``sft/loss`` (last epoch mean), ``sft/tokens_per_s`` (training tokens / s), ``sft/steps``.
    """
    n = len(examples)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = linear_schedule(opt, total, cfg.warmup)
    max_len = max_positions(model)
    model.train()
    step, tokens, t0 = 0, 0, time.perf_counter()
    epoch_loss = float("nan")
    for _ in range(cfg.epochs):
        order = rng.permutation(n)
        losses = []
        for s in range(0, n, cfg.batch_size):
            batch = [examples[i] for i in order[s : s + cfg.batch_size]]
            ids, mask, labels = make_lm_batch(tokenizer, batch, max_len, cfg.completion_only, cfg.max_prompt_tokens)
            loss = lm_loss(model, ids, mask, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            step += 1
            tokens += int(mask.sum())
            losses.append(loss.item())
            if log is not None and (step % 20 == 0 or step == total):
                log(step, {"sft/loss": float(np.mean(losses[-20:])), "sft/lr": sched.get_last_lr()[0]})
        epoch_loss = float(np.mean(losses))
    elapsed = time.perf_counter() - t0
    return {"sft/loss": epoch_loss, "sft/steps": float(step), "sft/tokens_per_s": tokens / max(elapsed, 1e-9)}
