"""Plots a person would rather look at than read: learning curves."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from prefrl.core.rundir import RunDir


def read_progress(path: Path) -> dict[str, np.ndarray]:
    """progress.csv -> column name -> float array."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    return {k: np.array([float(r[k]) if r[k] not in ("", None) else np.nan for r in rows]) for k in rows[0]}


def plot_run(run_dir: str | Path, out: Path | None = None) -> Path | None:
    """learning_curve.png: true return vs env steps of the run (and of its baseline/ when present)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rd = RunDir(run_dir)
    curves = []
    if rd.progress.exists():
        curves.append(("learned reward" if rd.store.exists() else "true reward", rd.progress))
    if rd.baseline.progress.exists():
        curves.append(("true reward (baseline)", rd.baseline.progress))
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
    ax.set_title(rd.path.name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = out or rd.curve
    fig.savefig(out)
    plt.close(fig)
    return out


# ---------------------------------------------------------------------------------------------
# Sweep figures (paper style): one panel per task, one curve per arm, mean and spread over seeds.

TRUE_REWARD_COLOR = "#ff7f0e"  # Christiano et al. 2017 draw RL on the true reward in orange


def arm_colors(arms: list[str]) -> dict[str, str]:
    """`true` in orange, label budgets (`synthetic-N`) in shades of blue (darker = more labels, as in
    Christiano et al. 2017, figure 1), any other arm (B-Pref teachers) from a categorical palette."""
    import matplotlib

    colors: dict[str, str] = {}
    budgets = sorted((a for a in arms if a.startswith("synthetic-") and a.split("-", 1)[1].isdigit()),
                     key=lambda a: int(a.split("-", 1)[1]))
    blues = matplotlib.colormaps["Blues"]
    for i, a in enumerate(budgets):
        colors[a] = matplotlib.colors.to_hex(blues(0.45 + 0.5 * (i / max(1, len(budgets) - 1))))
    tab = matplotlib.colormaps["tab10"]
    others = [a for a in arms if a not in colors and a != "true"]
    for i, a in enumerate(others):
        colors[a] = matplotlib.colors.to_hex(tab([2, 3, 4, 5, 6, 8, 9, 7][i % 8]))  # no blue, no orange
    colors["true"] = TRUE_REWARD_COLOR
    return colors


def _mean_curve(seed_curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std over seeds on a common step grid (each curve linearly interpolated onto it).

    The grid covers the steps every seed reached, so the mean never mixes in a missing seed.
    """
    curves = []
    for x, y in seed_curves:
        ok = np.isfinite(y)
        if ok.sum() >= 1:
            curves.append((x[ok], y[ok]))
    if not curves:
        return np.array([]), np.array([]), np.array([])
    lo = max(c[0][0] for c in curves)
    hi = min(c[0][-1] for c in curves)
    grid = np.unique(np.concatenate([c[0] for c in curves]))
    grid = grid[(grid >= lo) & (grid <= hi)]
    ys = np.stack([np.interp(grid, x, y) for x, y in curves])  # (seeds, len(grid))
    return grid, ys.mean(axis=0), ys.std(axis=0)


