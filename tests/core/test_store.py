"""Preference store: round trips, undo, text items, migrations, two writer processes at once, SIGKILL durability;
faults (empty, foreign, damaged and read-only stores, a full disk), viewer-session claims and heartbeats, indexes."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sqlite3
import subprocess
import time

import numpy as np
import pytest

from conftest import popen_python
from prefrl.core.dataset import load_dataset
from prefrl.core.store import SCHEMA_VERSION, STORE_FILE, TEXT_PREFERENCES_FILE, PreferenceStore, trl_record
from prefrl.core.toy import toy_clips
from prefrl.core.types import Clips, PrefrlError


def clips_with_frames(n: int, seed: int) -> Clips:
    c = toy_clips(n, length=5, seed=seed)
    frames = np.random.default_rng(seed).integers(0, 255, (n, 5, 6, 8, 3), dtype=np.uint8)
    return Clips(c.obs, c.acts, c.true_rew, frames)


def integrity(root) -> str:
    with sqlite3.connect(root / STORE_FILE) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


def test_clips_and_judgments_round_trip(tmp_path) -> None:
    clips = clips_with_frames(4, seed=0)
    with PreferenceStore(tmp_path) as store:
        ids = store.add_clips(clips, keep_frames=True)
        assert store.clip_ids() == ids
        back = store.load_clips(ids[::-1], frames=True)
        np.testing.assert_array_equal(back.obs, clips.obs[::-1])
        np.testing.assert_array_equal(back.acts, clips.acts[::-1])
        np.testing.assert_array_equal(back.true_rew, clips.true_rew[::-1])
        np.testing.assert_array_equal(back.frames, clips.frames[::-1])
        written = [
            (ids[0], ids[1], 1.0, "synthetic", None, None),
            (ids[1], ids[2], 0.0, "human", "ann", 2.5),
            (ids[2], ids[3], 0.5, "human", "ann", 1.0),
            (ids[3], ids[0], None, "human", "bob", 4.0),  # a skip
        ]
        jids = [store.add_judgment(l, r, lab, source=s, annotator=a, response_s=t) for l, r, lab, s, a, t in written]
        assert jids == sorted(jids)
        # NaN is a skip too, and a label outside [0, 1] is refused.
        jids.append(store.add_judgment(ids[0], ids[2], float("nan"), source="skip"))
        with pytest.raises(PrefrlError, match="probability"):
            store.add_judgment(ids[0], ids[2], 1.5, source="human")
        store.set_meta("oracle", {"name": "synthetic", "eps": 0.1})
    # Everything is still there after reopening.
    with PreferenceStore(tmp_path, create=False) as store:
        js = store.judgments()
        assert [j.id for j in js] == jids
        got = [(j.left, j.right, j.label, j.source, j.annotator, j.response_s) for j in js[:4]]
        assert got == written
        assert js[4].label is None
        assert store.count_judgments() == 5 and store.count_judgments(include_skips=False) == 3
        assert store.judgments(since_id=jids[2])[0].id == jids[3]
        assert store.get_meta("oracle") == {"name": "synthetic", "eps": 0.1}
        assert store.get_meta("missing", 7) == 7
        tclips, comps, tids = store.training_data()
        assert tids == ids and len(tclips) == 4
        assert comps.left.tolist() == [0, 1, 2, 3, 0]
        assert comps.label[:3].tolist() == [1.0, 0.0, 0.5] and np.isnan(comps.label[3:]).all()


def test_export_then_load_dataset_round_trip(tmp_path) -> None:
    clips = clips_with_frames(5, seed=1)
    store = PreferenceStore(tmp_path / "run")
    ids = store.add_clips(clips)
    store.add_judgments(np.array([[ids[0], ids[1]], [ids[2], ids[4]], [ids[1], ids[2]]]), np.array([1.0, np.nan, 0.25]), "synthetic")
    n_clips, n_comps = store.export(tmp_path / "ds")
    assert (n_clips, n_comps) == (3, 2)  # the skip is not exported; clips 3 and 4 appear in no exported pair
    ds_clips, comps, records = load_dataset(tmp_path / "ds")
    kept = [0, 1, 2]
    np.testing.assert_array_equal(ds_clips.obs[:3], clips.obs[kept])
    assert ds_clips.frames is not None
    assert comps.left.tolist() == [0, 1] and comps.right.tolist() == [1, 2]
    assert comps.label.tolist() == [1.0, 0.25]
    assert all(r["source"] == "synthetic" for r in records)
    store.close()


def test_undo_removes_exactly_the_last(tmp_path) -> None:
    store = PreferenceStore(tmp_path)
    ids = store.add_clips(toy_clips(4, length=3, seed=2), keep_frames=False)
    assert store.undo_last() is None  # nothing to undo
    qids = store.add_queries(np.array([[ids[0], ids[1]], [ids[2], ids[3]]]), np.array([0.2, 0.9]))
    assert [q.id for q in store.pending_queries()] == [qids[1], qids[0]]  # higher score first
    a = store.add_judgment(ids[0], ids[1], 1.0, "human", annotator="ann", query_id=qids[0])
    b = store.add_judgment(ids[2], ids[3], 0.0, "human", annotator="ann", query_id=qids[1])
    c = store.add_judgment(ids[1], ids[2], 0.5, "human", annotator="bob")
    assert store.count_pending() == 0
    # `ann`'s last is b even though bob judged after her; bob's c stays.
    undone = store.undo_last("ann")
    assert undone is not None and undone.id == b and undone.label == 0.0
    assert [j.id for j in store.judgments()] == [a, c]
    assert [q.id for q in store.pending_queries()] == [qids[1]]  # its query is asked again
    undone = store.undo_last()
    assert undone is not None and undone.id == c
    assert [j.id for j in store.judgments()] == [a]
    store.close()


def test_store_errors_are_clear(tmp_path) -> None:
    with pytest.raises(PrefrlError, match="not a prefrl run directory"):
        PreferenceStore(tmp_path / "nothing", create=False)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / STORE_FILE).write_bytes(b"this is not an sqlite database at all" * 100)
    with pytest.raises(PrefrlError, match="not a readable preference store"):
        PreferenceStore(bad)
    with PreferenceStore(tmp_path / "ok") as store:
        with pytest.raises(PrefrlError, match="clip 99 is missing"):
            store.load_clips([99])


_WRITER = """
import os, sys, time
from prefrl.core.store import PreferenceStore
root, name, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
store = PreferenceStore(root, create=False)
while not os.path.exists(go):  # start both writers at the same moment
    time.sleep(0.005)
