"""Preference store: round trips, undo, two writer processes at once, and SIGKILL durability."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import time

import numpy as np
import pytest

from conftest import popen_python
from prefrl.core.dataset import load_dataset
from prefrl.core.store import STORE_FILE, PreferenceStore
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
