"""The reward-hacking monitor in text PPO: monitor/* logged per step, an alarm stops training, `ask` is refused."""

from __future__ import annotations

import pytest

from prefrl.core.monitor import MonitorConfig, TextMonitor
from prefrl.core.types import PrefrlError
from prefrl.core.utils import set_torch_threads
from prefrl.text.corpus import make_corpus
from prefrl.text.lm import make_tiny_checkpoint
from prefrl.text.ppo import TextPPOTrainer
from tests.text.test_text_ppo import TINY, _length_reward, _trainer


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    set_torch_threads(1)
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "lm",
                                [e.prompt + e.completion for e in make_corpus(300, seed=0)], TINY, seed=0)


def _monitored(ckpt, monitor: TextMonitor, ref_noise: float = 0.0) -> TextPPOTrainer:
    """test_text_ppo's tiny trainer (length reward) with the same score as a watching oracle, and a monitor."""
    trainer, _ = _trainer(ckpt, ref_noise)
    trainer.oracle, trainer.monitor = _length_reward, monitor
    return trainer


def test_monitor_signals_are_logged_and_an_alarm_stops_training(ckpt):
    # a reference far from the policy: every batch's KL is above the (deliberately low) bound
    mon = TextMonitor(MonitorConfig(on_alarm="stop", max_kl=0.5, patience=2), say=None)
    trainer = _monitored(ckpt, mon, ref_noise=0.5)
    history = trainer.train(10)
    assert [h["monitor/alarm"] for h in history] == [0.0, 1.0] and trainer.stopped_at == 2
    assert all(h["monitor/kl"] == h["ppo/kl"] > 0.5 for h in history)
    # the oracle scores exactly what the reward function scores: they rank the batch alike
    assert history[0]["monitor/rank_corr"] == pytest.approx(1.0) and history[0]["monitor/distinct_ratio"] == 1.0
    s = mon.summary()
    assert s["alarms"] == 1 and s["episodes"][0]["signals"] == ["kl"] and s["start"]["distinct2"] > 0


def test_a_quiet_monitor_does_not_stop_training(ckpt):
    trainer = _monitored(ckpt, TextMonitor(MonitorConfig(on_alarm="stop"), say=None))
    assert len(trainer.train(3)) == 3 and trainer.stopped_at is None


def test_ask_needs_a_labeling_engine(ckpt):
    trainer, tok = _trainer(ckpt, 0.0)
    with pytest.raises(PrefrlError, match="on_alarm.*`warn` or `stop` here, not `ask`"):
        TextPPOTrainer(trainer.policy, tok, _length_reward, ["We"], trainer.cfg, trainer.sample_cfg,
                       monitor=TextMonitor(MonitorConfig(on_alarm="ask"), say=None))
