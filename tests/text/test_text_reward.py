"""Text reward model: trained by the core trainer with the core loss object, better than chance, HF export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import prefrl.core.loss as core_loss
from prefrl.core.loss import PreferenceLoss
from prefrl.core.trainer import RewardTrainConfig, RewardTrainer
from prefrl.text.config import TinyGPTConfig
from prefrl.text.corpus import make_corpus
from prefrl.text.lm import make_tiny_checkpoint
from prefrl.text.model import TextRewardModel
from prefrl.text.oracles import TextOracle
from prefrl.core.toy import toy_dataset
from prefrl.core.types import Comparisons
from prefrl.core.utils import set_torch_threads

TINY = TinyGPTConfig(vocab_size=320, n_layer=1, n_head=2, n_embd=32, n_positions=64)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    set_torch_threads(1)
    texts = [e.prompt + e.completion for e in make_corpus(400, seed=0)]
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "lm", texts, TINY, seed=0)


def _oracle_pairs(n_pairs: int, seed: int):
    """Corpus completions and VADER-labeled random pairs over them (strict preferences only)."""
    ex = make_corpus(2 * n_pairs, seed=seed, mix=(0.45, 0.45, 0.1, 0.0))
    prompts, comps = [e.prompt for e in ex], [e.completion for e in ex]
    left, right = np.arange(0, 2 * n_pairs, 2), np.arange(1, 2 * n_pairs, 2)
    labels = TextOracle("vader").label([prompts[i] for i in left], [comps[i] for i in left], [comps[i] for i in right])
    return prompts, comps, Comparisons(left, right, labels)


def test_text_reward_model_beats_chance_on_held_out_oracle_pairs(ckpt):
    torch.manual_seed(0)
    rm = TextRewardModel.create(ckpt, n_members=1, max_length=48)
    prompts, comps, train = _oracle_pairs(800, seed=1)
    cfg = RewardTrainConfig(lr=1e-3, epochs=10, batch_size=32, patience=3, val_fraction=0.25)
    trainer = RewardTrainer(rm.ensemble, cfg, np.random.default_rng(0))
    metrics = trainer.fit(rm.encode(prompts, comps), train)
    t_prompts, t_comps, test = _oracle_pairs(200, seed=2)
    held_out = trainer.evaluate(rm.encode(t_prompts, t_comps), test)
    assert held_out["accuracy"] >= 0.75, (held_out, metrics)  # measured 0.85 (seed 0), 0.82 (seed 1); chance is 0.5
    assert metrics["reward/val/accuracy"] >= 0.7, metrics


def test_text_and_control_use_the_same_core_loss_object(ckpt, tmp_path, monkeypatch):
    # One class, one function: the trainer for text holds a core PreferenceLoss, exactly as for control ...
    rm = TextRewardModel.create(ckpt, n_members=2, max_length=32)
    text_trainer = RewardTrainer(rm.ensemble, RewardTrainConfig(epochs=1))
    clips, comps = toy_dataset(20, 30)
    from prefrl.core.ensemble import RewardEnsemble
    from prefrl.core.nets import RewardModelConfig
    from prefrl.core.utils import input_spec_from_clips

    control = RewardTrainer(RewardEnsemble(input_spec_from_clips(clips), RewardModelConfig(hidden=(8,), members=1)), RewardTrainConfig(epochs=1))
    assert type(text_trainer.loss) is type(control.loss) is PreferenceLoss
    shared = PreferenceLoss(noise_eps=0.1)
    assert RewardTrainer(rm.ensemble, RewardTrainConfig(epochs=1), loss=shared).loss is shared
    # ... and every text gradient step goes through prefrl.core.loss.bradley_terry_loss.
    calls = []
    real = core_loss.bradley_terry_loss
    monkeypatch.setattr(core_loss, "bradley_terry_loss", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    from prefrl.text.data import write_jsonl
    from prefrl.text.pipeline import fit_reward

    write_jsonl(tmp_path / "p.jsonl", [{"prompt": "The soup", "chosen": f" was great {i}.", "rejected": f" was bad {i}."} for i in range(8)])
    rm2, m = fit_reward([tmp_path / "p.jsonl"], tmp_path / "rm", ckpt, RewardTrainConfig(epochs=1, batch_size=4, val_fraction=0.0), members=2)
    assert len(calls) >= 2 and all(len(s) == 1 for s in calls[:2])  # (B,) returns of one member per step
    assert isinstance(rm2.ensemble.members[0].model.score, torch.nn.Linear)


def test_ensemble_inputs_are_one_step_clips(ckpt):
    rm = TextRewardModel.create(ckpt, n_members=2, max_length=16)
    inputs = rm.encode(["The soup", "A"], [" was great.", " was awful and the service was terrible too."])
    assert inputs["input_ids"].shape[:2] == (2, 1) and inputs["input_ids"].shape == inputs["attention_mask"].shape
    assert inputs["input_ids"].shape[2] <= 16
    per_step = rm.ensemble(rm.ensemble.to_tensors(inputs))
    assert per_step.shape == (2, 1, 2)  # (B, T=1, M)
    # right padding does not change a completion's score
    alone = rm.score(["The soup"], [" was great."], normalised=False)
    assert np.allclose(alone, rm.score(["The soup", "A"], [" was great.", " was awful and terrible."], normalised=False)[:1], atol=1e-5)


def test_normalisation_save_load_and_hf_export_match(ckpt, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(1)
    rm = TextRewardModel.create(ckpt, n_members=1, max_length=48)
    prompts = ["The soup", "The room", "The plot", "The case"]
    comps = [" was great.", " was dirty.", " was long.", " was fine and the screen was nice."]
    rm.normalise_on(prompts, comps)
    s = rm.score(prompts, comps)
    assert abs(s.mean()) < 1e-5 and abs(s.std(ddof=1) - 1.0) < 1e-3  # reference completions average 0, std 1
    rm.save(tmp_path / "rm")
    again = TextRewardModel.load(tmp_path / "rm")
    assert np.allclose(again.score(prompts, comps), s, atol=1e-5)

    hf = rm.export_hf(tmp_path / "hf")
    model = AutoModelForSequenceClassification.from_pretrained(hf, local_files_only=True)  # what TRL does
    tok = AutoTokenizer.from_pretrained(hf, local_files_only=True)
    assert model.config.num_labels == 1
    enc = tok([p + c for p, c in zip(prompts, comps)], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits[:, 0].numpy()
    assert np.allclose(logits + model.config.prefrl_reward_offset, s, atol=1e-4)


def test_load_refuses_a_non_reward_directory(tmp_path):
    from prefrl.core.types import PrefrlError

    with pytest.raises(PrefrlError, match="not a text reward model directory"):
        TextRewardModel.load(tmp_path)
