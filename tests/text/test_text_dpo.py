"""DPO: the loss matches hand-computed values and is the core preference loss; the trainer learns."""

from __future__ import annotations

import math

import pytest
import torch

from prefrl.core.loss import PreferenceLoss
from prefrl.text.config import DPOConfig, TinyGPTConfig
from prefrl.text.corpus import make_corpus
from prefrl.text.data import write_jsonl
from prefrl.text.dpo import DPOTrainer, dpo_loss, sequence_logprobs
from prefrl.text.lm import encode, load_lm, make_tiny_checkpoint
from prefrl.core.utils import set_torch_threads

TINY = TinyGPTConfig(vocab_size=320, n_layer=1, n_head=2, n_embd=32, n_positions=64)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    set_torch_threads(1)
    texts = [e.prompt + e.completion for e in make_corpus(300, seed=0)]
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "lm", texts, TINY, seed=0)


def test_dpo_loss_matches_hand_computed_values():
    pc, pr = torch.tensor([-5.0, -3.0]), torch.tensor([-7.0, -2.0])  # policy log-probs of chosen / rejected
    rc, rr = torch.tensor([-6.0, -3.5]), torch.tensor([-6.5, -2.5])  # reference log-probs
    # pair 0: 0.1 * ((-5 + 6) - (-7 + 6.5)) = 0.15 -> -log sigmoid(0.15) = log(1 + e^-0.15) = 0.620957
    # pair 1: 0.1 * ((-3 + 3.5) - (-2 + 2.5)) = 0   -> log 2 = 0.693147
    loss, r_chosen, r_rejected = dpo_loss(pc, pr, rc, rr, beta=0.1)
    assert loss.item() == pytest.approx((0.620957 + 0.693147) / 2, abs=1e-6)
    assert loss.item() == pytest.approx((math.log1p(math.exp(-0.15)) + math.log(2)) / 2, rel=1e-6)
    assert torch.allclose(r_chosen, torch.tensor([0.1, 0.05])) and torch.allclose(r_rejected, torch.tensor([-0.05, 0.05]))
    # weights (1/C(K,2) for rankings) and soft labels come with the core loss
    w_loss, _, _ = dpo_loss(pc, pr, rc, rr, beta=0.1, weight=torch.tensor([1.0, 3.0]))
    assert w_loss.item() == pytest.approx((0.620957 + 3 * 0.693147) / 4, abs=1e-6)
    soft, _, _ = dpo_loss(pc[:1], pr[:1], rc[:1], rr[:1], beta=0.1, label=torch.tensor([0.75]))
    sig = 1 / (1 + math.exp(-0.15))
    assert soft.item() == pytest.approx(-(0.75 * math.log(sig) + 0.25 * math.log(1 - sig)), abs=1e-6)
    # beta scales the implicit reward
    assert dpo_loss(pc[:1], pr[:1], rc[:1], rr[:1], beta=1.0)[0].item() == pytest.approx(math.log1p(math.exp(-1.5)), abs=1e-6)


def test_sequence_logprobs_sum_the_completion_and_eos(ckpt):
    model, tok = load_lm(ckpt)
    model.eval()
    prompts, comps = ["The soup", "We stayed at the small inn near the station. The room"], [" was great.", " was dirty"]
    got = sequence_logprobs(model, tok, prompts, comps, DPOConfig())
    for i in range(2):
        p, c = encode(tok, [prompts[i]])[0], encode(tok, [comps[i]])[0] + [tok.eos_token_id]
        want = 0.0
        with torch.no_grad():
            for t in range(len(c)):
                logits = model(input_ids=torch.tensor([p + c[:t]])).logits[0, -1]
                want += float(torch.log_softmax(logits, -1)[c[t]])
        assert got[i].item() == pytest.approx(want, abs=1e-4)


def test_dpo_trainer_changes_parameters_and_separates_pairs(ckpt, tmp_path):
    from prefrl.text.data import read_preferences

    rows = [{"prompt": "The soup", "chosen": f" was {w}.", "rejected": f" was {b}."} for w, b in
            [("great", "awful"), ("lovely", "dirty"), ("superb", "rude"), ("nice", "bad")]]
    rows.append({"prompt": "The room", "completions": [" was good.", " was plain.", " was ugly."], "ranking": [0, 1, 2]})
    write_jsonl(tmp_path / "p.jsonl", rows)
    policy, tok = load_lm(ckpt)
    ref, _ = load_lm(ckpt)
    before = [p.detach().clone() for p in policy.parameters()]
    trainer = DPOTrainer(policy, ref, tok, read_preferences(tmp_path / "p.jsonl"), DPOConfig(lr=3e-3, epochs=6, batch_size=4, warmup=0.0))
    assert isinstance(trainer.loss, PreferenceLoss) and trainer.loss.noise_eps == 0.0
    m = trainer.train()
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.parameters()))
    assert m["dpo/pairs"] == 7 and m["dpo/accuracy"] == 1.0 and m["dpo/margin"] > 0
    assert m["dpo/loss"] < math.log(2)
