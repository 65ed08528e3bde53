"""PPO for language models with a per-token KL penalty to a frozen reference.

The objective of Ziegler et al. 2019 / Stiennon et al. 2020 / Ouyang et al. 2022:

    R(x, y) = r(x, y) - beta * sum_t [log pi(y_t | x, y_<t) - log ref(y_t | x, y_<t)]

as per-token rewards: every completion token t gets ``-beta * (log pi_t - log ref_t)``
(the k1 estimate of the KL, evaluated on the sampled token), and the last token also
gets the reward model's score ``r(x, y)`` (reward at end of sequence). A value head on
the policy's last hidden state gives V(prefix); advantages are GAE(gamma, lambda) over
the completion's tokens; the policy loss is PPO's clipped surrogate, the value loss is
clipped too. beta is fixed, or adapted toward a target KL (Ziegler et al. 2019, sec. 2.2):
``beta <- beta * (1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon)``. An optional
pretraining mix adds ``ptx_coef`` x the LM loss on demonstrations (PPO-ptx, Ouyang et al.
2022, eq. 2).

Logged per step (slash paths): ppo/score, ppo/kl (nats per completion), ppo/kl_per_token,
ppo/entropy (nats per token), ppo/beta, ppo/reward (score - beta * kl), ppo/loss/*,
ppo/clipfrac, ppo/length, throughput, and oracle/score when an oracle watches; with a
reward-hacking monitor (``prefrl.core.monitor.TextMonitor``), ``monitor/*`` (KL, suffix share,
distinct bigrams against the first batch, reward-model vs oracle rank correlation, alarm).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from prefrl.core.monitor import TextMonitor
from prefrl.core.types import PrefrlError
from prefrl.text.config import PPOConfig, SampleConfig
from prefrl.text.data import SFTExample
from prefrl.text.lm import Samples, forward, max_positions, sample, token_logprobs
from prefrl.text.sft import lm_loss, make_lm_batch

RewardFn = Callable[[list[str], list[str]], np.ndarray]
"""(prompts, completions) -> (B,) float scores (the reward model's, normalised)."""


# ---- KL controllers ------------------------------------------------------------------------
class FixedKLController:
    """A constant beta."""

    def __init__(self, value: float):
        self.value = float(value)

    def update(self, kl: float, n: int) -> None:
        pass


class AdaptiveKLController:
    """Proportional control of beta toward a target KL (Ziegler et al. 2019, section 2.2).

    Args:
        value: initial beta.
        target: wanted KL in nats per completion.
        horizon: completions over which an error of 20% changes beta by ~e^0.2.
    """

    def __init__(self, value: float, target: float, horizon: int):
        self.value, self.target, self.horizon = float(value), float(target), int(horizon)

    def update(self, kl: float, n: int) -> None:
        error = float(np.clip(kl / self.target - 1.0, -0.2, 0.2))
        self.value *= 1.0 + error * n / self.horizon


def make_kl_controller(cfg: PPOConfig) -> FixedKLController | AdaptiveKLController:
    if cfg.kl_target is None:
        return FixedKLController(cfg.kl_coef)
    return AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)


