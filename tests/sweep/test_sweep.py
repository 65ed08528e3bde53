"""Sweeps: grid and keys, run-directory checks, aggregation, and real tiny sweeps on the local
process pool and on a local Ray, including resume after an interrupted sweep."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from prefrl.viz import plot_normalized, plot_sweep_curves
from prefrl.sweep import (
    Arm,
    Grid,
    RunSpec,
    aggregate,
    collect,
    read_csv,
    read_curve,
    run_status,
    run_sweep,
    summarize,
)
from prefrl.core.types import PrefrlError

from conftest import REPO_ROOT, subprocess_env

TINY = """
name = "tiny"
steps = 1024
[env]
id = "InvertedPendulum-v5"
episode = "fixed"
termination_penalty = -10.0
max_episode_steps = 100
[ppo]
n_steps = 256
batch_size = 64
n_epochs = 2
[prefs]
labels = 20
clip_length = 10
pool_size = 100
reward_epochs = 2
initial_epochs = 5
[reward_model]
hidden = [8, 8]
"""


@pytest.fixture(scope="module")
def preset(tmp_path_factory: pytest.TempPathFactory) -> str:
    p = tmp_path_factory.mktemp("preset") / "tiny.toml"
    p.write_text(TINY)
    return str(p)


def tiny_grid(preset: str, seeds=(0,), arms=None, steps: int = 1024) -> Grid:
    return Grid(tasks={preset: {}}, arms=arms or [Arm.true(), Arm.learned(20)], seeds=list(seeds), steps=steps,
                eval_episodes=1)


@pytest.fixture(scope="module")
def finished(preset: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-run sweep (true reward and 20 synthetic labels) on the local backend, 2 workers."""
    root = tmp_path_factory.mktemp("sweep")
    outcomes = run_sweep(tiny_grid(preset).runs(), root, backend="local", workers=2, log=lambda s: None)
    assert [o.status for o in outcomes] == ["done", "done"], [o.error for o in outcomes]
    return root


# --- grid, keys, checks (no training) ----------------------------------------------------------


def test_arm_keys_and_parse():
    assert Arm.true().key == "true"
    assert Arm.learned(700).key == "synthetic-700"
    assert Arm.learned(None, "mistake").key == "mistake"
    assert Arm.parse("700") == Arm.learned(700)
    assert Arm.parse("mistake-350") == Arm.learned(350, "mistake")
    assert Arm.parse("true") == Arm.true()
    with pytest.raises(PrefrlError, match="oracle"):
        Arm.learned(10, "oracel")
    with pytest.raises(PrefrlError, match="human"):
        Arm.learned(10, "human")
    with pytest.raises(PrefrlError, match="ORACLE-N"):
        Arm.parse("synthetic-many")


def test_grid_runs_keys_steps_and_overrides(preset):
    grid = Grid(tasks={preset: {"steps": 512, "ppo": {"n_steps": 128}}, "quick": {}},
                arms=[Arm.true(), Arm.learned(30)], seeds=[0, 1], steps=2048)
    runs = grid.runs()
    assert len(runs) == 8
    assert runs[0].key == "tiny/true/s0" and runs[0].dirname == "tiny--true--s0"
    assert {r.steps for r in runs if r.task_name == "tiny"} == {512}
    assert {r.steps for r in runs if r.task_name == "quick"} == {2048}
    task = runs[2].task_config()  # tiny, synthetic-30, s0
    assert task.ppo.n_steps == 128 and task.prefs.labels == 30 and task.env.max_episode_steps == 100
    with pytest.raises(PrefrlError, match="share a key"):
        Grid(tasks={"quick": {}}, arms=[Arm.true(), Arm.true()], seeds=[0]).runs()


def test_bad_override_names_the_field(preset, tmp_path):
    spec = RunSpec(preset, Arm.true(), 0, 256, {"ppo": {"n_step": 128}})
    with pytest.raises(PrefrlError, match="unknown key `n_step`; did you mean `n_steps`"):
        run_sweep([spec], tmp_path)
    assert not any(tmp_path.iterdir())  # nothing started


