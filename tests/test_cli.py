"""The reward/prefs commands: bad input gives one clear line and exit 2; the happy path round-trips.

Bad input runs the real entry point in child processes, so a stray traceback or
warning on stderr is caught. Each child spends 2-3 s of CPU importing torch, so
the cases share one driver process that calls ``prefrl.cli.entry()`` (what
``python -m prefrl.cli`` runs) once per case with its own argv, exit code and
file-descriptor-level stdout/stderr; one case and the happy path also run as
separate ``python -m prefrl.cli`` processes.
"""

from __future__ import annotations

import dataclasses

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_NET, TOY_SPEC, popen_python
from prefrl.cli import main
from prefrl.core.oracles import make_oracle
from prefrl.core.dataset import load_dataset
from prefrl.core.store import STORE_FILE, TEXT_PREFERENCES_FILE, PreferenceStore
from prefrl.core.ensemble import RewardEnsemble
from prefrl.core.query import random_pairs
from prefrl.core.toy import toy_clips, toy_dataset
from prefrl.core.types import PrefrlError

FAST_FIT = ["--model.members", "2", "--model.hidden", "32", "32", "--train.batch-size", "32"]


def write_dataset(root: Path, n_clips: int = 10, lines: list[str] | None = None, seed: int = 0) -> Path:
    """A dataset dir: toy clips.npz plus comparisons.jsonl (oracle-labelled unless ``lines`` given)."""
    root.mkdir(parents=True, exist_ok=True)
    clips, comps = toy_dataset(n_clips, 3 * n_clips, seed=seed)
    clips.save_npz(root / "clips.npz")
    if lines is None:
        lines = [json.dumps({"left": int(a), "right": int(b), "label": float(c)}) for a, b, c in zip(comps.left, comps.right, comps.label)]
    (root / "comparisons.jsonl").write_text("".join(line + "\n" for line in lines))
    return root


@dataclass
class Case:
    args: list[str]
    expect: list[str]  # substrings the one error line must contain


