"""The reward-hacking monitor in a PPO run: clips the model ranks backwards raise the alarm and `stop` ends
training (a stand-in run; a real starved InvertedPendulum run, slow); `ask` brings labels forward on the
flagged clips without passing the budget; settings are checked."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import TINY_NET, TOY_SPEC
from stable_baselines3.common.logger import configure

from prefrl.cli import main
from prefrl.control.monitor import MonitorCallback
from prefrl.control.tasks import load_task
from prefrl.core.engine import EngineReport, LabelingEngine, PrefsConfig
from prefrl.core.ensemble import RewardEnsemble
from prefrl.core.monitor import MonitorConfig
from prefrl.core.oracles import open_oracle
from prefrl.core.store import PackedClips, PreferenceStore
from prefrl.core.toy import toy_clips
from prefrl.core.trainer import RewardTrainConfig, RewardTrainer
from prefrl.core.types import Clips, PrefrlError
from tests.control.test_train import TINY_PRESET

os.environ.setdefault("MUJOCO_GL", "egl")


def _stub_run(tmp_path: Path, sign: float, cfg: MonitorConfig) -> tuple[MonitorCallback, SimpleNamespace]:
    """A MonitorCallback over a stand-in PPO run (its engine, store and clip pool, no env)."""
    rng = np.random.default_rng(0)
    store = PreferenceStore(tmp_path / f"run{sign}")
    prefs = PrefsConfig(labels=20, initial_fraction=0.0)
    trainer = RewardTrainer(RewardEnsemble(TOY_SPEC, dataclasses.replace(TINY_NET, members=2)),
                            RewardTrainConfig(epochs=2), rng)
    engine = LabelingEngine(store, open_oracle("synthetic", store, rng), trainer, prefs.schedule(10_000), prefs, rng)
    engine.ask(toy_clips(20, length=8, seed=1), 10)  # some labeled clips for the disagreement reference
    pref = SimpleNamespace(engine=engine, report=EngineReport(0), _rollout_pool=None, _known={}, pretrained=True,
                           collector=SimpleNamespace(total_clips=0, clip_nbytes=8 * 6 * 4))
    cb = MonitorCallback(cfg, pref)  # type: ignore[arg-type]
    cb.model = SimpleNamespace(logger=configure(None, []))
    return cb, pref


def _rollout(pref: SimpleNamespace, k: int, sign: float) -> None:
    """One rollout's 40 new clips in a pool of 80 (the older half from the previous rollout). Their true
    returns follow the ensemble's predictions (sign +1: a rising true return) or run against them (sign -1:
    the model ranks the clips backwards while the true return falls)."""
    clips = toy_clips(80, length=8, seed=10 + k)
    pred = pref.engine.ensemble.predict_clip_returns(clips.model_inputs()).mean(axis=1)
    rew = np.zeros((80, 8), np.float32)
    rew[:, 0] = sign * (pred + 0.5 * k * pred.std())
    pref._rollout_pool = Clips(clips.obs, clips.acts, rew)
    pref.collector.total_clips += 40
    total = pref.collector.total_clips
    pref.collector.keys = lambda: list(range(total - 80, total))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_callback_fires_on_clips_the_model_ranks_backwards_and_stop_ends_training(tmp_path: Path, sign: float):
    cb, pref = _stub_run(tmp_path, sign, MonitorConfig(on_alarm="stop", clips_per_update=16))
    pref.engine.ensemble.norm_mean.fill_(0.1)  # an RL-time scale apart from the raw one
    pref.engine.ensemble.norm_std.fill_(2.0)
    rows = []
    for k in range(6):
        _rollout(pref, k, sign)
        rows.append(cb.measure(1000 * (k + 1)))
        assert all(len(c) == 16 for c in cb.window)  # the newest clips, a subset of clips_per_update
        # every window entry's member returns at the RL-time scale, the newest ones from the engine's cache
        for c, r in zip(cb.window, cb._window_returns):
            np.testing.assert_allclose(r, pref.engine.ensemble.predict_clip_returns(c.clips().model_inputs()),
                                       rtol=1e-5, atol=1e-5)
    corr = [r["monitor_rank_corr"] for r in rows]
    if sign > 0:  # learned and true returns agree: quiet, training goes on
        assert min(corr) > 0.7 and not any(r["monitor_alarm"] for r in rows) and cb._on_step()
        assert cb.summary()["alarms"] == 0 and "stopped_at" not in cb.summary()
    else:  # ranked backwards: flagged from the first rollout, an alarm at the second, then training stops
        assert max(corr) < -0.7 and [r["monitor_alarm"] for r in rows] == [0] + [1] * 5
        assert not cb._on_step() and cb.summary()["stopped_at"] == 2000 and cb.summary()["alarms"] == 1
    assert all(0 < r["monitor_ood_ratio"] < 100 for r in rows)  # both disagreement levels measured
    assert all(r["monitor_true_trend"] * sign > 0 for r in rows[2:])  # measured from the third rollout on


@pytest.mark.slow
def test_starved_inverted_pendulum_raises_the_alarm(tmp_path: Path):
    """The README's case: InvertedPendulum with 10 labels and no termination input (with it, 10
    labels are enough to learn the task); the alarm comes within 16k steps and stops the run."""
    from importlib.resources import files

    preset = tmp_path / "starved.toml"
    text = (files("prefrl.control") / "presets" / "inverted-pendulum.toml").read_text()
    assert "termination_input = true" in text
    preset.write_text(text.replace("termination_input = true", "termination_input = false"))
    run = tmp_path / "run"
    summary = main(["train", "--task", str(preset), "--labels", "10", "--steps", "30000", "--run-dir", str(run),
                    "--eval-episodes", "0", "--no-video", "--on-alarm", "stop"])
    mon = summary["monitor"]
    assert mon["alarms"] == 1 and mon["first_alarm"] <= 16384 and summary["timesteps"] < 30000, mon
    with open(run / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["monitor_alarm"] == "0" and rows[-1]["monitor_alarm"] == "1"
    assert float(rows[-1]["monitor_rank_corr"]) < -0.2 or float(rows[-1]["monitor_divergence"]) > 0.5, rows[-1]
    assert json.loads((run / "summary.json").read_text())["monitor"]["stopped_at"] == mon["stopped_at"]


def _callback(store: PreferenceStore, budget: int, asked_before: int) -> MonitorCallback:
    rng = np.random.default_rng(0)
    cfg = PrefsConfig(labels=budget, initial_fraction=0.0)
    trainer = RewardTrainer(RewardEnsemble(TOY_SPEC, dataclasses.replace(TINY_NET, members=2)),
                            RewardTrainConfig(epochs=2), rng)
    engine = LabelingEngine(store, open_oracle("synthetic", store, rng), trainer, cfg.schedule(10_000), cfg, rng)
    engine.ask(toy_clips(20, length=8, seed=1), asked_before)
    pref = SimpleNamespace(engine=engine, report=EngineReport(0), pretrained=True, collector=SimpleNamespace(total_clips=0))
    cb = MonitorCallback(MonitorConfig(on_alarm="ask", ask_labels=10), pref)  # type: ignore[arg-type]
    cb.window = [PackedClips(toy_clips(30, length=8, seed=2))]  # the newest (flagged) clips
    return cb


@pytest.mark.parametrize("budget, asked_before, extra", [(40, 5, 10), (40, 35, 5), (40, 40, 0)])
def test_ask_brings_labels_forward_on_the_flagged_clips(tmp_path: Path, budget: int, asked_before: int, extra: int):
    with PreferenceStore(tmp_path) as store:
        cb = _callback(store, budget, asked_before)
        cb._react(1000)
        assert cb.summary()["extra_labels_asked"] == extra
        assert store.count_judgments() == asked_before + extra <= budget  # never past the budget
        flagged = {tuple(np.round(c, 5).ravel()) for c in cb.window[0].clips().obs}
        new = store.load_clips(store.clip_ids()[-1:]).obs[0]
        assert extra == 0 or tuple(np.round(new, 5).ravel()) in flagged  # the extra pairs are over flagged clips


def test_monitor_settings_are_checked_and_can_be_turned_off(tmp_path: Path):
    preset = tmp_path / "p.toml"
    preset.write_text(TINY_PRESET + '[monitor]\non_alarm = "panic"\n')
    with pytest.raises(PrefrlError, match=r"\[monitor\].*on_alarm must be one of warn, stop, ask"):
        load_task(str(preset))
    preset.write_text(TINY_PRESET + "[monitor]\npatiense = 3\n")
    with pytest.raises(PrefrlError, match="unknown key `patiense`; did you mean `patience`"):
        load_task(str(preset))
    preset.write_text(TINY_PRESET)
    summary = main(["train", "--task", str(preset), "--run-dir", str(tmp_path / "off"), "--steps", "1024",
                    "--eval-episodes", "0", "--no-video", "--on-alarm", "off"])
    assert "monitor" not in summary
    assert "monitor_alarm" not in (tmp_path / "off" / "progress.csv").read_text().splitlines()[0]
