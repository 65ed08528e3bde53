"""Direct preference optimisation (Rafailov et al. 2023) on the core preference loss.

DPO is Bradley-Terry on the implicit reward ``beta * log(pi(y|x) / ref(y|x))``:

    loss = -log sigmoid(beta * [(log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))])

so it is computed by the same ``PreferenceLoss`` object that fits reward models, with
the implicit rewards as the two "returns". Soft labels, the 1/C(K,2) weights of
expanded rankings and the label-noise model (``noise_eps`` > 0: P = (1-eps) sigma + eps/2,
a robust DPO) come with it; ``noise_eps = 0`` is the paper's loss. Log-probs are
summed over the completion's tokens and its EOS.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from prefrl.core.loss import PreferenceLoss
from prefrl.text.config import DPOConfig
from prefrl.text.data import TextPreferences
from prefrl.text.lm import completion_logprobs, encode, encode_prompts, max_positions, pad
from prefrl.text.sft import linear_schedule
from prefrl.core.types import PrefrlError


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    label: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
    loss: PreferenceLoss | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO loss from summed completion log-probs, via the core Bradley-Terry loss.

    Args:
        policy_chosen, policy_rejected, ref_chosen, ref_rejected: (B,) summed log-probs.
        beta: implicit-reward temperature.
        label: (B,) P(chosen preferred) (default 1).
        weight: (B,) per-pair weights (default 1).
        loss: the preference loss (default ``PreferenceLoss(noise_eps=0)``).

    Returns:
        (scalar loss, (B,) implicit reward of chosen, (B,) implicit reward of rejected).
    """
    loss = loss or PreferenceLoss(noise_eps=0.0)
    r_chosen = beta * (policy_chosen - ref_chosen)
    r_rejected = beta * (policy_rejected - ref_rejected)
    if label is None:
        label = torch.ones_like(r_chosen)
    return loss(r_chosen, r_rejected, label, weight), r_chosen.detach(), r_rejected.detach()


def _pair_tensors(tokenizer, prompts: list[str], completions: list[str], cfg: DPOConfig, limit: int | None):
    """Left-padded prompts (B, P) and right-padded completions + EOS (B, G), with their masks."""
    q, qm = pad(encode_prompts(tokenizer, prompts, cfg.max_prompt_tokens), tokenizer.pad_token_id, left=True)
    resp = [(c + [tokenizer.eos_token_id])[: cfg.max_completion_tokens] for c in encode(tokenizer, completions)]
    r, rm = pad(resp, tokenizer.pad_token_id, left=False)
    if limit is not None and q.shape[1] + r.shape[1] > limit:
        raise PrefrlError(
            f"prompt + completion ({q.shape[1]} + {r.shape[1]} tokens) exceed the model's {limit} positions; "
            "lower `max_prompt_tokens` / `max_completion_tokens`"
        )
    return q, qm, r, rm


def sequence_logprobs(model: nn.Module, tokenizer, prompts: list[str], completions: list[str], cfg: DPOConfig) -> torch.Tensor:
    """(B,) summed log-probs of each completion (and its EOS) given its prompt."""
    q, qm, r, rm = _pair_tensors(tokenizer, prompts, completions, cfg, max_positions(model))
    return (completion_logprobs(model, q, qm, r, rm) * rm).sum(dim=1)


_DPO_KEYS = {"loss": "dpo/loss", "acc": "dpo/accuracy", "margin": "dpo/margin", "chosen": "dpo/rewards/chosen", "rejected": "dpo/rewards/rejected"}