def bad_input_cases(tmp: Path) -> dict[str, Case]:
    ok = json.dumps({"left": 0, "right": 1, "label": 1.0})
    cases: dict[str, Case] = {}

    ds = write_dataset(tmp / "malformed", lines=[ok, ok, '{"left": 2, "right": 3, "label": 1.0', ok])
    cases["malformed-line"] = Case(["reward", "fit", str(ds), "--out", str(tmp / "m.pt")],
                                   [f"{ds / 'comparisons.jsonl'}:3:", "not valid JSON"])

    ds = write_dataset(tmp / "range", lines=[ok, json.dumps({"left": 3, "right": 12, "label": 0.0})])
    cases["index-out-of-range"] = Case(["reward", "fit", str(ds), "--out", str(tmp / "m.pt")],
                                       [f"{ds / 'comparisons.jsonl'}:2:", "`right` = 12 is out of range", "10 clips"])

    ds = write_dataset(tmp / "nmismatch", lines=[ok])
    clips = toy_clips(10, length=5, seed=1)
    np.savez(ds / "clips.npz", obs=clips.obs, acts=clips.acts[:9])  # 10 observations, 9 actions
    cases["obs-acts-mismatch"] = Case(["reward", "fit", str(ds), "--out", str(tmp / "m.pt")],
                                      [f"{ds / 'clips.npz'}:", "`obs` and `acts` disagree", "(10, 5)", "(9, 5)"])

    model = tmp / "model4.pt"
    RewardEnsemble(TOY_SPEC, dataclasses.replace(TINY_NET, members=1)).save(model)  # obs shape (4,)
    other = tmp / "obs3.npz"
    toy_clips(6, obs_dim=3, seed=2).save_npz(other)
    cases["score-other-obs-shape"] = Case(
        ["reward", "score", "--model", str(model), "--clips", str(other), "--out", str(tmp / "s.npy")],
        [f"{other}:", "observation shape (3,)", "expects (4,)"])

    ds = write_dataset(tmp / "empty", lines=[])
    cases["empty-dataset"] = Case(["reward", "fit", str(ds), "--out", str(tmp / "m.pt")],
                                  [f"{ds / 'comparisons.jsonl'}:", "no comparisons"])

    corrupt = tmp / "corrupt.pt"
    corrupt.write_bytes(model.read_bytes()[:300])  # a truncated checkpoint
    cases["corrupt-model"] = Case(
        ["reward", "score", "--model", str(corrupt), "--clips", str(other), "--out", str(tmp / "s.npy")],
        [f"{corrupt}:", "not a readable prefrl reward model"])

    ds = write_dataset(tmp / "notnpz", lines=[ok])
    (ds / "clips.npz").write_text("obs,acts\n1,2\n")
    cases["clips-not-npz"] = Case(["reward", "fit", str(ds), "--out", str(tmp / "m.pt")],
                                  [f"{ds / 'clips.npz'}:", "not an .npz archive"])

    cases["export-without-store"] = Case(["prefs", "export", "--run-dir", str(tmp / "norun"), "--out", str(tmp / "x")],
                                         [f"{tmp / 'norun'}:", "not a prefrl run directory"])

    # Bytes no loader may turn into a traceback.
    for name, line, expect in [
        ("non-utf8", b'{"left": 0, "right": 1, "label": 1.0, "source": "\x80"}', "not UTF-8 text (byte 0x80"),
        ("int-5000-digits", b'{"left": ' + b"1" * 5000 + b', "right": 1, "label": 1}', "not valid JSON (Exceeds the limit"),
        ("nested-100000", b"[" * 100_000 + b"]" * 100_000, "not valid JSON (nested too deeply)"),
    ]:
        ds = write_dataset(tmp / name, lines=[ok])
        (ds / "comparisons.jsonl").write_bytes(ok.encode() + b"\n" + line + b"\n")
        cases[f"comparisons-{name}"] = Case(["reward", "fit", str(ds), "--out", str(tmp / "m.pt")],
                                            [f"{ds / 'comparisons.jsonl'}:2:", expect])

    run = store_run(tmp / "damaged")
    data = bytearray((run / STORE_FILE).read_bytes())
    data[2 * 4096 :] = np.random.default_rng(0).integers(0, 256, len(data) - 2 * 4096, dtype=np.uint8).tobytes()
    (run / STORE_FILE).write_bytes(bytes(data))
    cases["store-damaged-stats"] = Case(["prefs", "stats", "--run-dir", str(run)], [f"{run / STORE_FILE}:", "damaged"])
    cases["store-damaged-export"] = Case(["prefs", "export", "--run-dir", str(run), "--out", str(tmp / "dx")],
                                         [f"{run / STORE_FILE}:", "damaged"])
    empty = tmp / "empty-store"
    empty.mkdir()
    (empty / STORE_FILE).write_bytes(b"")
    for argv in (["prefs", "stats", "--run-dir", str(empty)], ["prefs", "export", "--run-dir", str(empty), "--out", str(tmp / "ex")],
                 ["label", "--run-dir", str(empty)]):
        cases[f"store-zero-bytes-{argv[0]}-{argv[1]}"] = Case(argv, [f"{empty / STORE_FILE}: an empty file (0 bytes)"])
    good = store_run(tmp / "good-run")
    (tmp / "a-file").write_text("x")
    cases["export-out-is-a-file"] = Case(["prefs", "export", "--run-dir", str(good), "--out", str(tmp / "a-file")],
                                         [f"{tmp / 'a-file'}: exists and is not a directory"])
    cases["export-out-not-empty"] = Case(["prefs", "export", "--run-dir", str(good), "--out", str(tmp / "range")],
                                         [f"{tmp / 'range'}: exists and is not empty", "--force"])
    cases["run-dir-is-a-file"] = Case(["prefs", "export", "--run-dir", str(tmp / "a-file"), "--out", str(tmp / "ey")],
                                      [f"{tmp / 'a-file'}: is a file, not a run directory"])
    cases["stats-run-dir-is-a-file"] = Case(["prefs", "stats", "--run-dir", str(tmp / "a-file")],
                                            [f"{tmp / 'a-file'}: no such run directory"])
    return cases


def store_run(root: Path) -> Path:
    """A run directory whose store holds 150 judgments over 20 toy clips."""
    with PreferenceStore(root) as store:
        ids = np.array(store.add_clips(toy_clips(20, seed=6), keep_frames=False))
        pairs = random_pairs(20, 150, np.random.default_rng(0))
        store.add_judgments(ids[pairs], np.ones(len(pairs)), source="synthetic")
    return root