for i in range(n):
    jid = store.add_judgment(1, 2, (i % 3) / 2, source=name, annotator=name)
    print(jid, flush=True)
    time.sleep(0.002)  # a labeler pauses between judgments; without it one writer can starve the other
"""


def test_two_processes_writing_at_once_lose_nothing(tmp_path) -> None:
    n = 150
    with PreferenceStore(tmp_path) as store:
        store.add_clips(toy_clips(2, length=3, seed=3), keep_frames=False)  # clip ids 1, 2
    go = tmp_path / "go"
    procs = [popen_python(["-c", _WRITER, str(tmp_path), f"w{k}", str(n), str(go)]) for k in range(2)]
    reader = PreferenceStore(tmp_path, create=False)  # a trainer reading while labelers write
    go.touch()
    counts = []
    while any(p.poll() is None for p in procs):
        counts.append(reader.count_judgments())
        time.sleep(0.01)
    outs = [p.communicate(timeout=60) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    reported = [[int(x) for x in out.split()] for out, _ in outs]
    assert all(len(r) == n for r in reported)
    js = reader.judgments()
    assert len(js) == 2 * n
    assert sorted(j.id for j in js) == sorted(reported[0] + reported[1])
    for k in range(2):
        assert sorted(j.id for j in js if j.source == f"w{k}") == reported[k]
    assert counts == sorted(counts)  # the reader only ever saw the count grow
    reader.close()
    assert integrity(tmp_path) == "ok"


_STREAMER = """
import sys
from prefrl.core.store import PreferenceStore
store = PreferenceStore(sys.argv[1], create=False)
i = 0
while True:
    jid = store.add_judgment(1, 2, 1.0 if i % 2 else 0.0, source="stream", annotator="child", response_s=float(i))
    print(jid, flush=True)  # reported only after add_judgment returned
    i += 1
