"""The reward-hacking monitor in a PPO run: a starved reward model is caught, the alarm stops or asks."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from prefrl.cli import main
from prefrl.control.tasks import load_task
from prefrl.core.store import PreferenceStore
from prefrl.core.types import PrefrlError

os.environ.setdefault("MUJOCO_GL", "egl")

# InvertedPendulum with a reward model starved of labels: 5 judgments, most of them on
# random-policy clips; PPO climbs the learned reward while the pole falls more and more
STARVED = """
name = "starved"
steps = 8192
[env]
id = "InvertedPendulum-v5"
episode = "fixed"
termination_penalty = -10.0
max_episode_steps = 200
[ppo]
n_steps = 512
batch_size = 64
n_epochs = 4
[prefs]
labels = 5
clip_length = 10
pool_size = 200
reward_epochs = 3
initial_epochs = 20
[reward_model]
hidden = [16, 16]
[monitor]
on_alarm = "{on_alarm}"
"""


def _run(tmp_path: Path, on_alarm: str, seed: int = 0) -> tuple[dict, Path]:
    preset = tmp_path / f"{on_alarm}.toml"
    preset.write_text(STARVED.format(on_alarm=on_alarm))
    run = tmp_path / on_alarm
    summary = main(["train", "--task", str(preset), "--run-dir", str(run), "--eval-episodes", "0", "--no-video",
                    "--seed", str(seed)])
    return summary, run


def test_starved_reward_model_raises_the_alarm_and_stop_ends_training(tmp_path: Path):
    summary, run = _run(tmp_path, "stop")
    mon = summary["monitor"]
    assert mon["alarms"] == 1 and mon["first_alarm"] is not None, mon
    assert {"rank_corr", "divergence"} & set(mon["episodes"][0]["signals"]), mon
    assert summary["timesteps"] < 8192 and mon["stopped_at"] == mon["first_alarm"], summary
    rows = list(csv.DictReader(open(run / "progress.csv")))
    assert rows[-1]["monitor_alarm"] == "1" and rows[0]["monitor_alarm"] == "0"
    assert float(rows[-1]["monitor_rank_corr"]) < 0.0 or float(rows[-1]["monitor_divergence"]) > 0.5
    assert json.loads((run / "summary.json").read_text())["monitor"]["stopped_at"] == mon["stopped_at"]


def test_ask_brings_labels_forward_on_the_flagged_clips(tmp_path: Path):
    summary, run = _run(tmp_path, "ask")
    mon = summary["monitor"]
    assert mon["alarms"] >= 1 and mon["extra_labels_asked"] > 0, mon
    with PreferenceStore(run, readonly=True) as store:
        assert store.count_judgments() == 5  # brought forward from the budget, never past it


def test_monitor_settings_are_checked_and_can_be_turned_off(tmp_path: Path):
    preset = tmp_path / "bad.toml"
    preset.write_text(STARVED.format(on_alarm="panic"))
    with pytest.raises(PrefrlError, match=r"\[monitor\].*on_alarm must be one of warn, stop, ask"):
        load_task(str(preset))
    preset.write_text(STARVED.format(on_alarm="warn").replace("[monitor]", "[monitor]\npatiense = 3"))
    with pytest.raises(PrefrlError, match="unknown key `patiense`; did you mean `patience`"):
        load_task(str(preset))
    preset.write_text(STARVED.format(on_alarm="warn"))
    summary = main(["train", "--task", str(preset), "--run-dir", str(tmp_path / "off"), "--steps", "1024",
                    "--eval-episodes", "0", "--no-video", "--on-alarm", "off"])
    assert "monitor" not in summary
    assert "monitor_alarm" not in (tmp_path / "off" / "progress.csv").read_text().splitlines()[0]
