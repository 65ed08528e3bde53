"""Plots a person would rather look at than read: learning curves."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def read_progress(path: Path) -> dict[str, np.ndarray]:
    """progress.csv -> column name -> float array."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    return {k: np.array([float(r[k]) if r[k] not in ("", None) else np.nan for r in rows]) for k in rows[0]}


def plot_run(run_dir: Path, out: Path | None = None) -> Path | None:
    """learning_curve.png: true return vs env steps of the run (and of its baseline/ when present)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = []
    main = run_dir / "progress.csv"
    if main.exists():
        curves.append(("learned reward" if (run_dir / "prefs.sqlite").exists() else "true reward", main))
    if (run_dir / "baseline" / "progress.csv").exists():
        curves.append(("true reward (baseline)", run_dir / "baseline" / "progress.csv"))
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for label, path in curves:
        p = read_progress(path)
        if not p:
            continue
        ax.plot(p["timesteps"], p["true_return_mean"], label=label)
    ax.set_xlabel("env steps")
    ax.set_ylabel("true episode return")
    ax.set_title(run_dir.name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = out or run_dir / "learning_curve.png"
    fig.savefig(out)
    plt.close(fig)
    return out