# ---- the maths -------------------------------------------------------------------------------
def kl_penalised_rewards(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, scores: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: -beta * KL_t on every completion token, plus the score on the last one.

    Args:
        logprobs: (B, G) log pi(y_t | ...) of the sampled tokens under the policy.
        ref_logprobs: (B, G) the same under the frozen reference.
        mask: (B, G) 1 on completion tokens (EOS included), 0 on padding.
        scores: (B,) reward-model scores r(x, y).
        beta: KL coefficient.

    Returns:
        rewards (B, G) and per-token KL (B, G) = (log pi - log ref) * mask.
    """
    kl = (logprobs - ref_logprobs) * mask  # (B, G) k1 estimate per token
    rewards = -beta * kl
    last = (mask.sum(dim=1).long() - 1).clamp_min(0)  # (B,) index of the last completion token
    rewards[torch.arange(len(scores)), last] += scores.to(rewards.dtype)
    return rewards, kl


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over right-padded completions (terminal after the last token).

    Args:
        rewards, values, mask: (B, G).

    Returns:
        advantages (B, G) and returns = advantages + values (B, G), zero on padding.
    """
    b, g = rewards.shape
    adv = torch.zeros_like(rewards)
    next_adv = torch.zeros(b, dtype=rewards.dtype)
    next_value = torch.zeros(b, dtype=rewards.dtype)
    for t in reversed(range(g)):
        m_next = mask[:, t + 1] if t + 1 < g else torch.zeros(b, dtype=rewards.dtype)
        delta = rewards[:, t] + gamma * next_value * m_next - values[:, t]
        next_adv = delta + gamma * lam * m_next * next_adv
        adv[:, t] = next_adv
        next_value = values[:, t]
    adv = adv * mask
    return adv, (adv + values) * mask


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


class PolicyWithValue(nn.Module):
    """A causal LM and a scalar value head on its last hidden state (shared trunk, as in Ziegler et al.)."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm
        width = lm.config.hidden_size if hasattr(lm.config, "hidden_size") else lm.config.n_embd
        self.v_head = nn.Linear(width, 1)
        nn.init.zeros_(self.v_head.weight)
        nn.init.zeros_(self.v_head.bias)

    def completion_outputs(self, smp: Samples, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, G) log-probs, (B, G) values V(prefix before token t), (B, G) entropies of a sampled batch.

        Logits are divided by the sampling ``temperature`` so the log-probs are those of the
        distribution the completions were drawn from (as TRL does).
        """
        ids = torch.cat([smp.query, smp.response], dim=1)
        mask = torch.cat([smp.query_mask, smp.response_mask.long()], dim=1)
        p = smp.query.shape[1]
        logits, hidden = forward(self.lm, ids, mask, hidden=True)
        logits, hidden = logits[:, p - 1 : -1].float() / temperature, hidden[:, p - 1 : -1]  # position t predicts response_t
        logp_all = torch.log_softmax(logits, dim=-1)
        logprobs = logp_all.gather(-1, smp.response.unsqueeze(-1)).squeeze(-1)
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        values = self.v_head(hidden.float()).squeeze(-1)
        return logprobs, values, entropy


def _subset(smp: Samples, idx: torch.Tensor) -> Samples:
    i = idx.tolist()
    return Samples(
        [smp.prompts[k] for k in i], [smp.completions[k] for k in i], smp.query[idx], smp.query_mask[idx],
        smp.response[idx], smp.response_mask[idx], smp.ended[idx],
    )


class TextPPOTrainer:
    """PPO with a KL penalty for a causal LM against a scalar reward function.

    Args:
        policy: the causal LM to train (changed in place).
        tokenizer: its tokenizer.
        reward_fn: (prompts, completions) -> (B,) scores, e.g. ``TextRewardModel.score``.
        prompts: training prompts (sampled with replacement each step).
        cfg: PPO settings; sample_cfg: how completions are sampled.
        ref: frozen reference LM (default: a copy of ``policy`` before training).
        rng: prompt sampling; seed: torch sampling seed.
        ptx_data: demonstrations for the pretraining mix (needed when ``cfg.ptx_coef > 0``).
        oracle: optional (prompts, completions) -> (B,) true scores, only logged.
        log: optional callable ``(step, metrics)``.
        monitor: optional reward-hacking monitor; with ``on_alarm = "stop"`` an alarm ends ``train``.
    """

    def __init__(
        self,
        policy: nn.Module,
        tokenizer,
        reward_fn: RewardFn,
        prompts: list[str],
        cfg: PPOConfig,
        sample_cfg: SampleConfig,
        ref: nn.Module | None = None,
        rng: np.random.Generator | None = None,
        seed: int = 0,
        ptx_data: list[SFTExample] | None = None,
        oracle: RewardFn | None = None,
        log: Callable[[int, dict], None] | None = None,
        monitor: TextMonitor | None = None,
    ):
        if not prompts:
            raise PrefrlError("PPO needs at least one prompt")
        if cfg.ptx_coef > 0 and not ptx_data:
            raise PrefrlError("`ptx_coef` > 0 needs demonstrations for the pretraining mix (`ptx_data`)")
        if monitor is not None and monitor.cfg.on_alarm == "ask":
            raise PrefrlError("text PPO trains on a fixed reward model and asks for no labels: the monitor's "
                              "`on_alarm` must be `warn` or `stop` here, not `ask`")
        self.model = PolicyWithValue(policy)
        self.tokenizer = tokenizer
        self.reward_fn = reward_fn
        self.prompts = list(prompts)
        self.cfg = cfg
        self.sample_cfg = sample_cfg
        self.ref = ref if ref is not None else copy.deepcopy(policy)
        self.ref.eval()
        self.ref.requires_grad_(False)
        self.rng = rng if rng is not None else np.random.default_rng(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.ptx_data = ptx_data or []
        self.oracle = oracle
        self.log = log
        self.monitor = monitor
        self.raw_scores: np.ndarray | None = None  # the last batch's reward-model and oracle scores
        self.oracle_scores: np.ndarray | None = None
        self.stopped_at: int | None = None
        """The step a monitor alarm stopped training at (on_alarm = "stop")."""
        self.kl_ctl = make_kl_controller(cfg)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, eps=1e-5)
        self.step_count = 0
        self.gen_tokens = self.train_tokens = 0
        self.gen_s = self.train_s = 0.0

    @property
    def policy(self) -> nn.Module:
        return self.model.lm

    @torch.no_grad()
    def rollout(self) -> tuple[Samples, dict[str, torch.Tensor], dict[str, float]]:
        """Sample a batch and compute everything PPO needs from it (no grad).

        Returns:
            the samples; tensors (B, G) ``logprobs``, ``ref_logprobs``, ``kl``, ``rewards`` (KL-penalised,
            score on the last token), ``values``, ``advantages``, ``returns`` and (B,) ``scores``; metrics.
        """
        cfg = self.cfg
        idx = self.rng.integers(0, len(self.prompts), cfg.batch_size)
        t0 = time.perf_counter()
        smp = sample(self.policy, self.tokenizer, [self.prompts[i] for i in idx], self.sample_cfg, self.generator)
        self.gen_s += time.perf_counter() - t0
        self.gen_tokens += smp.n_tokens
        self.model.eval()
        logprobs, values, entropy = self.model.completion_outputs(smp, self.sample_cfg.temperature)
        ref_logprobs = _ref_logprobs(self.ref, smp, self.sample_cfg.temperature)
        raw = torch.as_tensor(np.asarray(self.reward_fn(smp.prompts, smp.completions), np.float32))
        scores = raw.clone()
        if cfg.score_clip is not None:
            scores = scores.clamp(-cfg.score_clip, cfg.score_clip)
        if cfg.missing_eos_penalty is not None:
            scores = scores - cfg.missing_eos_penalty * (~smp.ended).float()
        mask = smp.response_mask
        rewards, kl = kl_penalised_rewards(logprobs, ref_logprobs, mask, scores, self.kl_ctl.value)
        values = values * mask
        adv, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            adv = masked_whiten(adv, mask)
        kl_seq = kl.sum(1)  # (B,)
        stats = {
            "ppo/score": float(raw.mean()),
            "ppo/score_std": float(raw.std()) if len(raw) > 1 else 0.0,
            "ppo/kl": float(kl_seq.mean()),
            "ppo/kl_per_token": float(masked_mean(kl, mask)),
            "ppo/entropy": float(masked_mean(entropy, mask)),
            "ppo/reward": float((scores - self.kl_ctl.value * kl_seq).mean()),
            "ppo/length": float(mask.sum(1).mean()),
            "ppo/ended": float(smp.ended.float().mean()),
            "ppo/beta": self.kl_ctl.value,
        }
        self.oracle_scores = None
        if self.oracle is not None:
            self.oracle_scores = np.asarray(self.oracle(smp.prompts, smp.completions), np.float64)
            stats["oracle/score"] = float(np.mean(self.oracle_scores))
        self.raw_scores = raw.numpy()
        batch = {"logprobs": logprobs, "ref_logprobs": ref_logprobs, "values": values, "scores": scores, "kl": kl,
                 "rewards": rewards, "advantages": adv, "returns": returns}
        return smp, batch, stats

    def update(self, smp: Samples, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """PPO epochs over minibatches of one rollout."""
        cfg = self.cfg
        self.model.eval()  # no dropout: log-probs match the rollout's
        stats: dict[str, list[float]] = {k: [] for k in ("pg", "vf", "ptx", "clipfrac", "approx_kl", "entropy")}
        t0 = time.perf_counter()
        n = cfg.batch_size
        for _ in range(cfg.ppo_epochs):
            order = torch.as_tensor(self.rng.permutation(n))
            for s in range(0, n, cfg.minibatch_size):
                idx = order[s : s + cfg.minibatch_size]
                mb = _subset(smp, idx)
                mask = mb.response_mask
                old_lp, old_v = batch["logprobs"][idx], batch["values"][idx]
                adv, ret = batch["advantages"][idx], batch["returns"][idx]
                logprobs, values, entropy = self.model.completion_outputs(mb, self.sample_cfg.temperature)
                log_ratio = (logprobs - old_lp) * mask
                ratio = log_ratio.exp()
                pg = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range))
                pg_loss = masked_mean(pg, mask)
                v_clip = old_v + (values - old_v).clamp(-cfg.clip_range_value, cfg.clip_range_value)
                vf_loss = 0.5 * masked_mean(torch.max((values - ret) ** 2, (v_clip - ret) ** 2), mask)
                ent = masked_mean(entropy, mask)
                loss = pg_loss + cfg.vf_coef * vf_loss - cfg.entropy_coef * ent
                if cfg.ptx_coef > 0:
                    ex = [self.ptx_data[i] for i in self.rng.integers(0, len(self.ptx_data), cfg.ptx_batch_size)]
                    ids, am, labels = make_lm_batch(self.tokenizer, ex, max_positions(self.policy), True, self.sample_cfg.max_prompt_tokens)
                    ptx = lm_loss(self.policy, ids, am, labels)
                    loss = loss + cfg.ptx_coef * ptx
                    stats["ptx"].append(ptx.item())
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.opt.step()
                with torch.no_grad():
                    stats["pg"].append(pg_loss.item())
                    stats["vf"].append(vf_loss.item())
                    stats["entropy"].append(ent.item())
                    stats["clipfrac"].append(float(masked_mean(((ratio - 1).abs() > cfg.clip_range).float(), mask)))
                    stats["approx_kl"].append(float(masked_mean(0.5 * log_ratio**2, mask)))
                self.train_tokens += int(mask.sum()) + int(mb.query_mask.sum())
        self.train_s += time.perf_counter() - t0
        out = {
            "ppo/loss/policy": float(np.mean(stats["pg"])),
            "ppo/loss/value": float(np.mean(stats["vf"])),
            "ppo/clipfrac": float(np.mean(stats["clipfrac"])),
            "ppo/approx_kl": float(np.mean(stats["approx_kl"])),
        }
        if stats["ptx"]:
            out["ppo/loss/ptx"] = float(np.mean(stats["ptx"]))
        return out

    def step(self) -> dict[str, float]:
        """One rollout + update; returns its metrics (also passed to ``log``)."""
        smp, batch, stats = self.rollout()
        stats.update(self.update(smp, batch))
        self.kl_ctl.update(stats["ppo/kl"], self.cfg.batch_size)
        self.step_count += 1
        stats["ppo/gen_tokens_per_s"] = self.gen_tokens / max(self.gen_s, 1e-9)
        stats["ppo/train_tokens_per_s"] = self.train_tokens / max(self.train_s, 1e-9)
        if self.monitor is not None:
            ms = self.monitor.observe(self.step_count, smp.completions, stats["ppo/kl"], self.raw_scores, self.oracle_scores)
            stats.update({f"monitor/{k}": v for k, v in ms.values.items()})
            stats["monitor/alarm"] = float(ms.alarm)
            if ms.started and self.monitor.cfg.on_alarm == "stop":
                self.stopped_at = self.step_count
        if self.log is not None:
            self.log(self.step_count, stats)
        return stats

    def train(self, steps: int | None = None) -> list[dict[str, float]]:
        """``steps`` PPO steps (default: the config's), fewer when a monitor alarm stops training."""
        history = []
        for _ in range(self.cfg.steps if steps is None else steps):
            history.append(self.step())
            if self.stopped_at is not None:
                break
        return history


@torch.no_grad()
def _ref_logprobs(ref: nn.Module, smp: Samples, temperature: float = 1.0) -> torch.Tensor:
    ids = torch.cat([smp.query, smp.response], dim=1)
    mask = torch.cat([smp.query_mask, smp.response_mask.long()], dim=1)
    p = smp.query.shape[1]
    return token_logprobs(forward(ref, ids, mask)[:, p - 1 : -1].float() / temperature, smp.response)