"""


def test_sigkill_mid_stream_loses_no_reported_judgment(tmp_path) -> None:
    with PreferenceStore(tmp_path) as store:
        store.add_clips(toy_clips(2, length=3, seed=4), keep_frames=False)
    proc = popen_python(["-c", _STREAMER, str(tmp_path)])
    reported: list[int] = []
    try:
        assert proc.stdout is not None
        while len(reported) < 40:
            line = proc.stdout.readline()
            assert line, f"writer died early: {proc.stderr.read() if proc.stderr else ''}"
            reported.append(int(line))
        os.kill(proc.pid, signal.SIGKILL)  # the writer is busy in its next add_judgment
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    reported += [int(x) for x in rest.split()]
    # The store opens cleanly after the crash, holds every reported judgment intact ...
    store = PreferenceStore(tmp_path, create=False)
    assert integrity(tmp_path) == "ok"
    js = {j.id: j for j in store.judgments()}
    missing = sorted(set(reported) - set(js))
    assert not missing, f"reported as written but lost: {missing}"
    for jid in reported:
        j = js[jid]
        i = int(j.response_s)
        assert (j.left, j.right, j.label, j.source) == (1, 2, 1.0 if i % 2 else 0.0, "stream")
    # ... at most one more that was committed but not yet printed, and no half-written row.
    assert len(js) - len(reported) in (0, 1)
    assert all(j.label is not None and not math.isnan(j.label) for j in js.values())
    # It takes new judgments, which get fresh ids.
    new = store.add_judgment(2, 1, 0.5, source="after-crash")
    assert new > max(js)
    assert store.count_judgments() == len(js) + 1
    store.close()
    assert integrity(tmp_path) == "ok"


# ---- text items ------------------------------------------------------------------------------
def test_text_items_share_the_queue_claim_and_judgment_machinery(tmp_path) -> None:
    prompts = ["The soup", "The soup", "The room", "The room"]
    comps = [" was great.", " was awful.", " was ok.", " was clean, très propre."]
    with PreferenceStore(tmp_path) as store:
        ids = store.add_texts(prompts, comps, scores=[0.8, -0.6, None, 0.4])
        cids = store.add_clips(toy_clips(2, length=3, seed=5), keep_frames=False)
        assert store.text_ids() == ids and store.clip_ids() == cids  # one id space, two kinds
        assert [store.is_text(i) for i in (*ids[:1], *cids[:1], 999)] == [True, False, False]
        assert store.load_texts(ids[::-1]) == list(zip(prompts, comps))[::-1]
        assert store.text_scores(ids) == [0.8, -0.6, None, 0.4]
        with pytest.raises(PrefrlError, match=f"item {ids[0]} is a text item"):
            store.load_clips([ids[0]])
        with pytest.raises(PrefrlError, match=f"item {cids[0]} is a clip, not a text item"):
            store.load_texts([cids[0]])
        with pytest.raises(PrefrlError, match="item 999 is missing"):
            store.load_texts([999])
        with pytest.raises(PrefrlError, match="2 prompts but 1 completions"):
            store.add_texts(["a", "b"], ["c"])
        # Queries, claims, judgments and undo refer to item ids, whatever their kind.
        qids = store.add_queries(np.array([[ids[0], ids[1]], [ids[2], ids[3]]]), np.array([0.1, 0.9]))
        (q,) = store.claim_queries("ann", limit=1)
        assert q.id == qids[1] and store.claim_queries("bob", limit=2)[0].id == qids[0]
        store.add_judgment(q.left, q.right, 0.0, source="human", annotator="ann", query_id=q.id)
        store.add_judgment(ids[0], ids[1], None, source="human", annotator="bob", query_id=qids[0])  # a skip
        assert store.count_pending() == 0
        assert store.undo_last("bob").label is None and store.count_pending() == 1
        store.add_judgment(ids[0], ids[1], 1.0, source="human", annotator="bob", query_id=qids[0])
        store.add_judgment(ids[1], ids[0], None, source="human", annotator="bob")
        texts, cmp, tids = store.text_training_data()
        assert tids == ids and texts == list(zip(prompts, comps))
        assert cmp.left.tolist() == [2, 0, 1] and cmp.right.tolist() == [3, 1, 0]
        assert cmp.label[:2].tolist() == [0.0, 1.0] and np.isnan(cmp.label[2])
        # Clip readers refuse text judgments, and the other way round, with a clear message.
        with pytest.raises(PrefrlError, match="judgments compare text items, not clips.*prefrl text reward"):
            store.training_data()
        n_items, n_comps = store.export(tmp_path / "ds")
        assert (n_items, n_comps) == (4, 2)  # the skip is not exported
        assert not (tmp_path / "ds" / "clips.npz").exists()
        lines = [json.loads(ln) for ln in (tmp_path / "ds" / TEXT_PREFERENCES_FILE).read_text(encoding="utf-8").splitlines()]
        assert lines == [
            {"prompt": "The room", "chosen": " was clean, très propre.", "rejected": " was ok."},
            {"prompt": "The soup", "chosen": " was great.", "rejected": " was awful."},
        ]
        store.add_judgment(cids[0], cids[1], 1.0, source="synthetic")
        with pytest.raises(PrefrlError, match="both clips and text items"):
            store.export(tmp_path / "ds2")
        with pytest.raises(PrefrlError, match="judgments compare clips, not text items"):
            store.text_training_data()
    assert not (tmp_path / "ds2").exists()


def test_a_text_only_store_makes_no_clip_directory(tmp_path) -> None:
    with PreferenceStore(tmp_path / "run") as store:
        store.add_texts(["p"], [" c"])
    assert not (tmp_path / "run" / "clips").exists()


def test_trl_record_puts_the_preferred_completion_first() -> None:
    assert trl_record("p", "a", "b", 1.0) == {"prompt": "p", "chosen": "a", "rejected": "b"}
    assert trl_record("p", "a", "b", 0.0) == {"prompt": "p", "chosen": "b", "rejected": "a"}
    assert trl_record("p", "a", "b", 0.5) == {"prompt": "p", "chosen": "a", "rejected": "b", "label": 0.5}
    assert trl_record("p", "a", "b", 0.25) == {"prompt": "p", "chosen": "b", "rejected": "a", "label": 0.75}
    assert trl_record("p", "a", "b", None) == trl_record("p", "a", "b", float("nan")) == {
        "prompt": "p", "chosen": "a", "rejected": "b", "label": None}


# ---- schema migration ------------------------------------------------------------------------
_V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE clips (id INTEGER PRIMARY KEY, length INTEGER NOT NULL, true_return REAL,
    has_frames INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL);
CREATE TABLE queries (id INTEGER PRIMARY KEY, left INTEGER NOT NULL REFERENCES clips(id),
    right INTEGER NOT NULL REFERENCES clips(id), score REAL NOT NULL DEFAULT 0, created REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending');
CREATE INDEX queries_status ON queries(status, score);
CREATE TABLE comparisons (id INTEGER PRIMARY KEY AUTOINCREMENT, left INTEGER NOT NULL REFERENCES clips(id),
    right INTEGER NOT NULL REFERENCES clips(id), label REAL, source TEXT NOT NULL, annotator TEXT,
    time REAL NOT NULL, response_s REAL, query_id INTEGER REFERENCES queries(id));
CREATE TABLE claims (query_id INTEGER PRIMARY KEY REFERENCES queries(id), annotator TEXT NOT NULL, time REAL NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO meta VALUES ('task', '"pendulum"');
"""