def test_bad_backend_workers_and_address(preset, tmp_path):
    runs = tiny_grid(preset).runs()
    with pytest.raises(PrefrlError, match="`--backend` must be one of local, ray"):
        run_sweep(runs, tmp_path, backend="slurm")
    with pytest.raises(PrefrlError, match="`--workers` must be >= 1"):
        run_sweep(runs, tmp_path, workers=0)
    with pytest.raises(PrefrlError, match="`--address` is for `--backend ray`"):
        run_sweep(runs, tmp_path, address="auto")


def test_a_run_held_by_a_live_sweep_is_not_started_twice(preset, tmp_path):
    spec = tiny_grid(preset).runs()[0]
    run_dir = tmp_path / spec.dirname
    run_dir.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run_dir / "sweep.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": other.pid}))
        assert run_status(spec, tmp_path) == "running"
        with pytest.raises(PrefrlError, match=rf"being run right now by another sweep .*process {other.pid}"):
            run_sweep([spec], tmp_path, resume=True)
    finally:
        other.kill()
        other.wait()
    assert run_status(spec, tmp_path) == "new"  # the holder died: its lock no longer counts


def test_read_curve_drops_rows_repeated_by_a_resume(tmp_path):
    rows = ["timesteps,labels,true_return_mean,wall_s",
            "100,5,1.0,1", "200,6,2.0,2", "300,7,3.0,3",  # checkpoint was at 200, then a crash
            "300,7,3.5,4", "400,8,4.0,5"]                  # resumed: 300 written again
    (tmp_path / "progress.csv").write_text("\n".join(rows) + "\n")
    c = read_curve(tmp_path)
    assert c["timesteps"].tolist() == [100, 200, 300, 400]
    assert c["true_return_mean"].tolist() == [1.0, 2.0, 3.5, 4.0]


def test_summarize_normalizes_against_true_reward():
    finals = [
        {"task": "t", "arm": "true", "reward": "true", "seed": s, "status": "finished", "eval_return_mean": v,
         "true_return_mean": v, "wall_s": 10.0} for s, v in [(0, 100.0), (1, 120.0)]
    ] + [
        {"task": "t", "arm": "synthetic-10", "reward": "learned", "seed": s, "status": "finished",
         "eval_return_mean": v, "true_return_mean": v, "wall_s": 20.0} for s, v in [(0, 60.0), (1, 80.0)]
    ] + [{"task": "t", "arm": "mistake", "reward": "learned", "seed": 0, "status": "interrupted",
          "eval_return_mean": None, "true_return_mean": None, "wall_s": None}]
    curves = [{"task": "t", "arm": a, "seed": s, "timesteps": 1, "true_return_mean": 10.0}
              for a in ("true", "synthetic-10") for s in (0, 1)]
    rows = {r["arm"]: r for r in summarize(finals, curves)}
    assert rows["true"]["normalized"] == pytest.approx(1.0)
    # (70 - 10) / (110 - 10)
    assert rows["synthetic-10"]["normalized"] == pytest.approx(0.6)
    assert rows["synthetic-10"]["eval_return_std"] == pytest.approx(10.0)
    assert rows["mistake"]["n_seeds"] == 0 and rows["mistake"]["normalized"] is None


# --- real sweeps ---------------------------------------------------------------------------------


def test_local_sweep_runs_skips_finished_and_aggregates(finished, preset, tmp_path):
    runs = tiny_grid(preset).runs()
    for spec in runs:
        run_dir = finished / spec.dirname
        assert (run_dir / "summary.json").is_file() and (run_dir / "sweep.log").is_file()
        assert json.loads((run_dir / "summary.json").read_text())["timesteps"] == 1024
    assert json.loads((finished / "tiny--synthetic-20--s0" / "summary.json").read_text())["labels"] == 20
    again = run_sweep(runs, finished, log=lambda s: None)
    assert [o.status for o in again] == ["skipped", "skipped"]
    paths = aggregate(runs, finished, tmp_path / "agg")
    finals = read_csv(paths["runs"])
    assert [r["key"] for r in finals] == ["tiny/true/s0", "tiny/synthetic-20/s0"]
    assert all(r["status"] == "finished" and r["eval_return_mean"] is not None for r in finals)
    curves = read_csv(paths["curves"])
    assert {r["timesteps"] for r in curves} == {256, 512, 768, 1024}
    table = read_csv(paths["table"])
    assert table[0]["arm"] == "true" and table[0]["normalized"] == pytest.approx(1.0)
    assert plot_sweep_curves(curves, tmp_path / "curves.png", title="tiny").stat().st_size > 10_000
    assert plot_normalized(table, tmp_path / "bars.png").stat().st_size > 5_000