def plot_sweep_curves(
    curves: list[dict],
    out: Path,
    arm_labels: dict[str, str] | None = None,
    arm_order: list[str] | None = None,
    title: str | None = None,
    ncols: int | None = None,
) -> Path | None:
    """True return vs env steps, one panel per task, one curve per arm: mean over seeds, ±1 sd shaded.

    Args:
        curves: rows with `task`, `arm`, `seed`, `timesteps`, `true_return_mean` (``prefrl.sweep.collect``).
        out: PNG to write.
        arm_labels: legend text per arm key (default: the key).
        arm_order: drawing and legend order of the arms (default: as they first appear).
        title: figure title.
        ncols: panels per row (default: up to 4).

    Returns:
        ``out``, or None when there is nothing to plot.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not curves:
        return None
    tasks = list(dict.fromkeys(r["task"] for r in curves))
    arms = list(dict.fromkeys(r["arm"] for r in curves))
    if arm_order:
        arms = [a for a in arm_order if a in arms] + [a for a in arms if a not in arm_order]
    colors = arm_colors(arms)
    ncols = ncols or min(4, len(tasks))
    nrows = math.ceil(len(tasks) / ncols)
    width = max(4.2 * ncols, 7.0)
    per_row = max(1, min(len(arms), int(width // 2.4)))
    legend_rows = math.ceil(len(arms) / per_row)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, 3.3 * nrows + 0.3 * legend_rows + 0.8), dpi=110,
                             squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        for arm in arms:
            rows = [r for r in curves if r["task"] == task and r["arm"] == arm]
            seeds = list(dict.fromkeys(r["seed"] for r in rows))
            seed_curves = []
            for s in seeds:
                rs = sorted((r for r in rows if r["seed"] == s), key=lambda r: r["timesteps"])
                seed_curves.append((np.array([r["timesteps"] for r in rs], float),
                                    np.array([_num(r["true_return_mean"]) for r in rs], float)))
            x, m, sd = _mean_curve(seed_curves)
            if not len(x):
                continue
            label = (arm_labels or {}).get(arm, arm) + (f" ({len(seed_curves)} seeds)" if len(seed_curves) > 1 else "")
            ls = "--" if arm == "true" else "-"
            ax.plot(x, m, ls, color=colors[arm], label=label, lw=1.6)
            if len(seed_curves) > 1:
                ax.fill_between(x, m - sd, m + sd, color=colors[arm], alpha=0.18, lw=0)
        ax.set_title(task)
        ax.set_xlabel("env steps")
        ax.set_ylabel("true episode return")
        ax.grid(alpha=0.3)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 3))
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    for ax in axes.flat:  # the legend of the panel with the most arms
        h, l = ax.get_legend_handles_labels()
        if len(h) > len(handles):
            handles, labels = h, l
    fig.legend(handles, labels, loc="lower center", ncol=per_row, frameon=False, bbox_to_anchor=(0.5, 0.0),
               fontsize=9)
    if title:
        import textwrap

        fig.suptitle("\n".join(textwrap.wrap(title, int(width * 11))), fontsize=11)
    fig.tight_layout(rect=(0, (0.3 * legend_rows + 0.15) / fig.get_figheight(), 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_normalized(
    table: list[dict],
    out: Path,
    arm_labels: dict[str, str] | None = None,
    arm_order: list[str] | None = None,
    title: str | None = None,
    ylabel: str = "return normalised to true-reward PPO",
) -> Path | None:
    """Grouped bars: per task, each arm's normalised final return (mean, ±1 sd over seeds as error bars).

    Args:
        table: rows with `task`, `arm`, `normalized`, `normalized_std` (``prefrl.sweep.summarize``).
        out: PNG to write.
        arm_labels: legend text per arm key.
        arm_order: bar order within a task.
        title: figure title.
        ylabel: y axis label.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in table if r.get("normalized") is not None]
    if not rows:
        return None
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    if arm_order:
        arms = [a for a in arm_order if a in arms] + [a for a in arms if a not in arm_order]
    colors = arm_colors(arms)
    width = 0.8 / len(arms)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.0 + 0.45 * len(arms) * len(tasks)) + 2.6, 3.8), dpi=110)
    for j, arm in enumerate(arms):
        xs, ms, sds = [], [], []
        for i, task in enumerate(tasks):
            r = next((r for r in rows if r["task"] == task and r["arm"] == arm), None)
            if r is None:
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            ms.append(_num(r["normalized"]))
            sds.append(_num(r.get("normalized_std")) or 0.0)
        ax.bar(xs, ms, width, yerr=sds, color=colors[arm], label=(arm_labels or {}).get(arm, arm), capsize=2)
    ax.axhline(1.0, color=TRUE_REWARD_COLOR, lw=1, ls="--")
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        import textwrap

        ax.set_title("\n".join(textwrap.wrap(title, 60)), fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def _num(v) -> float:
    try:
        return float(v) if v not in (None, "") else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def plot_ratings(ratings, path: str | Path, title: str = "policy ratings") -> Path:
    """Ratings of policies (a ``core.ratings.Ratings``) as Elo points with their intervals, best on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = ratings.order()[::-1]  # barh draws bottom-up
    elo, low, high = (ratings.elo(a)[order] for a in (ratings.rating, ratings.low, ratings.high))
    fig, ax = plt.subplots(figsize=(6, 0.9 + 0.45 * len(order)), dpi=110)
    ax.errorbar(elo, np.arange(len(order)), xerr=[elo - low, high - elo], fmt="o", capsize=4, color="#1f77b4")
    ax.set_yticks(np.arange(len(order)), [f"{ratings.names[i]} ({int(ratings.games[i])})" for i in order])
    ax.set_xlabel(f"rating (Elo), {round(ratings.ci * 100)}% interval   (games)")
    ax.set_title(f"{title}: {ratings.comparisons} comparisons")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_video(path: str | Path, frames: list[np.ndarray] | np.ndarray, fps: float) -> Path:
    """Write RGB uint8 frames (T, H, W, 3) to an MP4 (H.264 via imageio-ffmpeg)."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with imageio.get_writer(path, fps=max(1.0, float(fps)), codec="libx264", quality=7, macro_block_size=8) as w:
        for f in frames:
            w.append_data(np.asarray(f, np.uint8))
    return path
