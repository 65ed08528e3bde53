"""Preference store: round trips, undo, text items, v1 migration, two writer processes at once, SIGKILL durability."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
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
        assert store.schema_version == SCHEMA_VERSION == 2
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
        assert store.schema_version == 2 and store.count_judgments() == 4 and store.load_texts([6]) == [("p", " c")]
    assert integrity(tmp_path) == "ok"
    with sqlite3.connect(tmp_path / STORE_FILE) as db:
        assert "text" in [r[1] for r in db.execute("PRAGMA table_info(clips)")]


def test_a_store_from_a_newer_prefrl_is_refused(tmp_path) -> None:
    PreferenceStore(tmp_path).close()
    with sqlite3.connect(tmp_path / STORE_FILE) as db:
        db.execute("UPDATE meta SET value='3' WHERE key='schema_version'")
    with pytest.raises(PrefrlError, match="schema version 3 was written by a newer prefrl; this one reads up to 2"):
        PreferenceStore(tmp_path, create=False)
