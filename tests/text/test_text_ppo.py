"""PPO for text: the KL penalty is per token against the frozen reference; GAE; KL controllers."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from prefrl.text.config import PPOConfig, SampleConfig, TinyGPTConfig
from prefrl.text.corpus import make_corpus, make_prompts
from prefrl.text.lm import encode, load_lm, make_tiny_checkpoint
from prefrl.text.ppo import AdaptiveKLController, FixedKLController, TextPPOTrainer, gae, kl_penalised_rewards
from prefrl.core.utils import set_torch_threads

TINY = TinyGPTConfig(vocab_size=320, n_layer=1, n_head=2, n_embd=32, n_positions=64)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    set_torch_threads(1)
    texts = [e.prompt + e.completion for e in make_corpus(300, seed=0)]
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "lm", texts, TINY, seed=0)


def _length_reward(prompts, completions):
    return np.array([len(c) / 10 for c in completions], np.float32)


def _trainer(ckpt, ref_noise: float, beta: float = 0.3, ptx_data=None, **cfg):
    torch.manual_seed(0)
    policy, tok = load_lm(ckpt)
    ref = copy.deepcopy(policy)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(ref_noise * torch.randn_like(p))
    prompts = ["The soup", "I stayed at the seaside hotel last week. The room", "We", "I bought these headphones last month. The sound"]
    ppo = PPOConfig(batch_size=4, minibatch_size=2, ppo_epochs=1, kl_coef=beta, whiten_advantages=False, score_clip=None, **cfg)
    return TextPPOTrainer(policy, tok, _length_reward, prompts, ppo, SampleConfig(max_new_tokens=6), ref=ref, seed=0, ptx_data=ptx_data), tok


@torch.no_grad()
def _next_token_logprob(model, context: list[int], token: int) -> float:
    """log p(token | context) from an unpadded, single-sequence forward pass."""
    logits = model(input_ids=torch.tensor([context])).logits[0, -1]
    return float(torch.log_softmax(logits.float(), -1)[token])


def test_kl_term_is_per_token_against_the_reference(ckpt):
    trainer, tok = _trainer(ckpt, ref_noise=0.05)
    smp, batch, stats = trainer.rollout()
    beta = trainer.kl_ctl.value
    assert smp.query.shape[0] == 4 and (smp.query_mask == 0).any()  # prompts of different lengths: left padding
    for b in range(4):
        prompt_ids = encode(tok, [smp.prompts[b]])[0]
        n = int(smp.response_mask[b].sum())
        resp = smp.response[b, :n].tolist()
        for t in range(n):
            ctx = prompt_ids + resp[:t]
            want = _next_token_logprob(trainer.policy, ctx, resp[t]) - _next_token_logprob(trainer.ref, ctx, resp[t])
            assert batch["kl"][b, t].item() == pytest.approx(want, abs=2e-4)
            score = batch["scores"][b].item() if t == n - 1 else 0.0  # reward model's score only at the end
            assert batch["rewards"][b, t].item() == pytest.approx(-beta * want + score, abs=2e-4)
        assert torch.all(batch["kl"][b, n:] == 0) and torch.all(batch["rewards"][b, n:] == 0)
    assert stats["ppo/kl"] == pytest.approx(float(batch["kl"].sum(1).mean()), rel=1e-5)
    assert stats["ppo/kl"] != 0.0


def test_kl_is_zero_when_policy_equals_reference(ckpt):
    trainer, _ = _trainer(ckpt, ref_noise=0.0)
    _, batch, stats = trainer.rollout()
    assert torch.allclose(batch["kl"], torch.zeros_like(batch["kl"]), atol=1e-5)
    assert stats["ppo/kl"] == pytest.approx(0.0, abs=1e-4)


def test_kl_penalised_rewards_by_hand():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -3.0], [-1.0, -0.25, -9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards, kl = kl_penalised_rewards(logp, ref, mask, torch.tensor([2.0, -1.0]), beta=0.5)
    assert torch.allclose(kl, torch.tensor([[0.5, -1.0, 0.0], [0.5, -0.25, 0.0]]))
    assert torch.allclose(rewards, torch.tensor([[-0.25, 0.5, 2.0], [-0.25, 0.125 - 1.0, 0.0]]))


def test_gae_by_hand_and_padding_ignored():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    values = torch.tensor([[0.5, 0.2, 0.1], [0.3, 0.4, 9.0]])  # 9.0 sits on padding: must not leak
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.9)
    assert torch.allclose(adv, torch.tensor([[0.339, 0.71, 0.9], [1.54, 1.6, 0.0]]), atol=1e-6)
    assert torch.allclose(ret, (adv + values) * mask)


def test_kl_controllers():
    fixed = FixedKLController(0.2)
    fixed.update(100.0, 64)
    assert fixed.value == 0.2
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    ctl.update(12.0, 64)  # KL twice the target: error clipped to +0.2
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 64 / 10000))
    before = ctl.value
    ctl.update(5.4, 64)  # 10% below target
    assert ctl.value == pytest.approx(before * (1 - 0.1 * 64 / 10000))


def test_ppo_step_changes_parameters_and_logs(ckpt, tmp_path):
    from prefrl.text.data import SFTExample

    logged = []
    demos = [SFTExample("The soup", " was great.")]
    trainer, _ = _trainer(ckpt, ref_noise=0.0, beta=0.1, ptx_data=demos, kl_target=1.0, ptx_coef=0.5, ptx_batch_size=2)
    trainer.log = lambda step, m: logged.append((step, m))
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    ref_before = [p.detach().clone() for p in trainer.ref.parameters()]
    stats = trainer.train(2)[-1]
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(ref_before, trainer.ref.parameters()))  # the reference is frozen
    for key in ("ppo/score", "ppo/kl", "ppo/entropy", "ppo/beta", "ppo/loss/policy", "ppo/loss/value", "ppo/loss/ptx", "ppo/gen_tokens_per_s"):
        assert np.isfinite(stats[key]), key
    assert stats["ppo/entropy"] > 0
    assert [s for s, _ in logged] == [1, 2]
    assert trainer.kl_ctl.value != 0.1  # adaptive controller moved


def test_ppo_needs_demonstrations_for_the_pretraining_mix(ckpt):
    from prefrl.core.types import PrefrlError

    policy, tok = load_lm(ckpt)
    with pytest.raises(PrefrlError, match="ptx"):
        TextPPOTrainer(policy, tok, _length_reward, make_prompts(2), PPOConfig(batch_size=2, minibatch_size=2, ptx_coef=1.0), SampleConfig())