def test_changed_grid_refuses_a_directory_of_another_run(finished, preset):
    runs = tiny_grid(preset, steps=2048).runs()
    with pytest.raises(PrefrlError, match="holds a different run .*steps: 1024 on disk vs 2048"):
        run_sweep(runs, finished)


def _start_sweep(root: Path, preset: str, steps: int) -> subprocess.Popen:
    """The finished grid plus one longer run (seed 1), in a process of its own session."""
    code = textwrap.dedent(f"""
        from prefrl.sweep import Arm, Grid, RunSpec, run_sweep
        grid = Grid(tasks={{{preset!r}: {{}}}}, arms=[Arm.true(), Arm.learned(20)], seeds=[0], steps=1024,
                    eval_episodes=1)
        extra = RunSpec({preset!r}, Arm.learned(20), 1, {steps}, eval_episodes=1)
        run_sweep(grid.runs() + [extra], {str(root)!r}, backend="local", workers=1)
    """)
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_interrupted_local_sweep_resumes(finished, preset, tmp_path):
    """SIGKILL the whole sweep (driver and worker) while a run is part-way; then resume it."""
    root = tmp_path / "sweep"
    shutil.copytree(finished, root)
    steps = 3072  # a checkpoint every 10 rollouts of 256 steps: at 2560
    proc = _start_sweep(root, preset, steps)
    run_dir = root / "tiny--synthetic-20--s1"
    deadline = time.time() + 120
    try:
        while not (run_dir / "agent.pt").exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline, "the run never checkpointed"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    runs = tiny_grid(preset).runs() + [RunSpec(preset, Arm.learned(20), 1, steps, eval_episodes=1)]
    while run_status(runs[2], root) == "running":  # a killed process takes a moment to be gone
        assert time.time() < deadline + 30, "the killed worker still holds its lock"
        time.sleep(0.2)
    assert [run_status(s, root) for s in runs] == ["finished", "finished", "interrupted"]
    with pytest.raises(PrefrlError, match=r"1 run\(s\) were interrupted \(tiny/synthetic-20/s1\); pass `--resume`"):
        run_sweep(runs, root)
    out = run_sweep(runs, root, resume=True, log=lambda s: None)
    assert [o.status for o in out] == ["skipped", "skipped", "resumed"], [o.error for o in out]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["timesteps"] == steps and summary["labels"] == 20
    assert "resume tiny/synthetic-20/s1" in (run_dir / "sweep.log").read_text()
    assert read_curve(run_dir)["timesteps"].tolist() == list(range(256, steps + 1, 256))


def test_ray_backend_resumes_and_runs_new(finished, preset, tmp_path):
    """Local Ray started inside the test: a finished run is skipped, an interrupted one resumed,
    a new one run; a run that fails is reported without stopping the others."""
    import ray  # noqa: F401  (the dev extra installs it: missing it must fail, not skip)
    root = tmp_path / "sweep"
    shutil.copytree(finished, root)
    (root / "tiny--synthetic-20--s0" / "summary.json").unlink()  # interrupted after its last checkpoint
    runs = tiny_grid(preset, seeds=(0, 1), arms=[Arm.true(), Arm.learned(20)]).runs()
    runs = [r for r in runs if r.key != "tiny/synthetic-20/s1"]
    # a run that fails at run time: an env id that gymnasium does not know
    broken = RunSpec(preset, Arm.true(), 7, 1024, {"env": {"id": "NoSuchEnv-v0"}}, eval_episodes=1)
    with pytest.raises(PrefrlError, match="interrupted"):
        run_sweep(runs, root, backend="ray")
    out = run_sweep(runs + [broken], root, backend="ray", workers=2, resume=True, log=lambda s: None)
    status = {o.key: o.status for o in out}
    assert status == {"tiny/true/s0": "skipped", "tiny/synthetic-20/s0": "resumed", "tiny/true/s1": "done",
                      "tiny/true/s7": "failed"}, [o.error for o in out]
    err = next(o.error for o in out if o.status == "failed")
    assert "NoSuchEnv-v0" in err and "sweep.log" in err
    finals, _ = collect(runs, root)
    assert all(r["status"] == "finished" for r in finals)
    assert np.isfinite([r["eval_return_mean"] for r in finals]).all()
