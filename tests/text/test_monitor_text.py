"""The reward-hacking monitor in text PPO: monitor/* logged per step, an alarm stops training, `ask` is refused."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from prefrl.core.monitor import MonitorConfig, TextMonitor
from prefrl.core.types import PrefrlError
from prefrl.core.utils import set_torch_threads
from prefrl.text.config import PPOConfig, SampleConfig, TinyGPTConfig
from prefrl.text.corpus import make_corpus
from prefrl.text.lm import load_lm, make_tiny_checkpoint
from prefrl.text.ppo import TextPPOTrainer

TINY = TinyGPTConfig(vocab_size=320, n_layer=1, n_head=2, n_embd=32, n_positions=64)
PROMPTS = ["The soup", "I stayed at the seaside hotel last week. The room", "We", "The sound"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    set_torch_threads(1)
    texts = [e.prompt + e.completion for e in make_corpus(300, seed=0)]
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "lm", texts, TINY, seed=0)


def _trainer(ckpt, monitor: TextMonitor, ref_noise: float = 0.0):
    torch.manual_seed(0)
    policy, tok = load_lm(ckpt)
    ref = copy.deepcopy(policy)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(ref_noise * torch.randn_like(p))
    ppo = PPOConfig(batch_size=8, minibatch_size=4, ppo_epochs=1, kl_coef=0.1)
    length = lambda p, c: np.array([len(x) / 10 for x in c], np.float32)  # noqa: E731
    return TextPPOTrainer(policy, tok, length, PROMPTS, ppo, SampleConfig(max_new_tokens=6), ref=ref, seed=0,
                          oracle=length, monitor=monitor)


def test_monitor_signals_are_logged_and_an_alarm_stops_training(ckpt):
    # a reference far from the policy: every batch's KL is above the (deliberately low) bound
    mon = TextMonitor(MonitorConfig(on_alarm="stop", max_kl=0.5, patience=2), say=None)
    trainer = _trainer(ckpt, mon, ref_noise=0.5)
    history = trainer.train(10)
    assert [h["monitor/alarm"] for h in history] == [0.0, 1.0] and trainer.stopped_at == 2
    assert all(h["monitor/kl"] == h["ppo/kl"] > 0.5 for h in history)
    # the oracle scores exactly what the reward function scores: they rank the batch alike
    assert history[0]["monitor/rank_corr"] == pytest.approx(1.0) and history[0]["monitor/distinct_ratio"] == 1.0
    s = mon.summary()
    assert s["alarms"] == 1 and s["episodes"][0]["signals"] == ["kl"] and s["start"]["distinct2"] > 0


def test_a_quiet_monitor_does_not_stop_training(ckpt):
    trainer = _trainer(ckpt, TextMonitor(MonitorConfig(on_alarm="stop"), say=None))
    assert len(trainer.train(3)) == 3 and trainer.stopped_at is None


def test_ask_needs_a_labeling_engine(ckpt):
    with pytest.raises(PrefrlError, match="on_alarm.*`warn` or `stop` here, not `ask`"):
        _trainer(ckpt, TextMonitor(MonitorConfig(on_alarm="ask"), say=None))