_DRIVER = """
import json, os, sys, traceback
import prefrl.cli
for case in json.load(open(sys.argv[1])):
    sys.argv = ["prefrl", *case["args"]]
    sys.stdout.flush(); sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(case["stdout"], "w") as out, open(case["stderr"], "w") as err:
        os.dup2(out.fileno(), 1); os.dup2(err.fileno(), 2)
        try:
            prefrl.cli.entry()
            rc = 0
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()  # what the interpreter would print before exiting 1
            rc = 1
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            os.dup2(saved[0], 1); os.dup2(saved[1], 2)
    print(json.dumps({"name": case["name"], "rc": rc}), flush=True)
"""

# Cases that also run as their own `python -m prefrl.cli` process.
STANDALONE = ("corrupt-model", "happy-fit")


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Case, subprocess.CompletedProcess]]:
    """Every bad-input case (driver process) plus standalone runs, the processes started at once."""
    tmp = tmp_path_factory.mktemp("cli")
    cases = bad_input_cases(tmp)
    good = write_dataset(tmp / "good", n_clips=80, seed=3)
    cases["happy-fit"] = Case(["reward", "fit", str(good), "--out", str(tmp / "good.pt"), *FAST_FIT], [])
    plan = [
        {"name": n, "args": c.args, "stdout": str(tmp / f"{n}.out"), "stderr": str(tmp / f"{n}.err")}
        for n, c in cases.items()
        if n != "happy-fit"
    ]
    (tmp / "cases.json").write_text(json.dumps(plan))
    driver = popen_python(["-c", _DRIVER, str(tmp / "cases.json")])
    alone = {n: popen_python(["-m", "prefrl.cli", *cases[n].args]) for n in STANDALONE}
    results = {}
    for name, p in alone.items():
        out, err = p.communicate(timeout=300)
        results[name if name == "happy-fit" else f"{name}/standalone"] = (
            cases[name], subprocess.CompletedProcess(p.args, p.returncode, out, err))
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err
    for line in out.splitlines():
        rec = json.loads(line)
        step = next(c for c in plan if c["name"] == rec["name"])
        res = subprocess.CompletedProcess(
            ["prefrl", *step["args"]], rec["rc"], Path(step["stdout"]).read_text(), Path(step["stderr"]).read_text())
        results[rec["name"]] = (cases[rec["name"]], res)
    assert set(results) >= {c["name"] for c in plan}, out
    return results


BAD_CASES = [
    "malformed-line",
    "index-out-of-range",
    "obs-acts-mismatch",
    "score-other-obs-shape",
    "empty-dataset",
    "corrupt-model",
    "clips-not-npz",
    "export-without-store",
    "corrupt-model/standalone",
    "comparisons-non-utf8",
    "comparisons-int-5000-digits",
    "comparisons-nested-100000",
    "store-damaged-stats",
    "store-damaged-export",
    "store-zero-bytes-prefs-stats",
    "store-zero-bytes-prefs-export",
    "store-zero-bytes-label---run-dir",
    "export-out-is-a-file",
    "export-out-not-empty",
    "run-dir-is-a-file",
    "stats-run-dir-is-a-file",
]


@pytest.mark.parametrize("name", BAD_CASES)
def test_bad_input_gives_one_line_naming_file_and_exit_2(cli_runs, name: str) -> None:
    case, res = cli_runs[name]
    assert "Traceback" not in res.stderr + res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{res.stderr}"
    assert lines[0].startswith("prefrl: error: ")
    for part in case.expect:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"
    assert res.returncode == 2


def test_happy_path_fit_then_score_in_real_processes(cli_runs, tmp_path: Path) -> None:
    case, res = cli_runs["happy-fit"]
    assert res.returncode == 0, res.stderr
    model = Path(case.args[case.args.index("--out") + 1])
    assert "reward/val/accuracy" in res.stdout and model.is_file()
    clips_file = Path(case.args[2]) / "clips.npz"
    out = tmp_path / "scores.npy"
    p = popen_python(["-m", "prefrl.cli", "reward", "score", "--model", str(model), "--clips", str(clips_file), "--out", str(out)])
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 0, stderr
    assert "Traceback" not in stderr
    scores = np.load(out)
    clips, _, _ = load_dataset(clips_file.parent)
    assert scores.shape == (len(clips),) and scores.dtype == np.float32
    # The fitted model ranks the clips it saw like their true returns.
    rank = lambda x: np.argsort(np.argsort(x))  # noqa: E731
    spearman = np.corrcoef(rank(scores), rank(clips.true_returns()))[0, 1]
    assert spearman > 0.8


