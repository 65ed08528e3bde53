"""Ablation of the reward-learning choices: each varied against the current default, per task.

Every cell is a sweep of real `prefrl train` runs (the sweep machinery: local processes or Ray,
resumable). A variant is a set of preset overrides, run as ``TASK@VARIANT``; the true-reward
arm of each task is run once. Per cell (mean and sd over seeds):

- ``return_ratio``: mean training true return (the area under the learning curve) over the
  true-reward arm's, same seeds and steps (tasks with positive returns); ``normalised``: the
  same on a scale where 0 is the untrained policy (the true arm's first rollout) and 1 the
  true-reward arm (any sign: Reacher); ``eval_ratio`` for the final deterministic evaluation;
- ``onpolicy_acc``: the final reward model's pairwise accuracy on fresh clips of the final
  agent's own behaviour (not the validation split: clips it never saw, from the policy it
  shaped), and ``onpolicy_spearman``, the rank correlation of predicted and true clip returns;
- ``wall_s``: training wall time.

    python scripts/ablate_reward.py --quick                       # InvertedPendulum, 3 seeds
    python scripts/ablate_reward.py --tasks inverted-pendulum reacher --seeds 0 1 2 3 4
    python scripts/ablate_reward.py --variants default oob-off norm-off --quick

Writes OUT/ablation.csv, OUT/ablation.md and OUT/ablation.png (one panel per task: return
ratio and on-policy accuracy per variant), and copies them to --results.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prefrl.control.train import return_ratio  # noqa: E402
from prefrl.core.rundir import RunDir  # noqa: E402
from prefrl.core.types import PrefrlError  # noqa: E402
from prefrl.sweep import Arm, Grid, add_sweep_args, print_plan, run_sweep  # noqa: E402

# task -> (label budget, env steps, overrides shared by every variant of that task)
TASKS = {
    "inverted-pendulum": (100, 30_000, {}),
    "reacher": (350, 100_000, {}),
    "half-cheetah": (300, 200_000, {}),
}
# variant -> overrides against the current defaults (each one choice changed)
VARIANTS: dict[str, dict] = {
    "default": {},
    "shared-val": {"reward_train": {"validation": "shared"}},
    "raw-inputs": {"reward_model": {"normalize_inputs": False}},
    "tanh": {"reward_model": {"output": "tanh"}},
    "wide": {"reward_model": {"hidden": [256, 256]}},
    "narrow": {"reward_model": {"hidden": [32]}},
    "members-1": {"reward_model": {"members": 1}},
    "members-5": {"reward_model": {"members": 5}},
    "state-only": {"reward_model": {"use_actions": False}},
    "target-std-0.05": {"reward_model": {"target_std": 0.05}},
    "clip-half": {"prefs": {"clip_seconds": 0.5}},
    "clip-double": {"prefs": {"clip_seconds": 2.0}},
    "query-random": {"prefs": {"query": "random"}},
    "query-entropy": {"prefs": {"query": "entropy"}},
    "pool-x3": {"prefs": {"pool_factor": 3}},
    "action-squares": {"reward_model": {"action_squares": True}},
    "no-action-squares": {"reward_model": {"action_squares": False}},
    "refit-epochs-20": {"prefs": {"reward_epochs": 20}},
    "retrain-0.25": {"prefs": {"retrain_fraction": 0.25}},
    "initial-0.5": {"prefs": {"initial_fraction": 0.5}},
    "initial-0.75": {"prefs": {"initial_fraction": 0.75}},
    "no-reward-vecnorm": {"env": {"normalize_reward": False}},
    "termination-input": {"reward_model": {"termination_input": True}},
    "no-termination-input": {"reward_model": {"termination_input": False}},
    "initial-0.25": {"prefs": {"initial_fraction": 0.25}},
    "initial-1.0": {"prefs": {"initial_fraction": 1.0}},
    "fit-longer": {"prefs": {"initial_epochs": 200, "reward_epochs": 20}},
}
QUICK = {"tasks": ["inverted-pendulum"], "variants": ["default", "shared-val", "raw-inputs", "action-squares",
                                                     "initial-0.5", "query-random", "members-1"],
         "seeds": [0, 1, 2]}


def ablation_runs(tasks: list[str], variants: list[str], seeds: list[int]) -> list:
    """Per task: the true-reward arm on the plain preset, and the learned arm (the task's label
    budget) for every variant (``TASK@VARIANT``)."""
    runs = []
    for task in tasks:
        labels, steps, base = TASKS[task]
        cells = {task: {**base, "steps": steps}}
        for v in variants:
            cells[f"{task}@{v}"] = _merge({**base, "steps": steps}, VARIANTS[v])
        g = Grid(tasks=cells, arms=[Arm.true(), Arm.learned(labels)], seeds=seeds, eval_episodes=5)
        runs += [r for r in g.runs() if (r.arm.reward == "true") == ("@" not in r.task)]
    return runs


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def collect_cells(runs: list, out: Path, onpolicy_clips: int) -> list[dict]:
    from prefrl.control.diagnose import reward_check

    from prefrl.viz import read_progress

    true, start = {}, {}
    for r in runs:
        rd = RunDir(out / r.dirname)
        if r.arm.reward == "true" and rd.status() == "finished":
            true[(r.preset, r.seed)] = rd.read_summary()
            start[(r.preset, r.seed)] = float(read_progress(rd.progress)["true_return_mean"][0])  # untrained policy
    rows = []
    for r in runs:
        rd = RunDir(out / r.dirname)
        if r.arm.reward != "learned" or rd.status() != "finished":
            continue
        s, t = rd.read_summary(), true.get((r.preset, r.seed))
        check_file = rd.path / "onpolicy_check.json"
        if check_file.is_file():
            check = json.loads(check_file.read_text())
        else:
            check = reward_check(rd.path, n_clips=onpolicy_clips)
            check_file.write_text(json.dumps(check, indent=2))
        rows.append({
            "task": r.preset, "variant": r.variant, "seed": r.seed,
            "true_return_mean": s.get("true_return_mean"), "eval_return_mean": s.get("eval_return_mean"),
            "return_ratio": return_ratio(s.get("true_return_mean"), t and t.get("true_return_mean")),
            "normalised": _normalised(s.get("true_return_mean"), t and t.get("true_return_mean"), start.get((r.preset, r.seed))),
            "eval_ratio": return_ratio(s.get("eval_return_mean"), t and t.get("eval_return_mean")),
            "onpolicy_acc": check["accuracy"], "onpolicy_spearman": check["spearman"], "wall_s": s.get("wall_s"),
        })
    return rows


def _normalised(a, b, r0) -> float | None:
    """0 = the untrained policy (the true arm's first rollout, same seed), 1 = the true arm."""
    if a is None or b is None or r0 is None or b == r0:
        return None
    return (a - r0) / (b - r0)


def summarize(rows: list[dict]) -> list[dict]:
    out = []
    keys = sorted({(r["task"], r["variant"]) for r in rows})
    for task, variant in keys:
        rs = [r for r in rows if r["task"] == task and r["variant"] == variant]
        cell = {"task": task, "variant": variant, "seeds": len(rs),
                "tied_checks": sum(1 for r in rs if r["onpolicy_acc"] is None or not np.isfinite(r["onpolicy_acc"]))}
        for k in ("return_ratio", "normalised", "eval_ratio", "onpolicy_acc", "onpolicy_spearman", "wall_s"):
            v = [r[k] for r in rs if r[k] is not None and np.isfinite(r[k])]  # NaN: the agent's clips all tie
            cell[k] = float(np.mean(v)) if v else None
            cell[k + "_sd"] = float(np.std(v)) if v else None
        out.append(cell)
    return out


def write(rows: list[dict], cells: list[dict], out: Path, results: Path | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "ablation_runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with open(out / "ablation.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(cells[0]))
        w.writeheader()
        w.writerows(cells)
    lines = ["| task | variant | seeds | return ratio | normalised | eval ratio | on-policy acc | on-policy Spearman | wall s |",
             "|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda c, k: "-" if c[k] is None else f"{c[k]:.2f} ± {c[k + '_sd']:.2f}"  # noqa: E731
    tied = lambda c: f" ({c['tied_checks']} of {c['seeds']}: agent's clips all tie)" if c["tied_checks"] else ""  # noqa: E731
    for c in cells:
        lines.append(f"| {c['task']} | {c['variant']} | {c['seeds']} | {fmt(c, 'return_ratio')} | {fmt(c, 'normalised')} | "
                     f"{fmt(c, 'eval_ratio')} | "
                     f"{fmt(c, 'onpolicy_acc')}{tied(c)} | {fmt(c, 'onpolicy_spearman')} | "
                     f"{'-' if c['wall_s'] is None else round(c['wall_s'])} |")
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    _plot(cells, out / "ablation.png")
    print("\n".join(lines))
    if results is not None:
        import shutil

        results.mkdir(parents=True, exist_ok=True)
        for name in ("ablation.csv", "ablation_runs.csv", "ablation.md", "ablation.png"):
            shutil.copy(out / name, results / name)


def _plot(cells: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({c["task"] for c in cells})
    fig, axes = plt.subplots(len(tasks), 2, figsize=(11, 0.4 * max(len(cells) // max(len(tasks), 1), 4) + 1.5 * len(tasks)),
                             squeeze=False)
    for row, task in zip(axes, tasks):
        cs = [c for c in cells if c["task"] == task]
        names = [c["variant"] for c in cs]
        for ax, key, label in ((row[0], "normalised", "training return, normalised (0 untrained, 1 true-reward arm)"),
                               (row[1], "onpolicy_acc", "on-policy pair accuracy")):
            vals = [c[key] if c[key] is not None else np.nan for c in cs]
            sds = [c[key + "_sd"] or 0 for c in cs]
            colors = ["tab:blue" if n == "default" else "tab:gray" for n in names]
            ax.barh(names, vals, xerr=sds, color=colors)
            ax.axvline(1.0 if key == "normalised" else 0.5, color="k", lw=0.8, ls="--")
            ax.set_title(f"{task}: {label}", fontsize=9)
            ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"the small grid: {QUICK}")
    ap.add_argument("--tasks", nargs="+", choices=list(TASKS))
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int)
    ap.add_argument("--onpolicy-clips", type=int, default=200, help="fresh clips of the final agent per run")
    ap.add_argument("--results", type=Path, help="also copy the CSVs, table and figure here (e.g. results/ablation)")
    add_sweep_args(ap, default_out="")
    args = ap.parse_args()
    tasks = args.tasks or (QUICK["tasks"] if args.quick else list(TASKS))
    variants = args.variants or (QUICK["variants"] if args.quick else list(VARIANTS))
    seeds = args.seeds or QUICK["seeds"]
    out = Path(args.out or ROOT / "runs" / "ablate-reward")
    try:
        runs = ablation_runs(tasks, variants, seeds)
        if args.dry_run:
            print_plan(runs, out)
            return
        if not args.aggregate_only:
            failed = [o for o in run_sweep(runs, out, backend=args.backend, workers=args.workers, address=args.address,
                                           resume=args.resume) if o.status == "failed"]
            if failed:
                print(f"{len(failed)} run(s) failed; see their sweep.log, fix, and run again with --resume")
        rows = collect_cells(runs, out, args.onpolicy_clips)
        if not rows:
            raise SystemExit("no finished learned-reward runs to report")
        write(rows, summarize(rows), out, args.results)
    except PrefrlError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
