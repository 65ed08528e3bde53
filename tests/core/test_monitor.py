"""The reward-hacking monitor's maths on synthetic series: it fires on divergence, stays quiet on agreement."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from prefrl.core.monitor import (
    HackingMonitor,
    MonitorConfig,
    TextMonitor,
    control_flags,
    disagreement_level,
    distinct_n,
    ood_ratio,
    pooled_accuracy,
    rank_corr,
    replay,
    suffix_share,
    trend,
    window_signals,
)
from prefrl.core.types import PrefrlError


def _updates(rng, n_updates: int, learned_slope: float, true_slope: float, link: float, n: int = 50):
    """Per-update clip returns: a true return drifting by ``true_slope`` per update, a learned one drifting by
    ``learned_slope`` and following the true one's clip-to-clip variation with weight ``link``."""
    learned, true = [], []
    for k in range(n_updates):
        y = rng.normal(true_slope * k, 1.0, n)
        learned.append(learned_slope * k + link * (y - true_slope * k) + rng.normal(0, 1.0, n))
        true.append(y)
    return learned, true


def test_trend_measures_change_in_units_of_spread():
    rng = np.random.default_rng(0)
    rising = [rng.normal(k, 1.0, 400) for k in range(5)]  # +1 std per update: +4 across the window
    assert trend(rising) == pytest.approx(4.0, abs=0.3)
    assert abs(trend([rng.normal(0, 1.0, 400) for _ in range(5)])) < 0.3
    assert math.isnan(trend([np.ones(3), np.ones(3)]))  # fewer than 3 updates: not measured
    assert trend([np.full(3, 2.0)] * 4) == 0.0


def test_window_signals_fire_on_divergence_and_stay_quiet_on_agreement():
    rng = np.random.default_rng(1)
    hacked = window_signals(*_updates(rng, 5, learned_slope=0.5, true_slope=-0.5, link=-0.5))
    assert hacked["divergence"] > 1.0 and hacked["rank_corr"] < 0.0, hacked
    healthy = window_signals(*_updates(rng, 5, learned_slope=0.5, true_slope=0.5, link=1.0))
    assert healthy["divergence"] < 0.0 and healthy["rank_corr"] > 0.5, healthy
    flat = window_signals(*_updates(rng, 5, learned_slope=0.0, true_slope=0.0, link=1.0))
    assert flat["divergence"] < 0.5 and flat["rank_corr"] > 0.5, flat


def test_rank_corr_is_not_measured_on_constant_returns():
    assert math.isnan(rank_corr(np.arange(10.0), np.full(10, 37.0)))  # a balanced pendulum: every clip equal
    assert rank_corr(np.arange(10.0), -np.arange(10.0)) == pytest.approx(-1.0)


def test_ood_ratio_and_pooled_accuracy():
    rng = np.random.default_rng(2)
    labeled = rng.normal(0, 1, (200, 1)) + rng.normal(0, 0.1, (200, 3))  # members agree
    novel = rng.normal(0, 1, (200, 1)) + rng.normal(0, 1.0, (200, 3))  # members disagree
    ratio = ood_ratio(disagreement_level(novel), disagreement_level(labeled))
    assert 7 < ratio < 13
    assert math.isnan(disagreement_level(novel[:, :1]))  # one member: no disagreement to measure
    assert math.isnan(pooled_accuracy([(10, 0.9), (10, 0.3)], 30)[0])  # too few new judgments yet
    acc, n = pooled_accuracy([(40, 0.9), (10, 0.3), (25, 0.5)], 30)  # the newest 35 judgments
    assert n == 35 and acc == pytest.approx((10 * 0.3 + 25 * 0.5) / 35)


def test_alarm_needs_patience_and_is_announced_once_per_episode():
    said: list[str] = []
    cfg = MonitorConfig(patience=2, min_rank_corr=0.0)
    mon = HackingMonitor(cfg, control_flags(cfg), say=said.append)
    series = [0.5, -0.2, 0.6, -0.3, -0.4, -0.5, -0.6, float("nan"), -0.7, 0.4, 0.5, 0.6, 0.7, 0.1, -0.3, -0.2]
    steps = [mon.observe(t, {"rank_corr": v}) for t, v in enumerate(series)]
    # one flagged value between healthy ones raises nothing; two in a row start an episode that
    # lasts through a NaN (not measured) until four healthy values in a row
    assert [s.alarm for s in steps] == [False] * 4 + [True] * 8 + [False] * 3 + [True]
    assert [t for t, s in enumerate(steps) if s.started] == [4, 15]
    assert len(said) == 3 and "rank_corr -0.40 < 0" in said[0] and "cleared at step 12" in said[1]
    summary = mon.summary()
    assert summary["alarms"] == 2 and summary["first_alarm"] == 4 and summary["alarm_updates"] == 9
    assert summary["signals"]["rank_corr"]["worst"] == -0.7 and summary["signals"]["rank_corr"]["measured"] == 15


