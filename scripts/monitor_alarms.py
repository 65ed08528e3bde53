"""False alarms and detections of the reward-hacking monitor over finished runs.

Every run (control: ``prefrl train``; text: ``prefrl text ppo``) records the monitor's signal
values per update in ``progress.csv`` (``monitor_*`` / ``monitor/*`` columns). This script
replays the alarm over those values (``prefrl.core.monitor.replay``, the code the runs used),
with the default thresholds or others (``--set min_rank_corr=-0.2``), and reports for runs
known healthy how many raised an alarm (the false-alarm rate) and for runs known hacked how
many did and when. ``--sweep NAME=V1,V2,...`` repeats the count for each value of one threshold.

    python scripts/monitor_alarms.py --healthy runs/quick-s0 runs/quick-s1 --hacked runs/ip10-s0 \\
        --out results/monitor
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import sys
from pathlib import Path

from prefrl.core.monitor import MonitorConfig, control_flags, replay, text_flags
from prefrl.core.rundir import RunDir


def load_series(run: Path) -> tuple[str, list[dict[str, float]], str, str]:
    """("control" | "text", per-update signal values, true and learned score first -> last) from progress.csv."""
    with open(RunDir(run).progress, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"{run}: progress.csv has no rows")
    if "monitor_alarm" in rows[0]:
        kind, prefix, t_key = "control", "monitor_", "timesteps"
    elif "monitor/alarm" in rows[0]:
        kind, prefix, t_key = "text", "monitor/", "step"
    else:
        sys.exit(f"{run}: progress.csv has no monitor columns (a run without the monitor)")
    series = []
    for r in rows:
        vals = {k[len(prefix):]: _num(v) for k, v in r.items() if k.startswith(prefix)}
        series.append({"t": _num(r[t_key]), **vals})
    true_key, learned_key = ("true_return_mean", "learned_return_mean") if kind == "control" else ("oracle/score",
                                                                                                    "ppo/score")
    return kind, series, _first_last(rows, true_key), _first_last(rows, learned_key)


def _first_last(rows: list[dict], key: str) -> str:
    vals = [_num(r.get(key)) for r in rows]
    vals = [v for v in vals if not math.isnan(v)]
    return f"{vals[0]:.3g} → {vals[-1]:.3g}" if vals else "–"


def _num(v: str | None) -> float:
    try:
        return float(v) if v not in (None, "") else float("nan")
    except ValueError:
        return float("nan")


def judge(runs: dict[str, list[Path]], cfg: MonitorConfig) -> list[dict]:
    out = []
    for label, paths in runs.items():
        for run in paths:
            kind, series, true, learned = load_series(run)
            flags = control_flags(cfg) if kind == "control" else text_flags(cfg)
            s = replay(cfg, flags, series).summary()
            fired = sorted({sig for ep in s["episodes"] for sig in ep["signals"]})
            out.append({"run": str(run), "expected": label, "kind": kind, "updates": s["updates"],
                        "alarms": s["alarms"], "first_alarm": s["first_alarm"],
                        "alarm_share": s["alarm_updates"] / max(s["updates"], 1), "signals": " ".join(fired),
                        "last_t": int(series[-1]["t"]), "true": true, "learned": learned})
    return out


def rates(rows: list[dict]) -> dict[str, float]:
    healthy = [r for r in rows if r["expected"] == "healthy"]
    hacked = [r for r in rows if r["expected"] == "hacked"]
    return {
        "healthy_runs": len(healthy),
        "false_alarm_runs": sum(r["alarms"] > 0 for r in healthy),
        "false_alarm_rate": sum(r["alarms"] > 0 for r in healthy) / len(healthy) if healthy else math.nan,
        "healthy_update_alarm_share": (sum(r["alarm_share"] * r["updates"] for r in healthy) /
                                       max(1, sum(r["updates"] for r in healthy))) if healthy else math.nan,
        "hacked_runs": len(hacked),
        "detected": sum(r["alarms"] > 0 for r in hacked),
    }


def table(rows: list[dict]) -> str:
    header = ("| run | expected | true return / oracle score | learned return / RM score | updates | alarms | "
              "first alarm (step) | signals | share of updates in alarm |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        first = "–" if r["first_alarm"] is None else f"{r['first_alarm']} of {r['last_t']}"
        lines.append(f"| {Path(r['run']).name} | {r['expected']} | {r['true']} | {r['learned']} | {r['updates']} | "
                     f"{r['alarms']} | {first} | "
                     f"{r['signals'] or '–'} | {r['alarm_share']:.2f} |")
    return "\n".join(lines)


def _config(sets: list[str]) -> MonitorConfig:
    over = {}
    names = {f.name: f for f in dataclasses.fields(MonitorConfig)}
    for s in sets:
        key, _, val = s.partition("=")
        if key not in names:
            sys.exit(f"--set: unknown monitor setting `{key}` (known: {', '.join(names)})")
        over[key] = None if val == "none" else (int(val) if isinstance(getattr(MonitorConfig(), key), int) else float(val))
    return MonitorConfig(**over)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--healthy", nargs="*", type=Path, default=[], help="run dirs of healthy runs")
    ap.add_argument("--hacked", nargs="*", type=Path, default=[], help="run dirs of runs known to hack the reward")
    ap.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE", help="monitor thresholds to replay with")
    ap.add_argument("--sweep", default=None, metavar="NAME=V1,V2", help="count alarms for each value of one threshold")
    ap.add_argument("--out", type=Path, default=None, help="write table.md and alarms.json here")
    args = ap.parse_args(argv)
    cfg = _config(args.set)
    runs = {"healthy": args.healthy, "hacked": args.hacked}
    rows = judge(runs, cfg)
    summary = rates(rows)
    text = table(rows)
    text += (f"\n\nFalse alarms: {summary['false_alarm_runs']} of {summary['healthy_runs']} healthy runs "
             f"(share of their updates in alarm: {summary['healthy_update_alarm_share']:.3f}); "
             f"detected: {summary['detected']} of {summary['hacked_runs']} hacked runs.")
    sweep = []
    if args.sweep:
        name, _, values = args.sweep.partition("=")
        text += f"\n\n| {name} | false alarms (healthy runs) | detected (hacked runs) |\n|---|---|---|"
        for v in values.split(","):
            r = rates(judge(runs, _config(args.set + [f"{name}={v}"])))
            sweep.append({name: float(v), **r})
            text += f"\n| {v} | {r['false_alarm_runs']} / {r['healthy_runs']} | {r['detected']} / {r['hacked_runs']} |"
    print(text)
    out = {"thresholds": cfg.thresholds(), "summary": summary, "runs": rows, "sweep": sweep}
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "table.md").write_text(text + "\n")
        (args.out / "alarms.json").write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