def test_store_export_fit_round_trip_in_process(tmp_path: Path, rng: np.random.Generator) -> None:
    """Judgments in a run's store -> `prefs export` -> dataset -> `reward fit` -> `reward score`."""
    run = tmp_path / "run"
    clips = toy_clips(60, seed=4)
    with PreferenceStore(run) as store:
        ids = np.array(store.add_clips(clips, keep_frames=False))
        pairs = random_pairs(len(clips), 150, rng)
        labels = make_oracle("synthetic", rng).label(clips[pairs[:, 0]], clips[pairs[:, 1]])
        store.add_judgments(ids[pairs], labels, source="synthetic")
        store.add_judgment(int(ids[0]), int(ids[1]), None, source="human", annotator="ann")  # a skip
    main(["prefs", "export", "--run-dir", str(run), "--out", str(tmp_path / "ds")])
    ds_clips, comps, records = load_dataset(tmp_path / "ds")
    assert len(comps) == 150 and not np.isnan(comps.label).any()
    np.testing.assert_array_equal(np.sort(ds_clips.true_returns()), np.sort(clips[np.unique(pairs)].true_returns()))
    metrics = main(["reward", "fit", str(tmp_path / "ds"), "--out", str(tmp_path / "m.pt"), *FAST_FIT])
    assert metrics["reward/val/accuracy"] > 0.8
    assert RewardEnsemble.load(tmp_path / "m.pt").n_members == 2
    scores = main(["reward", "score", "--model", str(tmp_path / "m.pt"), "--clips", str(tmp_path / "ds" / "clips.npz"),
                   "--out", str(tmp_path / "s.npy")])
    assert np.corrcoef(scores, ds_clips.true_returns())[0, 1] > 0.8


