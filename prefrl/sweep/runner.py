"""Running a sweep: run-directory state and checks, one run in a worker process, the local
process-pool and Ray backends."""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from prefrl.core.rundir import RunDir
from prefrl.core.types import PrefrlError
from prefrl.sweep.grid import RunSpec

BACKENDS = ("local", "ray")
LOG_NAME = "sweep.log"
LOCK_NAME = "sweep.lock"


# ---------------------------------------------------------------------------------------------
# State of a run directory


def run_status(spec: RunSpec, root: str | Path) -> str:
    """`finished` (summary.json), `running` (another live process on this host holds its lock),
    `interrupted` (config.json, no summary) or `new`."""
    rd = RunDir(Path(root) / spec.dirname)
    status = rd.status()
    if status != "finished" and _lock_holder(rd.path) is not None:
        return "running"
    return status


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
    path = RunDir(root / spec.dirname).config
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
    rd = RunDir(Path(root) / spec.dirname)
    run_dir = rd.path
    if rd.summary.is_file():
        return {**rd.read_summary(), "key": spec.key, "status": "skipped"}
    run_dir.mkdir(parents=True, exist_ok=True)
    holder = _lock_holder(run_dir)
    if holder is not None:
        raise PrefrlError(f"{run_dir}: being run by process {holder} (another sweep on this folder)")
    (run_dir / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    resume = rd.config.is_file()
    log = open(run_dir / LOG_NAME, "a", buffering=1)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    try:
        print(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} {'resume' if resume else 'start'} {spec.key}", flush=True)
        from prefrl.control.train import run_training

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
    outcomes = {s.key: RunOutcome(s.key, "skipped", RunDir(root / s.dirname).read_summary())
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
