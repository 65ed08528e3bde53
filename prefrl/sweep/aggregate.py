"""Collecting a sweep's run directories into CSVs, tables and figures."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from prefrl.core.rundir import RunDir
from prefrl.sweep.grid import Grid, RunSpec
from prefrl.sweep.runner import BACKENDS, run_status, run_sweep

# ---------------------------------------------------------------------------------------------
# Aggregation


RUN_FIELDS = ["key", "task", "arm", "reward", "oracle", "labels", "seed", "status", "timesteps", "labels_used",
              "true_return_mean", "eval_return_mean", "wall_s"]
CURVE_FIELDS = ["task", "arm", "seed", "timesteps", "labels", "true_return_mean", "wall_s"]
TABLE_FIELDS = ["task", "arm", "n_seeds", "eval_return_mean", "eval_return_std", "true_return_mean",
                "true_return_std", "normalized", "normalized_std", "wall_s_mean"]


def read_curve(run_dir: str | Path) -> dict[str, np.ndarray]:
    """progress.csv of a run with rows a resume repeated dropped (the later copy is kept).

    A run resumed from a checkpoint writes again the rows after that checkpoint; whenever
    ``timesteps`` goes back, the earlier rows at or past that point are discarded.
    """
    from prefrl.viz import read_progress

    path = RunDir(run_dir).progress
    if not path.is_file():
        return {}
    p = read_progress(path)
    if not p:
        return {}
    ts = p["timesteps"]
    keep: list[int] = []
    for i, t in enumerate(ts):
        while keep and ts[keep[-1]] >= t:
            keep.pop()
        keep.append(i)
    return {k: v[keep] for k, v in p.items()}


def collect(runs: Iterable[RunSpec], root: str | Path) -> tuple[list[dict], list[dict]]:
    """(one row per run, one row per progress row of every run) from the run directories."""
    root = Path(root)
    finals, curves = [], []
    for spec in runs:
        rd = RunDir(root / spec.dirname)
        status = run_status(spec, root)
        s = rd.read_summary() if status == "finished" else {}
        finals.append({
            "key": spec.key, "task": spec.task_name, "arm": spec.arm.key, "reward": spec.arm.reward,
            "oracle": spec.arm.oracle if spec.arm.reward == "learned" else "",
            "labels": spec.arm.labels if spec.arm.reward == "learned" else 0, "seed": spec.seed, "status": status,
            "timesteps": s.get("timesteps"), "labels_used": s.get("labels"),
            "true_return_mean": s.get("true_return_mean"), "eval_return_mean": s.get("eval_return_mean"),
            "wall_s": s.get("wall_s"),
        })
        c = read_curve(rd.path)
        for i in range(len(c.get("timesteps", []))):
            curves.append({"task": spec.task_name, "arm": spec.arm.key, "seed": spec.seed,
                           "timesteps": int(c["timesteps"][i]), "labels": int(c["labels"][i]),
                           "true_return_mean": float(c["true_return_mean"][i]), "wall_s": float(c["wall_s"][i])})
    return finals, curves


def summarize(finals: list[dict], curves: list[dict], metric: str = "eval_return_mean") -> list[dict]:
    """Per task and arm: mean and std over seeds, and the return normalised against true reward.

    ``normalized`` = (R - R0) / (R_true - R0), with R the arm's ``metric`` (mean over seeds),
    R_true the true-reward arm's and R0 the mean return of the first PPO rollout of all
    runs of the task (the untrained policy): 0 is where training started, 1 true-reward
    PPO. Without a finished true-reward arm it is left empty.
    """
    rows = []
    tasks = list(dict.fromkeys(r["task"] for r in finals))
    for task in tasks:
        tf = [r for r in finals if r["task"] == task and r["status"] == "finished"]
        first = {}
        for c in curves:
            if c["task"] == task and (c["arm"], c["seed"]) not in first:
                first[(c["arm"], c["seed"])] = c["true_return_mean"]
        r0 = float(np.nanmean(list(first.values()))) if first else float("nan")
        true_vals = [r[metric] for r in tf if r["reward"] == "true" and r[metric] is not None]
        r_true = float(np.mean(true_vals)) if true_vals else float("nan")
        span = r_true - r0
        for arm in dict.fromkeys(r["arm"] for r in finals if r["task"] == task):
            vals = np.array([r[metric] for r in tf if r["arm"] == arm and r[metric] is not None], float)
            train = np.array([r["true_return_mean"] for r in tf if r["arm"] == arm and r["true_return_mean"] is not None],
                             float)
            walls = [r["wall_s"] for r in tf if r["arm"] == arm and r["wall_s"] is not None]
            norm = (vals - r0) / span if len(vals) and np.isfinite(span) and abs(span) > 1e-9 else np.array([])
            rows.append({
                "task": task, "arm": arm, "n_seeds": len(vals),
                "eval_return_mean": _f(vals.mean()) if len(vals) else None,
                "eval_return_std": _f(vals.std()) if len(vals) else None,
                "true_return_mean": _f(train.mean()) if len(train) else None,
                "true_return_std": _f(train.std()) if len(train) else None,
                "normalized": _f(norm.mean()) if len(norm) else None,
                "normalized_std": _f(norm.std()) if len(norm) else None,
                "wall_s_mean": _f(np.mean(walls)) if walls else None,
            })
    return rows


def _f(x: float) -> float:
    return round(float(x), 4)


def write_csv(rows: list[dict], path: str | Path, fields: list[str] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = fields or (list(rows[0]) if rows else [])
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return path


def aggregate(runs: list[RunSpec], root: str | Path, out: str | Path | None = None) -> dict[str, Path]:
    """Write ``runs.csv``, ``curves.csv`` and ``table.csv`` (see ``summarize``) into ``out`` (default ``root``)."""
    out = Path(out) if out is not None else Path(root)
    finals, curves = collect(runs, root)
    table = summarize(finals, curves)
    return {
        "runs": write_csv(finals, out / "runs.csv", RUN_FIELDS),
        "curves": write_csv(curves, out / "curves.csv", CURVE_FIELDS),
        "table": write_csv(table, out / "table.csv", TABLE_FIELDS),
    }


def read_csv(path: str | Path) -> list[dict]:
    """A CSV written by ``write_csv`` back as dicts, numbers parsed (empty cells -> None)."""
    def parse(v: str):
        if v == "":
            return None
        try:
            f = float(v)
        except ValueError:
            return v
        return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f

    with open(path, newline="") as f:
        return [{k: parse(v) for k, v in row.items()} for row in csv.DictReader(f)]


def format_table(rows: list[dict], arm_labels: dict[str, str] | None = None) -> str:
    """Markdown table of ``summarize`` rows."""
    lines = ["| task | arm | seeds | eval return (mean ± sd) | train return (last 100 ep.) | normalized | wall s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        def pm(m, s):
            return "–" if m is None else f"{m:.1f} ± {s:.1f}"
        norm = "–" if r["normalized"] is None else f"{r['normalized']:.2f} ± {r['normalized_std']:.2f}"
        wall = "–" if r["wall_s_mean"] is None else f"{r['wall_s_mean']:.0f}"
        name = (arm_labels or {}).get(r["arm"], r["arm"])
        lines.append(f"| {r['task']} | {name} | {r['n_seeds']} | {pm(r['eval_return_mean'], r['eval_return_std'])} | "
                     f"{pm(r['true_return_mean'], r['true_return_std'])} | {norm} | {wall} |")
    return "\n".join(lines)


def add_sweep_args(ap, default_out: str) -> None:
    """The sweep flags every reproduction script shares (argparse)."""
    ap.add_argument("--backend", choices=BACKENDS, default="local",
                    help="local: a process pool on this machine; ray: one Ray task per run")
    ap.add_argument("--address", default=None,
                    help="Ray cluster address (e.g. ray://head:10001 or auto); default: start a local Ray")
    ap.add_argument("--workers", type=int, default=2, help="runs at a time (local backend, local Ray)")
    ap.add_argument("--out", default=default_out, help="output folder: one directory per run, CSVs, plots")
    ap.add_argument("--resume", action="store_true",
                    help="continue interrupted runs from their last checkpoints (finished runs are always skipped)")
    ap.add_argument("--aggregate-only", action="store_true", help="only collect finished runs into CSVs and plots")
    ap.add_argument("--dry-run", action="store_true", help="print the grid and each run's status, run nothing")


def print_plan(runs: list[RunSpec], root: str | Path) -> None:
    for spec in runs:
        print(f"{run_status(spec, root):12s} {spec.key:50s} steps={spec.steps or 'preset'} "
              f"overrides={json.dumps(spec.overrides) if spec.overrides else '-'}")


def sweep_and_report(
    grid: Grid,
    out: str | Path,
    figure_dir: str | Path,
    title: str,
    backend: str = "local",
    workers: int = 2,
    address: str | None = None,
    resume: bool = False,
    aggregate_only: bool = False,
    results: str | Path | None = None,
) -> int:
    """Run a grid (unless ``aggregate_only``), then write CSVs, ``table.md``, ``curves.png`` and
    ``normalized.png`` into ``figure_dir`` (and copy them into ``results``). Returns the failed runs."""
    import shutil

    from prefrl.viz import plot_normalized, plot_sweep_curves

    runs = grid.runs()
    failed = 0
    if not aggregate_only:
        outcomes = run_sweep(runs, out, backend=backend, workers=workers, address=address, resume=resume)
        failed = sum(o.status == "failed" for o in outcomes)
    figure_dir = Path(figure_dir)
    paths = aggregate(runs, out, figure_dir)
    labels = {a.key: a.label for a in grid.arms}
    order = [a.key for a in grid.arms]
    curves = plot_sweep_curves(read_csv(paths["curves"]), figure_dir / "curves.png", labels, order, title)
    table = read_csv(paths["table"])
    bars = plot_normalized(table, figure_dir / "normalized.png", labels, order,
                           title="final eval return: 0 = untrained policy, 1 = true-reward PPO")
    md = format_table(table, labels)
    (figure_dir / "table.md").write_text(md + "\n")
    print(md)
    made = [p for p in [*paths.values(), figure_dir / "table.md", curves, bars] if p is not None]
    print("wrote " + ", ".join(str(p) for p in made))
    if results is not None:
        dest = Path(results)
        dest.mkdir(parents=True, exist_ok=True)
        for p in made:
            shutil.copy(p, dest / Path(p).name)
        print(f"copied to {dest}")
    return failed