def test_in_process_errors_are_prefrl_errors(tmp_path: Path) -> None:
    """main() raises PrefrlError (entry() turns it into the one line); no other exception type leaks."""
    ds = write_dataset(tmp_path / "ds", lines=[json.dumps({"left": 0, "right": 1, "label": 1.5})])
    with pytest.raises(PrefrlError, match=r"comparisons.jsonl:1: `label` must be a probability"):
        main(["reward", "fit", str(ds), "--out", str(tmp_path / "m.pt")])
    ds = write_dataset(tmp_path / "ds2", lines=[json.dumps({"left": 0, "label": 1.0})])
    with pytest.raises(PrefrlError, match=r"comparisons.jsonl:1: missing field `right`"):
        main(["reward", "fit", str(ds), "--out", str(tmp_path / "m.pt")])
    with pytest.raises(PrefrlError, match="no such dataset directory"):
        main(["reward", "fit", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m.pt")])
    with PreferenceStore(tmp_path / "run") as store:
        ids = store.add_clips(toy_clips(2, seed=5), keep_frames=False)
        store.add_judgment(ids[0], ids[1], None, source="human")
    with pytest.raises(PrefrlError, match="no labeled comparisons to export"):
        main(["prefs", "export", "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "out")])
    with pytest.raises(PrefrlError, match="unknown command `rewrd`.*did you mean `reward`"):
        main(["rewrd", "fit"])


def test_prefs_export_refuses_a_non_empty_out_unless_forced(tmp_path: Path, capsys) -> None:
    run = store_run(tmp_path / "run")
    out = tmp_path / "ds"
    out.mkdir()  # an empty directory is fine
    main(["prefs", "export", "--run-dir", str(run), "--out", str(out)])
    assert "exported 150 comparisons over 20 clips" in capsys.readouterr().out
    first = (out / "comparisons.jsonl").read_bytes()
    with pytest.raises(PrefrlError, match=r"ds: exists and is not empty \(clips.npz, comparisons.jsonl\); pass --force"):
        main(["prefs", "export", "--run-dir", str(run), "--out", str(out)])
    assert (out / "comparisons.jsonl").read_bytes() == first
    with PreferenceStore(run, create=False) as store:
        store.add_judgment(1, 2, 0.0, source="human", annotator="ann")
    main(["prefs", "export", "--run-dir", str(run), "--out", str(out), "--force"])
    assert len(load_dataset(out)[1]) == 151 and sorted(p.name for p in out.iterdir()) == ["clips.npz", "comparisons.jsonl"]
    (out / "labels").mkdir()
    (out / "labels" / STORE_FILE).write_bytes(b"hand labels of the old dataset")
    with pytest.raises(PrefrlError, match="holds hand labels of the dataset there"):
        main(["prefs", "export", "--run-dir", str(run), "--out", str(out), "--force"])


def test_prefs_export_of_a_text_store_counts_text_items(tmp_path: Path, capsys) -> None:
    with PreferenceStore(tmp_path / "run") as store:
        ids = store.add_texts(["p", "p", "q", "q"], [" a", " b", " c", " d"])
        store.add_judgments(np.array([[ids[0], ids[1]], [ids[2], ids[3]]]), np.array([1.0, 0.0]), source="synthetic")
    main(["prefs", "export", "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "ds")])
    assert "exported 2 comparisons over 4 text items" in capsys.readouterr().out
    assert len((tmp_path / "ds" / TEXT_PREFERENCES_FILE).read_text().splitlines()) == 2


def test_prefs_stats_on_a_fresh_export_shows_the_datasets_labels(tmp_path: Path, capsys) -> None:
    run = store_run(tmp_path / "run")
    main(["prefs", "export", "--run-dir", str(run), "--out", str(tmp_path / "ds")])
    capsys.readouterr()
    stats = main(["prefs", "stats", "--dataset", str(tmp_path / "ds")])
    out = capsys.readouterr().out
    assert stats["annotators"]["synthetic"]["judgments"] == 150
    assert "no hand labels yet" in out and "synthetic" in out and "no labels" not in out


def _enospc(*args, **kwargs):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["clips.npz", "comparisons.jsonl", "between the renames"])
def test_a_full_disk_during_export_leaves_no_cut_file(tmp_path: Path, monkeypatch, where) -> None:
    """ENOSPC injected while writing each file: the old dataset stays whole, temporary files go."""
    run = store_run(tmp_path / "run")
    out = tmp_path / "ds"
    main(["prefs", "export", "--run-dir", str(run), "--out", str(out)])
    old = {p.name: p.read_bytes() for p in out.iterdir()}
    with PreferenceStore(run, create=False) as store:
        store.add_judgment(1, 2, 0.0, source="human")
    import os as os_module

    if where == "clips.npz":

        def savez(file, **arrays):
            file.write(b"PK\x03\x04 the first bytes of a clips file")
            _enospc()

        monkeypatch.setattr(np, "savez", savez)
    elif where == "comparisons.jsonl":
        real_fsync, calls = os_module.fsync, []

        def fsync(fd):
            calls.append(fd)
            if len(calls) == 2:  # the .jsonl, after its lines were written
                _enospc()
            real_fsync(fd)

        monkeypatch.setattr(os_module, "fsync", fsync)
    else:
        real_replace = os_module.replace

        def replace(src, dst):
            if str(dst).endswith("comparisons.jsonl"):
                _enospc()
            real_replace(src, dst)

        monkeypatch.setattr(os_module, "replace", replace)
    with pytest.raises(PrefrlError, match=r"ds: could not write the dataset \(No space left on device\)"):
        main(["prefs", "export", "--run-dir", str(run), "--out", str(out), "--force"])
    monkeypatch.undo()
    left = sorted(p.name for p in out.iterdir())
    if where == "between the renames":  # never old comparisons over new clips: no comparisons at all
        assert left == ["clips.npz"]
        with pytest.raises(PrefrlError, match="comparisons.jsonl: missing"):
            load_dataset(out)
    else:
        assert left == sorted(old) and {p.name: p.read_bytes() for p in out.iterdir()} == old
        assert len(load_dataset(out)[1]) == 150


def test_entry_prints_machine_faults_as_one_line(monkeypatch, capsys) -> None:
    """A full disk or a locked store that reaches entry() unwrapped is still one line and exit 2."""
    import errno
    import sqlite3

    import prefrl.cli as cli

    for exc, expect in [
        (OSError(errno.ENOSPC, "No space left on device", "/data/out/clips.npz"), "/data/out/clips.npz: No space left on device"),
        (sqlite3.OperationalError("database is locked"), "preference store: database is locked"),
        (PrefrlError("a\nb"), "a b"),
    ]:
        def boom(exc=exc):
            raise exc

        monkeypatch.setattr(cli, "main", boom)
        with pytest.raises(SystemExit) as e:
            cli.entry()
        assert e.value.code == 2
        assert capsys.readouterr().err == f"prefrl: error: {expect}\n"