def _write_v1_store(root, clips: Clips) -> None:
    """A store exactly as prefrl wrote it at schema version 1 (before text items)."""
    (root / "clips").mkdir(parents=True)
    db = sqlite3.connect(root / STORE_FILE, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(_V1_SCHEMA)
    for k in range(len(clips)):
        db.execute("INSERT INTO clips (length, true_return, has_frames, created) VALUES (?, ?, 0, 1.0)",
                   (clips.length, float(clips.true_returns()[k])))
        np.savez(root / "clips" / f"{k + 1:07d}.npz", obs=clips.obs[k], acts=clips.acts[k], true_rew=clips.true_rew[k])
    db.execute("INSERT INTO queries (left, right, score, created) VALUES (1, 2, 0.5, 1.0)")
    db.execute("INSERT INTO queries (left, right, score, created) VALUES (3, 4, 0.9, 1.0)")
    db.execute("INSERT INTO comparisons (left, right, label, source, annotator, time, response_s, query_id)"
               " VALUES (1, 2, 1.0, 'human', 'ann', 2.0, 1.5, 1)")
    db.execute("UPDATE queries SET status='done' WHERE id=1")
    db.execute("INSERT INTO comparisons (left, right, label, source, time) VALUES (2, 3, NULL, 'skip', 3.0)")
    db.execute("INSERT INTO comparisons (left, right, label, source, time) VALUES (3, 1, 0.25, 'synthetic', 4.0)")
    db.close()


def test_a_version_1_store_is_migrated_in_place_keeping_all_its_data(tmp_path) -> None:
    clips = toy_clips(4, length=3, seed=6)
    _write_v1_store(tmp_path, clips)
    with PreferenceStore(tmp_path, create=False) as store:
        assert store.schema_version == SCHEMA_VERSION == 3
        assert store.get_meta("task") == "pendulum"
        assert store.clip_ids() == [1, 2, 3, 4] and store.text_ids() == []
        np.testing.assert_array_equal(store.load_clips([4, 1]).obs, clips.obs[[3, 0]])
        js = store.judgments()
        assert [(j.id, j.left, j.right, j.label, j.source, j.annotator, j.response_s, j.query_id) for j in js] == [
            (1, 1, 2, 1.0, "human", "ann", 1.5, 1), (2, 2, 3, None, "skip", None, None, None),
            (3, 3, 1, 0.25, "synthetic", None, None, None)]
        assert [q.id for q in store.pending_queries()] == [2]
        tclips, comps, tids = store.training_data()
        assert tids == [1, 2, 3] and comps.label[0] == 1.0 and np.isnan(comps.label[1])
        # The migrated store takes new clips, text items and judgments; ids continue.
        assert store.add_clips(toy_clips(1, length=3, seed=7), keep_frames=False) == [5]
        assert store.add_texts(["p"], [" c"]) == [6]
        assert store.add_judgment(1, 4, 0.0, source="synthetic") == 4
    with PreferenceStore(tmp_path, create=False) as store:  # reopening a migrated store changes nothing
        assert store.schema_version == 3 and store.count_judgments() == 4 and store.load_texts([6]) == [("p", " c")]
    assert integrity(tmp_path) == "ok"
    with sqlite3.connect(tmp_path / STORE_FILE) as db:
        assert "text" in [r[1] for r in db.execute("PRAGMA table_info(clips)")]


def test_a_store_from_a_newer_prefrl_is_refused(tmp_path) -> None:
    PreferenceStore(tmp_path).close()
    with sqlite3.connect(tmp_path / STORE_FILE) as db:
        db.execute("UPDATE meta SET value='4' WHERE key='schema_version'")
    with pytest.raises(PrefrlError, match="schema version 4 was written by a newer prefrl; this one reads up to 3"):
        PreferenceStore(tmp_path, create=False)


# ---- faults and bad input -----------------------------------------------------------------------


def _judged_store(root, n: int = 3, annotator: str = "ann") -> list[int]:
    """A store with 4 clips, ``n`` judgments and 2 pending queries; returns the clip ids."""
    with PreferenceStore(root) as store:
        ids = store.add_clips(clips_with_frames(4, seed=9), keep_frames=True)
        for k in range(n):
            store.add_judgment(ids[k % 4], ids[(k + 1) % 4], 1.0, source="human", annotator=annotator)
        store.add_queries(np.array([[ids[0], ids[2]], [ids[1], ids[3]]]), np.array([0.5, 0.1]))
    return ids


@pytest.mark.parametrize("create", [False, True])
def test_an_empty_or_schemaless_store_file_is_an_error_naming_it(tmp_path, create) -> None:
    (tmp_path / STORE_FILE).write_bytes(b"")  # zero bytes: a crash, a full disk, a `touch`
    with pytest.raises(PrefrlError, match=rf"{STORE_FILE}: an empty file \(0 bytes\), not a preference store"):
        PreferenceStore(tmp_path, create=create)
    assert (tmp_path / STORE_FILE).stat().st_size == 0  # never written over
    (tmp_path / STORE_FILE).unlink()
    with sqlite3.connect(tmp_path / STORE_FILE) as db:  # an SQLite file, but not ours
        db.execute("CREATE TABLE songs (title TEXT)")
    with pytest.raises(PrefrlError, match=rf"{STORE_FILE}: not a prefrl preference store"):
        PreferenceStore(tmp_path, create=create)
    with sqlite3.connect(tmp_path / STORE_FILE) as db:  # a meta table without a version
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    with pytest.raises(PrefrlError, match="its meta table has no schema_version"):
        PreferenceStore(tmp_path, create=create, readonly=not create)
    with sqlite3.connect(tmp_path / STORE_FILE) as db:
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")] == ["songs", "meta"]


def test_a_run_dir_that_is_a_file_is_an_error(tmp_path) -> None:
    (tmp_path / "run").write_text("not a directory")
    for create in (False, True):
        with pytest.raises(PrefrlError, match="run: is a file, not a run directory"):
            PreferenceStore(tmp_path / "run", create=create)


def test_a_new_store_appears_whole(tmp_path) -> None:
    """A store is built under a temporary name and linked into place: never a half-made file."""
    with PreferenceStore(tmp_path / "run") as store:
        assert store.schema_version == SCHEMA_VERSION
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [STORE_FILE]  # no temporary left, no clips/
    with PreferenceStore(tmp_path / "run") as store:  # create=True on an existing store opens it
        assert store.count_judgments() == 0


def test_a_corrupted_page_is_a_prefrl_error_from_every_command(tmp_path) -> None:
    from prefrl.cli import main
    from prefrl.human.stats import store_stats

    with PreferenceStore(tmp_path / "run") as store:
        ids = store.add_texts(["p"] * 40, [f" c{i}" for i in range(40)])
        pairs = np.array([[ids[i % 40], ids[(i + 1) % 40]] for i in range(4000)])
        store.add_judgments(pairs, np.ones(len(pairs)), source="synthetic", annotator="x" * 30)
    path = tmp_path / "run" / STORE_FILE
    data = bytearray(path.read_bytes())
    pages = len(data) // 4096
    rng = np.random.default_rng(0)
    for page in range(2, pages):  # every page but the schema: no reader can get past
        data[page * 4096 : (page + 1) * 4096] = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    calls = {
        "judgments": lambda s: s.judgments(),
        "count": lambda s: s.count_judgments(annotator="x" * 30),
        "stats": store_stats,
        "export": lambda s: s.export(tmp_path / "out"),
        "label": lambda s: s.add_judgment(1, 2, 1.0, source="human"),
        "claim": lambda s: s.claim_queries("ann"),
        "training": lambda s: s.text_training_data(),
    }
    for readonly in (False, True):
        try:
            store = PreferenceStore(tmp_path / "run", create=False, readonly=readonly)
        except PrefrlError as e:
            assert str(path) in str(e)
            continue
        for name, call in calls.items():
            if readonly and name in ("label", "claim"):
                continue
            with pytest.raises(PrefrlError, match=rf"{path}: .*damaged"):
                call(store)
        store.close()
    for argv in (["prefs", "stats", "--run-dir", str(tmp_path / "run")],
                 ["prefs", "export", "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "out2")]):
        with pytest.raises(PrefrlError, match=str(path)):
            main(argv)


def test_a_full_disk_names_the_cause_and_loses_nothing(tmp_path) -> None:
    """SQLite's own full-disk error (a page limit stands in for the disk), not "cannot rollback"."""
    with PreferenceStore(tmp_path) as store:
        ids = store.add_texts(["p", "p"], [" a", " b"])
        qids = store.add_queries(np.array([[ids[0], ids[1]]] * 50))
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count={pages + 2}")
        saved = []
        with pytest.raises(PrefrlError) as err:
            for q in qids:
                saved.append(store.add_judgment(ids[0], ids[1], 1.0, source="human", annotator="a" * 400, query_id=q))
        msg = str(err.value)
        assert msg.startswith(f"{tmp_path / STORE_FILE}: the disk is full (database or disk is full)")
        assert "cannot rollback" not in msg and "everything saved before it is intact" in msg
        assert not store._db.in_transaction
        with pytest.raises(PrefrlError, match="disk is full"):
            store.add_judgments(np.array([[ids[0], ids[1]]] * 200), np.ones(200), source="x", annotator="b" * 400)
        assert [j.id for j in store.judgments()] == saved  # the failed ones left no trace
        assert store.query_status(qids[len(saved)]) == "pending"
        store._db.execute("PRAGMA max_page_count=1073741823")  # space again: the store carries on
        store.add_judgment(ids[0], ids[1], 0.0, source="human", query_id=qids[len(saved)])
        assert store.count_judgments() == len(saved) + 1
    assert integrity(tmp_path) == "ok"


def test_a_full_disk_while_staging_clips_leaves_no_files(tmp_path, monkeypatch) -> None:
    import errno

    real_savez = np.savez_compressed  # clip files are compressed
    calls = []

    def savez(file, **arrays):
        calls.append(1)
        if len(calls) == 3:
            file.write(b"PK\x03\x04 half a clip")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_savez(file, **arrays)

    with PreferenceStore(tmp_path) as store:
        monkeypatch.setattr(np, "savez_compressed", savez)
        with pytest.raises(PrefrlError, match=r"clips: cannot write clip files \(No space left on device\); nothing was stored"):
            store.add_clips(clips_with_frames(3, seed=1), keep_frames=True)
        monkeypatch.setattr(np, "savez_compressed", real_savez)
        assert store.clip_ids() == [] and list((tmp_path / "clips").iterdir()) == []

        real_replace, renamed = os.replace, []

        def replace(src, dst):
            if len(renamed) == 2:  # the second clip's arrays
                raise OSError(errno.EXDEV, "Invalid cross-device link")
            renamed.append(dst)
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", replace)
        with pytest.raises(PrefrlError, match="cannot move clip files into place"):
            store.add_clips(clips_with_frames(2, seed=1))
        monkeypatch.undo()
        assert store.clip_ids() == [] and list((tmp_path / "clips").iterdir()) == []  # clip 1's files went too
        # SQLite's own full disk at the commit, after the files were renamed into place
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count={pages}")
        with pytest.raises(PrefrlError, match="the disk is full"):
            store.add_clips(clips_with_frames(300, seed=1), keep_frames=False)
        assert store.clip_ids() == [] and list((tmp_path / "clips").iterdir()) == []
        store._db.execute("PRAGMA max_page_count=1073741823")
        assert store.add_clips(clips_with_frames(2, seed=1)) == [1, 2]


def test_stale_staged_clip_files_are_removed_when_a_writer_opens(tmp_path) -> None:
    _judged_store(tmp_path)
    old, fresh = tmp_path / "clips" / ".staged-old.npz", tmp_path / "clips" / ".staged-fresh.npz"
    old.write_bytes(b"left by a crash")
    fresh.write_bytes(b"another process is about to rename this")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    PreferenceStore(tmp_path, create=False, readonly=True).close()
    assert old.exists()  # a reader touches nothing
    PreferenceStore(tmp_path, create=False).close()
    assert not old.exists() and fresh.exists()
    assert sorted(p.name for p in (tmp_path / "clips").iterdir())[-1] == "0000004.npz"


def test_a_readonly_open_writes_nothing(tmp_path) -> None:
    from prefrl.human.stats import store_stats

    ids = _judged_store(tmp_path / "run")
    shutil_copy = tmp_path / "copy"
    import shutil

    shutil.copytree(tmp_path / "run", shutil_copy)
    before = (shutil_copy / STORE_FILE).read_bytes()
    with PreferenceStore(shutil_copy, readonly=True) as store:  # readonly implies create=False
        assert store.count_judgments() == 3 and store_stats(store)["annotators"]["ann"]["judgments"] == 3
        assert store.export(tmp_path / "ds") == (4, 3)
        for write in (lambda: store.add_judgment(ids[0], ids[1], 1.0, source="human"),
                      lambda: store.set_meta("x", 1), lambda: store.claim_queries("ann")):
            with pytest.raises(PrefrlError, match=r"cannot write: the store is read-only"):
                write()
        with pytest.raises(PrefrlError, match="opened read-only"):
            store.add_clips(clips_with_frames(1, seed=0))
    assert (shutil_copy / STORE_FILE).read_bytes() == before
    with pytest.raises(PrefrlError, match="not a prefrl run directory"):
        PreferenceStore(tmp_path / "nothing", readonly=True)
    assert not (tmp_path / "nothing").exists()
    ds_clips, comps, _ = load_dataset(tmp_path / "ds")
    assert len(comps) == 3 and ds_clips.frames is not None


@contextlib.contextmanager
def readonly_mount(src):
    """``src`` mounted read-only at a new directory (a real EROFS, which root cannot write); skips without mount rights."""
    dst = src.parent / f"{src.name}-ro"
    dst.mkdir()
    ok = subprocess.run(["mount", "--bind", str(src), str(dst)], capture_output=True).returncode == 0
    try:
        if not ok or subprocess.run(["mount", "-o", "remount,ro,bind", str(dst)], capture_output=True).returncode:
            pytest.skip("no read-only bind mount here (needs root with CAP_SYS_ADMIN)")
        yield dst
    finally:
        if ok and subprocess.run(["umount", str(dst)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(dst)], capture_output=True)  # busy: detach it anyway
        dst.rmdir()


def test_stats_and_export_read_a_store_on_a_read_only_file_system(tmp_path) -> None:
    """Tests run as root, where chmod does not stop a write: a read-only bind mount does."""
    from prefrl.cli import main

    _judged_store(tmp_path / "run")
    with readonly_mount(tmp_path / "run") as ro:
        with pytest.raises(OSError):
            (ro / "probe").write_text("x")  # really read-only
        stats = main(["prefs", "stats", "--run-dir", str(ro), "--json"])
        assert stats["annotators"]["ann"]["judgments"] == 3 and stats["pending"] == 2
        main(["prefs", "export", "--run-dir", str(ro), "--out", str(tmp_path / "ds")])
        assert len(load_dataset(tmp_path / "ds")[1]) == 3
        with pytest.raises(PrefrlError, match=rf"{ro / STORE_FILE}: "):  # a writer is told why it cannot
            with PreferenceStore(ro, create=False) as store:
                store.add_judgment(1, 2, 1.0, source="human")
        with pytest.raises(PrefrlError, match="could not write the dataset .*Read-only file system"):
            main(["prefs", "export", "--run-dir", str(tmp_path / "run"), "--out", str(ro / "ds")])


def test_a_version_2_store_is_read_as_it_is_and_migrated_by_a_writer(tmp_path) -> None:
    clips = toy_clips(4, length=3, seed=6)
    _write_v1_store(tmp_path, clips)
    with sqlite3.connect(tmp_path / STORE_FILE) as db:  # what prefrl's version 2 made of it
        db.execute("ALTER TABLE clips ADD COLUMN text TEXT")
        db.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
        db.execute("INSERT INTO claims VALUES (2, 'bob', ?)", (time.time(),))
    with PreferenceStore(tmp_path, readonly=True) as store:
        assert store.schema_version == 2 and store.count_judgments(annotator="ann") == 1
        assert store.count_open("ann", shared=True) == 1 and len(store.judgments()) == 3
    with PreferenceStore(tmp_path, create=False) as store:
        assert store.schema_version == 3
        assert store.count_judgments(annotator="ann") == 1 and store.count_open("ann", shared=True) == 1
        assert [q.id for q in store.claim_queries("ann", limit=5)] == [2]  # the old claim went with the old table
    with sqlite3.connect(tmp_path / STORE_FILE) as db:
        assert "viewer" in [r[1] for r in db.execute("PRAGMA table_info(claims)")]
        assert db.execute("SELECT * FROM tallies").fetchall() == [("ann", 1, 1)]
    assert integrity(tmp_path) == "ok"


def test_a_version_1_store_read_only_asks_for_a_writable_open(tmp_path) -> None:
    _write_v1_store(tmp_path, toy_clips(4, length=3, seed=6))
    with pytest.raises(PrefrlError, match="schema version 1 is too old to read without upgrading it"):
        PreferenceStore(tmp_path, readonly=True)


# ---- claims: viewer sessions and heartbeats ------------------------------------------------


def test_two_viewers_under_one_annotator_name_get_different_pairs(tmp_path) -> None:
    with PreferenceStore(tmp_path) as store:
        ids = store.add_texts(["p"] * 8, [f" c{i}" for i in range(8)])
        qids = store.add_queries(np.array([[ids[i], ids[i + 1]] for i in range(6)]), np.arange(6.0)[::-1])
    with PreferenceStore(tmp_path, create=False) as a, PreferenceStore(tmp_path, create=False) as b:
        got_a = [q.id for q in a.claim_queries("alice", limit=2, viewer="win-1")]
        got_b = [q.id for q in b.claim_queries("alice", limit=2, viewer="win-2")]
        assert got_a == qids[:2] and got_b == qids[2:4]  # same name, different windows: different pairs
        assert [q.id for q in a.claim_queries("alice", limit=2, viewer="win-1")] == got_a  # a window keeps its own
        # Default sessions: one per store object and annotator.
        assert [q.id for q in a.claim_queries("alice", limit=5)] == qids[4:]
        assert b.claim_queries("alice", limit=5) == []
        # Judging drops the claim; releasing gives the rest back.
        q = a.claim_queries("alice", limit=1, viewer="win-1")[0]
        a.add_judgment(q.left, q.right, 1.0, source="human", annotator="alice", query_id=q.id)
        a.release_claims("alice", viewer="win-1")
        assert [q.id for q in b.claim_queries("alice", limit=5, viewer="win-2")] == qids[1:4]
    # Dataset mode: one annotator's two windows split the pairs; another annotator sees them all.
    with PreferenceStore(tmp_path, create=False) as s:
        s2 = PreferenceStore(tmp_path, create=False)
        first = [q.id for q in s.claim_queries("carol", 3, shared=True, viewer="c-1")]
        second = [q.id for q in s2.claim_queries("carol", 3, shared=True, viewer="c-2")]
        assert sorted(first + second) == qids  # every pair, once
        assert [q.id for q in s.claim_queries("dave", 10, shared=True)] == qids  # another person: all of them
        s2._db.execute("DELETE FROM claims WHERE annotator='alice'")  # alice's run-mode windows are gone
        assert [q.id for q in s2.claim_queries("alice", 10, shared=True)] == qids[1:]  # all but the one she judged
        s2.close()


def test_claims_live_while_refreshed_and_lapse_after_the_ttl(tmp_path) -> None:
    from prefrl.core.store import CLAIM_TTL_S

    with PreferenceStore(tmp_path) as store:
        ids = store.add_texts(["p"] * 4, [f" c{i}" for i in range(4)])
        qids = store.add_queries(np.array([[ids[0], ids[1]], [ids[2], ids[3]]]))
    a, b = PreferenceStore(tmp_path, create=False), PreferenceStore(tmp_path, create=False)
    held = [q.id for q in a.claim_queries("alice", 2, viewer="killed-soon")]
    assert held == qids and b.claim_queries("bob", 2) == []

    def age(seconds: float) -> None:  # let time pass for every claim
        a._db.execute("UPDATE claims SET time = time - ?", (seconds,))

    age(CLAIM_TTL_S - 5)
    assert a.refresh_claims("killed-soon") == 2  # the heartbeat of a live viewer
    age(CLAIM_TTL_S - 5)
    assert b.claim_queries("bob", 2) == []  # refreshed 25 s ago: still held
    age(10)  # no heartbeat for 35 s: the viewer is gone
    assert [q.id for q in b.claim_queries("bob", 2)] == qids
    assert CLAIM_TTL_S <= 60  # a killed viewer's pairs come back within a minute, not 10
    a.close()
    b.close()


def test_the_prefetcher_is_the_viewers_heartbeat(tmp_path) -> None:
    from prefrl.human.frames import Prefetcher

    with PreferenceStore(tmp_path) as store:
        ids = store.add_clips(clips_with_frames(4, seed=2))
        store.add_queries(np.array([[ids[0], ids[1]], [ids[2], ids[3]]]))
    p = Prefetcher(tmp_path, "alice", shared=False, depth=2, poll_s=0.01, session="win", heartbeat_s=0.05)
    p.set_box((40, 30))
    p.start()
    try:
        with PreferenceStore(tmp_path, create=False) as s:
            end = time.monotonic() + 10
            while p.n_ready() < 2 and time.monotonic() < end:
                time.sleep(0.01)
            assert p.n_ready() == 2
            s._db.execute("UPDATE claims SET time = time - 1000")  # as if the claims were old
            end = time.monotonic() + 10
            while s._db.execute("SELECT MIN(time) FROM claims").fetchone()[0] < time.time() - 60:
                assert time.monotonic() < end, "the prefetcher never refreshed its claims"
                time.sleep(0.02)
            assert s.claim_queries("bob", 2) == []
    finally:
        p.stop()


# ---- indexes and tallies -------------------------------------------------------------------


def test_labelling_queries_use_indexes_not_scans_of_the_judgments(tmp_path) -> None:
    with PreferenceStore(tmp_path) as store:
        db = store._db
        plans = []
        for sql in (
            "SELECT id FROM queries q WHERE status != 'cancelled' AND NOT EXISTS (SELECT 1 FROM comparisons c"
            " WHERE c.annotator IS 'a' AND c.query_id = q.id) ORDER BY score DESC, id LIMIT 1",
            "SELECT id FROM queries q WHERE status = 'pending' AND NOT EXISTS (SELECT 1 FROM claims k"
            " WHERE k.query_id = q.id AND k.viewer IS NOT 'v' AND k.time > 0) ORDER BY score DESC, id LIMIT 1",
            "SELECT id FROM comparisons WHERE annotator='a' ORDER BY id DESC LIMIT 1",
            "SELECT judgments FROM tallies WHERE annotator='a'",
        ):
            plans.append(" | ".join(r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql)))
        for plan in plans:
            assert "SCAN c" not in plan and "SCAN comparisons" not in plan and "TEMP B-TREE" not in plan, plan


def test_tallies_match_the_judgments_through_inserts_undos_and_skips(tmp_path) -> None:
    rng = np.random.default_rng(0)
    with PreferenceStore(tmp_path) as store:
        ids = store.add_texts(["p"] * 10, [f" c{i}" for i in range(10)])
        qids = store.add_queries(np.array([[ids[i], ids[(i + 3) % 10]] for i in range(10)]))
        for step in range(120):
            who = ["alice", "bob", None][step % 3]
            if rng.random() < 0.2:
                store.undo_last(who)
            elif rng.random() < 0.3:
                store.add_judgments(np.array([[ids[0], ids[1]]]), np.array([np.nan]), source="synthetic", annotator=who)
            else:
                q = int(rng.choice(qids))
                store.add_judgment(ids[0], ids[1], float(rng.random()), source="human", annotator=who, query_id=q)
        for who in ("alice", "bob", "nobody"):
            slow = store._db.execute("SELECT COUNT(*) FROM comparisons WHERE annotator IS ?", (who,)).fetchone()[0]
            assert store.count_judgments(annotator=who) == slow
            open_slow = store._db.execute(
                "SELECT COUNT(*) FROM queries q WHERE status != 'cancelled' AND NOT EXISTS"
                " (SELECT 1 FROM comparisons c WHERE c.query_id = q.id AND c.annotator IS ?)", (who,)).fetchone()[0]
            assert store.count_open(who, shared=True) == open_slow
