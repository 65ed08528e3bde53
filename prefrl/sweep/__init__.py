"""Sweeps: a grid of runs (tasks x arms x seeds), one run directory each, fanned out over
local processes or Ray tasks, resumable, aggregated to CSV.

A *run* is one ``prefrl train``: a task preset (with overrides), an *arm* (true-reward
PPO, or a learned reward from an oracle with a label budget) and a seed. Its key
``task/arm/sSEED`` names its directory under the sweep's output folder
(``OUT/task--arm--sSEED``), so a sweep started again finds its earlier runs:

- a run with ``summary.json`` is finished and skipped;
- a run with ``config.json`` but no ``summary.json`` was interrupted: with ``resume=True``
  it continues from its last checkpoint (``prefrl train --resume``), without it the sweep
  refuses to start (nothing is overwritten);
- a run directory whose ``config.json`` differs from the grid's run is refused too;
- a run that another live sweep on this host is running (``sweep.lock``) makes the sweep refuse.

Backends: ``local`` (a process pool, one fresh process per run, ``workers`` at a time)
and ``ray`` (one Ray task per run with ``num_cpus=1``; a local Ray started for the sweep,
or an existing cluster by ``address``; the output folder must then be on a filesystem
every node sees). Each run writes its log to ``OUT/task--arm--sSEED/sweep.log``.

Example::

    from prefrl.sweep import Arm, Grid, run_sweep, aggregate
    grid = Grid(tasks={"quick": {}}, arms=[Arm.true(), Arm.learned(100)], seeds=[0, 1], steps=4096)
    run_sweep(grid.runs(), "runs/demo", backend="local", workers=1)
    aggregate(grid.runs(), "runs/demo")   # runs.csv, curves.csv, table.csv
"""


from prefrl.sweep.aggregate import (
    aggregate,
    add_sweep_args,
    collect,
    format_table,
    print_plan,
    read_csv,
    read_curve,
    summarize,
    sweep_and_report,
    write_csv,
)
from prefrl.sweep.grid import Arm, Grid, RunSpec
from prefrl.sweep.runner import BACKENDS, LOCK_NAME, LOG_NAME, RunOutcome, execute_run, plan, run_status, run_sweep

__all__ = [
    "Arm", "Grid", "RunSpec", "RunOutcome", "BACKENDS", "LOG_NAME", "LOCK_NAME", "execute_run", "plan", "run_status",
    "run_sweep", "aggregate", "add_sweep_args", "collect", "format_table", "print_plan", "read_csv", "read_curve",
    "summarize", "sweep_and_report", "write_csv",
]