class DPOTrainer:
    """Fits a causal LM on preference pairs with DPO.

    Args:
        policy: the LM to train (changed in place); ref: the frozen reference (usually the SFT model).
        tokenizer: shared by both.
        prefs: labeled pairs (TRL / Vertex / K-wise files; skips are dropped).
        cfg: settings; rng: shuffling.
        log: optional callable ``(step, metrics)``.
    """

    def __init__(self, policy: nn.Module, ref: nn.Module, tokenizer, prefs: TextPreferences, cfg: DPOConfig,
                 rng: np.random.Generator | None = None, log: Callable[[int, dict], None] | None = None):
        self.policy, self.ref, self.tokenizer, self.cfg = policy, ref, tokenizer, cfg
        self.ref.eval()
        self.ref.requires_grad_(False)
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.log = log
        self.loss = PreferenceLoss(noise_eps=cfg.noise_eps)
        self.pairs = list(prefs.pairs())
        if not self.pairs:
            raise PrefrlError("DPO needs at least one labeled pair (all comparisons are skips?)")
        t0 = time.perf_counter()
        self.ref_chosen, self.ref_rejected = self._reference_logprobs()
        self.ref_s = time.perf_counter() - t0

    @torch.no_grad()
    def _reference_logprobs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen reference's log-probs of every pair, computed once."""
        out_c, out_r = [], []
        bs = 4 * self.cfg.batch_size
        for s in range(0, len(self.pairs), bs):
            chunk = self.pairs[s : s + bs]
            lp = sequence_logprobs(self.ref, self.tokenizer, [p[0] for p in chunk] * 2, [p[1] for p in chunk] + [p[2] for p in chunk], self.cfg)
            out_c.append(lp[: len(chunk)])
            out_r.append(lp[len(chunk) :])
        return torch.cat(out_c), torch.cat(out_r)

    def train(self) -> dict[str, float]:
        cfg = self.cfg
        n = len(self.pairs)
        steps = int(np.ceil(n / cfg.batch_size)) * cfg.epochs
        opt = torch.optim.AdamW(self.policy.parameters(), lr=cfg.lr, weight_decay=0.0)
        sched = linear_schedule(opt, steps, cfg.warmup)
        self.policy.eval()  # no dropout, as TRL does for DPO
        step, tokens, t0 = 0, 0, time.perf_counter()
        hist: dict[str, list[float]] = {"loss": [], "acc": [], "margin": [], "chosen": [], "rejected": []}
        for _ in range(cfg.epochs):
            order = self.rng.permutation(n)
            for s in range(0, n, cfg.batch_size):
                idx = order[s : s + cfg.batch_size]
                chunk = [self.pairs[i] for i in idx]
                b = len(chunk)
                prompts = [p[0] for p in chunk] * 2
                comps = [p[1] for p in chunk] + [p[2] for p in chunk]
                q, qm, r, rm = _pair_tensors(self.tokenizer, prompts, comps, cfg, max_positions(self.policy))
                lp = (completion_logprobs(self.policy, q, qm, r, rm) * rm).sum(dim=1)  # (2B,) one forward pass
                label = torch.tensor([p[3] for p in chunk], dtype=torch.float32)
                weight = torch.tensor([p[4] for p in chunk], dtype=torch.float32)
                loss, rc, rr = dpo_loss(lp[:b], lp[b:], self.ref_chosen[idx], self.ref_rejected[idx], cfg.beta, label, weight, self.loss)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.grad_clip)
                opt.step()
                sched.step()
                step += 1
                tokens += int(qm.sum() + rm.sum())
                sign = torch.where(label > 0.5, 1.0, -1.0)
                strict = label != 0.5
                hist["loss"].append(loss.item())
                hist["margin"].append(float(((rc - rr) * sign).mean()))
                hist["acc"].append(float((((rc - rr) * sign) > 0)[strict].float().mean()) if strict.any() else float("nan"))
                hist["chosen"].append(float(rc.mean()))
                hist["rejected"].append(float(rr.mean()))
                if self.log is not None and (step % 10 == 0 or step == steps):
                    self.log(step, {_DPO_KEYS[k]: float(np.nanmean(v[-10:])) for k, v in hist.items()})
        elapsed = time.perf_counter() - t0
        last = max(1, int(np.ceil(n / cfg.batch_size)))
        return {
            "dpo/loss": float(np.mean(hist["loss"][-last:])),
            "dpo/accuracy": float(np.nanmean(hist["acc"][-last:])),
            "dpo/margin": float(np.mean(hist["margin"][-last:])),
            "dpo/rewards/chosen": float(np.mean(hist["chosen"][-last:])),
            "dpo/rewards/rejected": float(np.mean(hist["rejected"][-last:])),
            "dpo/steps": float(step),
            "dpo/pairs": float(n),
            "dpo/train_tokens_per_s": tokens / max(elapsed + self.ref_s, 1e-9),  # incl. the reference's one pass
        }