def test_a_resumed_monitor_continues_its_alarm_and_counts():
    """state() at any update, loaded into a fresh monitor (a resume), gives the same alarms, messages
    and summary as the uninterrupted run."""
    cfg = MonitorConfig(patience=2, min_rank_corr=0.0)
    series = [0.5, -0.2, 0.6, -0.3, -0.4, -0.5, -0.6, float("nan"), -0.7, 0.4, 0.5, 0.6, 0.7, 0.1, -0.3, -0.2]
    whole = HackingMonitor(cfg, control_flags(cfg), say=None)
    ref = [whole.observe(t, {"rank_corr": v}).alarm for t, v in enumerate(series)]
    for cut in (5, 10):  # inside the first alarm, and in its healthy run before it clears
        first = HackingMonitor(cfg, control_flags(cfg), say=None)
        alarms = [first.observe(t, {"rank_corr": v}).alarm for t, v in enumerate(series[:cut])]
        said: list[str] = []
        resumed = HackingMonitor(cfg, control_flags(cfg), say=said.append)
        resumed.load_state(json.loads(json.dumps(first.state())))  # as saved in agent.pt
        alarms += [resumed.observe(t, {"rank_corr": v}).alarm for t, v in enumerate(series[cut:], cut)]
        assert alarms == ref
        assert not any("possible reward hacking at step 4" in m for m in said)  # not announced twice
        assert resumed.summary() == whole.summary()


def test_healthy_noise_stays_quiet_and_a_hacked_run_fires():
    """A long healthy run (learned follows true, both rising then flat, noisy) raises no alarm; the same
    monitor fires within a few updates once the learned return parts from the true one."""
    rng = np.random.default_rng(3)
    cfg = MonitorConfig()
    healthy, hacked = [], []
    for run, out in ((1.0, healthy), (-1.0, hacked)):
        learned_w: list[np.ndarray] = []
        true_w: list[np.ndarray] = []
        for k in range(40):
            y = rng.normal(min(k, 10) * 0.3 if run > 0 else -0.1 * k, 1.0, 64)
            x = (y if run > 0 else -y + 0.1 * k) + rng.normal(0, 1.0, 64)
            learned_w, true_w = (learned_w + [x])[-cfg.window:], (true_w + [y])[-cfg.window:]
            out.append({"t": k, **window_signals(learned_w, true_w)})
    assert replay(cfg, control_flags(cfg), healthy).summary()["alarms"] == 0
    fired = replay(cfg, control_flags(cfg), hacked).summary()
    assert fired["alarms"] >= 1 and fired["first_alarm"] <= 4, fired


def test_text_monitor_fires_when_completions_collapse_onto_one_ending():
    rng = np.random.default_rng(4)
    words = "the soup was cold warm tasty bland salty sweet room bed quiet noisy staff kind rude".split()
    varied = [" ".join(rng.choice(words, 8)) + "." for _ in range(64)]
    mon = TextMonitor(MonitorConfig(), say=None)
    assert not mon.observe(1, varied, kl=0.0).alarm
    collapsed = [str(rng.choice(["The soup was bad.", "The room was cold."])) + " We loved it." for _ in range(64)]
    steps = [mon.observe(t, collapsed, kl=3.0) for t in (2, 3)]
    assert steps[-1].started and {"suffix_share", "distinct_ratio"} <= set(mon.mon.active)
    assert suffix_share(collapsed) == 1.0 and suffix_share(varied) < 0.2
    assert "100% end in '... we loved it.'" in steps[-1].message
    assert distinct_n(collapsed) < 0.5 * distinct_n(varied)
    assert MonitorConfig(max_kl=2.0) and TextMonitor(MonitorConfig(max_kl=2.0), say=None).mon.flags[1].flagged(3.0)


@pytest.mark.parametrize("kw, match", [
    ({"on_alarm": "halt"}, "on_alarm must be one of warn, stop, ask"),
    ({"patience": 0}, "patience must be an integer >= 1"),
    ({"window": 1}, "window must be an integer >= 2"),
    ({"max_ood_ratio": float("nan")}, "max_ood_ratio must be a number"),
    ({"enabled": "yes"}, "enabled must be true or false"),
])
def test_bad_monitor_settings_are_refused(kw, match):
    with pytest.raises(PrefrlError, match=match):
        MonitorConfig(**kw)
