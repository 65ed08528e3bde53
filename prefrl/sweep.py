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

from __future__ import annotations

import copy
import csv
import json
import math
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prefrl.types import PrefrlError

BACKENDS = ("local", "ray")
LOG_NAME = "sweep.log"
LOCK_NAME = "sweep.lock"


@dataclass(frozen=True)
class Arm:
    """One curve of a figure: the reward the agent trains on.

    Attributes:
        reward: `true` (PPO on the env reward) or `learned` (from preferences).
        oracle: who labels (`synthetic`, B-Pref teachers ...); ignored for `true`.
        labels: label budget (None: the preset's); ignored for `true`.
    """

    reward: str = "learned"
    oracle: str = "synthetic"
    labels: int | None = None

    def __post_init__(self) -> None:
        if self.reward not in ("learned", "true"):
            raise PrefrlError(f"Arm: `reward` must be `learned` or `true`, got `{self.reward}`")
        if self.reward == "learned":
            from prefrl.oracles import check_oracle_name

            check_oracle_name(self.oracle)
            if self.oracle == "human":
                raise PrefrlError("Arm: sweeps run unattended; oracle `human` is not allowed in a sweep")
        if self.labels is not None and self.labels < 0:
            raise PrefrlError(f"Arm: `labels` must be >= 0, got {self.labels}")

    @staticmethod
    def true() -> Arm:
        return Arm(reward="true", oracle="synthetic", labels=None)

    @staticmethod
    def learned(labels: int | None = None, oracle: str = "synthetic") -> Arm:
        return Arm(reward="learned", oracle=oracle, labels=labels)

    @property
    def key(self) -> str:
        """`true`, `synthetic-700`, `mistake` (budget left to the preset) ..."""
        if self.reward == "true":
            return "true"
        return self.oracle if self.labels is None else f"{self.oracle}-{self.labels}"

    @property
    def label(self) -> str:
        """Legend text."""
        if self.reward == "true":
            return "true reward (RL)"
        return f"{self.labels} {self.oracle} labels" if self.labels is not None else f"{self.oracle} labels"

    @staticmethod
    def parse(text: str) -> Arm:
        """`true`, `700` (synthetic), `synthetic-700`, `mistake`, `mistake-700`."""
        if text == "true":
            return Arm.true()
        if text.isdigit():
            return Arm.learned(int(text))
        oracle, _, labels = text.partition("-")
        if labels and not labels.isdigit():
            raise PrefrlError(f"arm `{text}`: expected `true`, `N`, `ORACLE` or `ORACLE-N`")
        return Arm.learned(int(labels) if labels else None, oracle)


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep.

    Attributes:
        task: preset name (envs/NAME.toml) or path to a .toml preset.
        arm: the reward arm.
        seed: seed of env, PPO, reward model and oracle.
        steps: env steps (None: the preset's).
        overrides: preset fields to change, nested like the TOML
            (``{"ppo": {"n_steps": 1024}, "env": {"max_episode_steps": 500}}``).
        eval_episodes: episodes of the final deterministic evaluation.
    """

    task: str
    arm: Arm
    seed: int = 0
    steps: int | None = None
    overrides: dict = field(default_factory=dict, hash=False, compare=False)
    eval_episodes: int = 10

    @property
    def task_name(self) -> str:
        return Path(self.task).stem if self.task.endswith(".toml") else self.task

    @property
    def key(self) -> str:
        return f"{self.task_name}/{self.arm.key}/s{self.seed}"

    @property
    def dirname(self) -> str:
        return f"{self.task_name}--{self.arm.key}--s{self.seed}"

    def task_config(self):
        """The preset with ``overrides`` applied (validated like a preset file)."""
        from prefrl.rl.tasks import TaskConfig, load_task

        task = load_task(self.task)
        d = _deep_merge(task.to_dict(), self.overrides, where=f"{self.key} overrides")
        if self.arm.reward == "learned" and self.arm.labels is not None:
            d["prefs"]["labels"] = self.arm.labels
        return TaskConfig.from_dict(d, where=f"{self.key} (preset `{self.task}` + overrides)")

    def run_config(self, root: str | Path):
        from prefrl.rl.train import RunConfig

        task = self.task_config()
        return RunConfig(
            task=task, run_dir=str(Path(root) / self.dirname), oracle=self.arm.oracle, seed=self.seed,
            steps=self.steps if self.steps is not None else task.steps, reward=self.arm.reward,
            eval_episodes=self.eval_episodes, video=False,
        )

    def to_dict(self) -> dict:
        return {"task": self.task, "arm": {"reward": self.arm.reward, "oracle": self.arm.oracle,
                                           "labels": self.arm.labels},
                "seed": self.seed, "steps": self.steps, "overrides": self.overrides,
                "eval_episodes": self.eval_episodes}

    @staticmethod
    def from_dict(d: dict) -> RunSpec:
        return RunSpec(task=d["task"], arm=Arm(**d["arm"]), seed=int(d["seed"]), steps=d.get("steps"),
                       overrides=d.get("overrides") or {}, eval_episodes=int(d.get("eval_episodes", 10)))


@dataclass
class Grid:
    """tasks x arms x seeds.

    Attributes:
        tasks: preset name -> overrides for that task (nested like the TOML; may hold
            a top-level ``steps`` that sets the env steps of that task's runs).
        arms: the arms (curves) every task gets.
        seeds: seeds.
        steps: env steps of every run (None: each preset's, unless the task sets ``steps``).
        eval_episodes: episodes of each run's final evaluation.
    """

    tasks: dict[str, dict]
    arms: list[Arm]
    seeds: list[int]
    steps: int | None = None
    eval_episodes: int = 10

    def runs(self) -> list[RunSpec]:
        out = []
        for task, overrides in self.tasks.items():
            overrides = dict(overrides or {})
            steps = overrides.pop("steps", self.steps)
            for arm in self.arms:
                for seed in self.seeds:
                    out.append(RunSpec(task, arm, seed, steps, overrides, self.eval_episodes))
        keys = [r.key for r in out]
        dup = {k for k in keys if keys.count(k) > 1}
        if dup:
            raise PrefrlError(f"Grid: runs share a key (same task, arm and seed twice): {sorted(dup)[:3]}")
        return out


def _deep_merge(base: dict, over: dict, where: str) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("make_kwargs", "atari", "options"):
            out[k] = _deep_merge(out[k], v, f"{where} [{k}]")
        else:
            out[k] = v  # unknown keys are refused by TaskConfig.from_dict with close matches
    return out


# ---------------------------------------------------------------------------------------------
# State of a run directory


def run_status(spec: RunSpec, root: str | Path) -> str:
    """`finished` (summary.json), `running` (another live process on this host holds its lock),
    `interrupted` (config.json, no summary) or `new`."""
    d = Path(root) / spec.dirname
    if (d / "summary.json").is_file():
        return "finished"
    if _lock_holder(d) is not None:
        return "running"
    if (d / "config.json").is_file():
        return "interrupted"
    return "new"


def _lock_holder(run_dir: Path) -> int | None:
    """The pid of a live process on this host running this run, from RUN_DIR/sweep.lock.

    A lock left by a killed process, or written on another host (a Ray cluster; its liveness
    cannot be checked from here), does not count.
    """
    try:
        lock = json.loads((run_dir / LOCK_NAME).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if lock.get("host") != socket.gethostname() or not isinstance(lock.get("pid"), int):
        return None
    pid = lock["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    try:  # a killed process nobody has reaped yet (a zombie) is dead too
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return None
    except (OSError, IndexError):
        pass
    return pid if pid != os.getpid() else None


_COMPARED = ("task", "oracle", "steps", "seed", "reward", "eval_episodes")


def _check_same_config(spec: RunSpec, root: Path) -> None:
    """Refuse a run directory written for another configuration than the grid's run."""
    path = root / spec.dirname / "config.json"
    try:
        have = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PrefrlError(f"{path}: unreadable ({e}); remove the directory to run `{spec.key}` again") from e
    want = spec.run_config(root).to_dict()
    if have.get("reward") == "true" and want["reward"] == "true":
        have = dict(have, oracle=want["oracle"])  # the oracle of a true-reward run is unused
    for k in _COMPARED:
        if k == "task":
            diff = _first_diff(have.get(k), want[k], "task")
        else:
            diff = None if have.get(k) == want[k] else f"{k}: {have.get(k)!r} on disk vs {want[k]!r}"
        if diff:
            raise PrefrlError(f"{path.parent}: holds a different run than `{spec.key}` ({diff}); "
                              f"use another output folder or remove that directory")


def _first_diff(a, b, where: str) -> str | None:
    """The first field where the two configs differ; fields only one side has are not compared
    (a preset field added or renamed by a newer prefrl must not orphan finished runs)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) & set(b)):
            if k in ("name", "description"):
                continue
            d = _first_diff(a.get(k), b.get(k), f"{where}.{k}")
            if d:
                return d
        return None
    if isinstance(a, float) or isinstance(b, float):
        try:
            return None if math.isclose(float(a), float(b)) else f"{where}: {a!r} on disk vs {b!r}"
        except (TypeError, ValueError):
            pass
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        a, b = list(a), list(b)
    return None if a == b else f"{where}: {a!r} on disk vs {b!r}"


# ---------------------------------------------------------------------------------------------
# Executing one run (inside a worker process: a pool process or a Ray worker)


def execute_run(spec_dict: dict, root: str) -> dict:
    """Run (or resume, or skip) one run; returns its summary with ``key`` and ``status``.

    Output of the run (progress bar, warnings) goes to ``RUN_DIR/sweep.log``. Called in a
    fresh process per run, so redirecting the process's stdout and stderr is safe.
    """
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PREFRL_THREADS", "1")
    spec = RunSpec.from_dict(spec_dict)
    run_dir = Path(root) / spec.dirname
    if (run_dir / "summary.json").is_file():
        return {**json.loads((run_dir / "summary.json").read_text()), "key": spec.key, "status": "skipped"}
    run_dir.mkdir(parents=True, exist_ok=True)
    holder = _lock_holder(run_dir)
    if holder is not None:
        raise PrefrlError(f"{run_dir}: being run by process {holder} (another sweep on this folder)")
    (run_dir / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    resume = (run_dir / "config.json").is_file()
    log = open(run_dir / LOG_NAME, "a", buffering=1)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    try:
        print(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} {'resume' if resume else 'start'} {spec.key}", flush=True)
        from prefrl.rl.train import run_training

        cfg = spec.run_config(root)
        summary = run_training(cfg, resume=resume)
        return {**summary, "key": spec.key, "status": "resumed" if resume else "done"}
    except BaseException:
        traceback.print_exc()
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        log.close()
        (run_dir / LOCK_NAME).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# The sweep


@dataclass
class RunOutcome:
    key: str
    status: str
    """`skipped` (finished before), `done`, `resumed` or `failed`."""
    summary: dict | None = None
    error: str | None = None
    wall_s: float = 0.0


def plan(runs: Iterable[RunSpec], root: str | Path) -> dict[str, list[RunSpec]]:
    """Runs grouped by status (`finished`, `running`, `interrupted`, `new`); existing directories are
    checked against the grid."""
    root = Path(root)
    groups: dict[str, list[RunSpec]] = {"finished": [], "running": [], "interrupted": [], "new": []}
    for spec in runs:
        status = run_status(spec, root)
        if status in ("finished", "interrupted"):
            _check_same_config(spec, root)
        groups[status].append(spec)
    return groups


def run_sweep(
    runs: list[RunSpec],
    root: str | Path,
    backend: str = "local",
    workers: int = 2,
    address: str | None = None,
    resume: bool = False,
    log: Callable[[str], None] = print,
) -> list[RunOutcome]:
    """Run every run of ``runs`` not finished yet under ``root``; returns one outcome per run.

    Args:
        runs: the grid's runs (``Grid.runs()``).
        root: output folder; one directory per run.
        backend: `local` (process pool) or `ray`.
        workers: runs at a time (local; for `ray` without ``address`` the CPUs of the local Ray).
        address: Ray cluster address (`ray` only); None starts a local Ray for the sweep.
        resume: continue interrupted runs from their checkpoints (else they make the sweep refuse).
        log: where progress lines go.

    Raises:
        PrefrlError: a bad backend or worker count, interrupted runs without ``resume``, a run
            directory holding another configuration, Ray missing.
    """
    if backend not in BACKENDS:
        raise PrefrlError(f"`--backend` must be one of {', '.join(BACKENDS)}, got `{backend}`")
    if workers < 1:
        raise PrefrlError(f"`--workers` must be >= 1, got {workers}")
    if address is not None and backend != "ray":
        raise PrefrlError("`--address` is for `--backend ray` (a Ray cluster); drop it or add `--backend ray`")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for spec in runs:
        spec.task_config()  # bad presets and overrides fail here, before anything starts
    groups = plan(runs, root)
    if groups["running"]:
        s = groups["running"][0]
        raise PrefrlError(f"{root}: {len(groups['running'])} run(s) are being run right now by another sweep "
                          f"(e.g. {s.key}, process {_lock_holder(root / s.dirname)}); wait for it to finish "
                          f"or use another output folder")
    if groups["interrupted"] and not resume:
        keys = ", ".join(s.key for s in groups["interrupted"][:3])
        more = f" and {len(groups['interrupted']) - 3} more" if len(groups["interrupted"]) > 3 else ""
        raise PrefrlError(f"{root}: {len(groups['interrupted'])} run(s) were interrupted ({keys}{more}); "
                          f"pass `--resume` to continue them from their last checkpoints")
    outcomes = {s.key: RunOutcome(s.key, "skipped", json.loads((root / s.dirname / "summary.json").read_text()))
                for s in groups["finished"]}
    todo = groups["interrupted"] + groups["new"]
    log(f"sweep {root}: {len(runs)} runs, {len(groups['finished'])} finished, "
        f"{len(groups['interrupted'])} to resume, {len(groups['new'])} new; backend {backend}")
    if todo:
        execute = _run_local if backend == "local" else _run_ray
        for o in execute(todo, root, workers, address, log):
            outcomes[o.key] = o
    return [outcomes[s.key] for s in runs]


def _describe(o: RunOutcome) -> str:
    if o.status == "failed":
        return f"FAILED {o.key}: {o.error}"
    s = o.summary or {}
    ev = s.get("eval_return_mean")
    return (f"{o.status} {o.key}: eval return {ev:.1f}" if ev is not None else f"{o.status} {o.key}") + \
        f" ({s.get('wall_s', 0):.0f} s)"


def _run_local(todo: list[RunSpec], root: Path, workers: int, address: str | None,
               log: Callable[[str], None]) -> list[RunOutcome]:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    out = []
    # spawn + one task per child: every run starts in a fresh interpreter (no state leaks
    # between runs; torch, MuJoCo and the redirected stdout are per run).
    kwargs = {"max_tasks_per_child": 1} if sys.version_info >= (3, 11) else {}
    with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=mp.get_context("spawn"),
                             **kwargs) as pool:
        futures = {pool.submit(execute_run, s.to_dict(), str(root)): s for s in todo}
        try:
            for i, fut in enumerate(as_completed(futures), 1):
                out.append(_outcome(futures[fut], fut.result, root))
                log(f"[{i}/{len(todo)}] {_describe(out[-1])}")
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return out


def _run_ray(todo: list[RunSpec], root: Path, workers: int, address: str | None,
             log: Callable[[str], None]) -> list[RunOutcome]:
    try:
        import ray
    except ImportError as e:
        raise PrefrlError("`--backend ray` needs Ray: pip install 'prefrl[ray]' (or use `--backend local`)") from e
    started = False
    if not ray.is_initialized():
        env_vars = {"MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
                    "PREFRL_THREADS": os.environ.get("PREFRL_THREADS", "1")}
        kwargs: dict = {"runtime_env": {"env_vars": env_vars}, "log_to_driver": False}
        if address is None:
            kwargs.update(address="local", num_cpus=workers, include_dashboard=False)
            # Ray runs its workers at nice 15 by default; the local backend's runs get nice 0, and on a
            # busy machine nice-15 runs crawl (measured: a worker's imports 70-85 s instead of 10-14 s).
            os.environ.setdefault("RAY_worker_niceness", "0")
        else:
            kwargs.update(address=address)
        try:
            ray.init(**kwargs)
        except Exception as e:  # noqa: BLE001 - Ray raises many types for a bad address
            raise PrefrlError(f"cannot start or reach Ray (address {address or 'local'}): {e}") from e
        started = True
    # max_calls=1: each run gets a fresh worker process, like the local backend.
    remote = ray.remote(num_cpus=1, max_calls=1, max_retries=1)(execute_run)  # a retry resumes the run
    out = []
    try:
        refs = {remote.remote(s.to_dict(), str(root.resolve())): s for s in todo}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            spec = refs[done[0]]
            out.append(_outcome(spec, lambda: ray.get(done[0]), root))
            log(f"[{len(out)}/{len(todo)}] {_describe(out[-1])}")
    finally:
        if started:
            ray.shutdown()
    return out


def _outcome(spec: RunSpec, get: Callable[[], dict], root: Path) -> RunOutcome:
    t0 = time.perf_counter()
    try:
        summary = get()
    except Exception as e:  # noqa: BLE001 - a failed run is reported, the sweep goes on
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        return RunOutcome(spec.key, "failed", error=f"{type(e).__name__}: {msg} (log: {root / spec.dirname / LOG_NAME})")
    return RunOutcome(spec.key, summary.pop("status", "done"), summary, wall_s=time.perf_counter() - t0)


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
    from prefrl.plots import read_progress

    path = Path(run_dir) / "progress.csv"
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
        d = root / spec.dirname
        status = run_status(spec, root)
        s = json.loads((d / "summary.json").read_text()) if status == "finished" else {}
        finals.append({
            "key": spec.key, "task": spec.task_name, "arm": spec.arm.key, "reward": spec.arm.reward,
            "oracle": spec.arm.oracle if spec.arm.reward == "learned" else "",
            "labels": spec.arm.labels if spec.arm.reward == "learned" else 0, "seed": spec.seed, "status": status,
            "timesteps": s.get("timesteps"), "labels_used": s.get("labels"),
            "true_return_mean": s.get("true_return_mean"), "eval_return_mean": s.get("eval_return_mean"),
            "wall_s": s.get("wall_s"),
        })
        c = read_curve(d)
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

    from prefrl.plots import plot_normalized, plot_sweep_curves

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
