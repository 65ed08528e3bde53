"""The pygame labelling viewer, headless (SDL dummy driver), driven by posted key events."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
import pygame  # a core dependency: missing it must fail, not skip

from prefrl.human.demo import make_demo_store, synthetic_clips  # noqa: E402
from prefrl.human.frames import wait_until  # noqa: E402
from prefrl.human.scripted import post_key, press  # noqa: E402
from prefrl.human.viewer import Viewer, ViewerConfig, init_display  # noqa: E402
from prefrl.core.store import PreferenceStore  # noqa: E402
from prefrl.core.types import PrefrlError  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def dummy_video(monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    yield
    pygame.display.quit()


@pytest.fixture
def run_dir(tmp_path):
    store, _ = make_demo_store(tmp_path / "run", 6, clips=synthetic_clips(8, length=6, size=(24, 32)), label_budget=10)
    store.close()
    return tmp_path / "run"


def open_viewer(root, annotator="alice", **kw) -> Viewer:
    cfg = ViewerConfig(width=480, height=320, poll_s=0.02, linger_s=0.0, **kw)
    return Viewer(root, annotator, cfg=cfg).open()


def settle(v: Viewer, timeout: float = 5.0) -> None:
    """Step until a pair is on screen and the next one is prepared (or none is left)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v.step()
        if v.current is not None and v.shown_at is not None:
            if v.prefetcher.n_ready() >= 1 or v.counts["open"] <= 1:
                return
        time.sleep(0.005)
    raise AssertionError("no pair came on screen")


@pytest.mark.parametrize(
    "key,label",
    [("left", 1.0), ("1", 1.0), ("right", 0.0), ("2", 0.0), ("equal", 0.5), ("e", 0.5), ("skip", None), ("s", None)],
)
def test_label_keys_write_the_judgment_at_once(run_dir, key, label):
    v = open_viewer(run_dir)
    try:
        settle(v)
        q = v.current.query
        rec = press(v, key)
        # a second connection (another process would see the same) finds it committed
        with PreferenceStore(run_dir, create=False) as other:
            js = other.judgments()
            assert [j.id for j in js] == [rec["judgment"]]
            j = js[0]
            assert (j.left, j.right, j.label, j.query_id) == (q.left, q.right, label, q.id)
            assert (j.source, j.annotator) == ("human", "alice")
            assert j.response_s is not None and j.response_s >= 0
            assert other.query_status(q.id) == "done"
        assert v.current is not None and v.current.query.id != q.id  # the prefetched pair is up
    finally:
        v.close()


def test_pairs_come_best_score_first_and_nothing_else_is_written(run_dir):
    v = open_viewer(run_dir)
    try:
        with PreferenceStore(run_dir, create=False) as s:
            order = [q.id for q in s.pending_queries()]
        shown = []
        for _ in range(3):
            settle(v)
            shown.append(v.current.query.id)
            press(v, "left")
        assert shown == order[:3]
        settle(v)
        q = v.current.query
        v.play_t0 -= 0.1
        assert v.frame_index(v.clock()) > 0
        press(v, "replay")
        assert v.frame_index(v.clock()) == 0 and v.current.query == q
        assert len(v.store.judgments()) == 3
        press(v, "quit")
        assert v.done and len(v.store.judgments()) == 3
    finally:
        v.close()


@pytest.mark.parametrize("how", ["q", "esc", "window"])
def test_quit_keys_and_window_close(run_dir, how):
    v = open_viewer(run_dir)
    try:
        settle(v)
        if how == "window":
            pygame.event.post(pygame.event.Event(pygame.QUIT))
            v.step()
        else:
            post_key("quit" if how == "q" else "esc")
            v.step()
        assert v.done
        assert v.store.count_judgments() == 0
    finally:
        v.close()
    with PreferenceStore(run_dir, create=False) as s:  # claims given back on quit
        assert len(s.claim_queries("bob", limit=10)) == 6


def test_undo_removes_exactly_the_last_judgment_and_shows_its_pair_again(run_dir):
    with PreferenceStore(run_dir, create=False) as s:  # someone else's judgment, older than ours
        other_id = s.add_judgment(1, 2, 1.0, source="human", annotator="bob")
    v = open_viewer(run_dir)
    try:
        made = []
        for key in ("left", "right", "equal"):
            settle(v)
            made.append((press(v, key)["judgment"], v.store.judgments()[-1].query_id))
        settle(v)
        on_screen = v.current.query.id
        rec = press(v, "undo")
        assert rec["undone"] == made[-1][0]
        ids = [j.id for j in v.store.judgments()]
        assert ids == [other_id, made[0][0], made[1][0]]  # exactly the last one gone
        assert v.store.query_status(made[-1][1]) == "pending"
        assert v.current.query.id == made[-1][1]  # that pair is back on screen
        rec = press(v, "skip")  # judge it again ...
        assert rec["query"] == made[-1][1] and rec["judgment"] > made[-1][0]  # ids are never reused
        settle(v)
        assert v.current.query.id == on_screen  # ... then the pair that was showing comes back
        press(v, "undo")
        press(v, "undo")
        press(v, "undo")
        press(v, "undo")
        rec = press(v, "undo")  # only alice's own judgments are undone
        assert "undone" not in rec
        assert [j.id for j in v.store.judgments()] == [other_id]
        assert "nothing to undo" in v.message[0]
    finally:
        v.close()


def test_undo_reaches_judgments_of_an_earlier_session(run_dir):
    v = open_viewer(run_dir)
    settle(v)
    first = press(v, "left")
    v.close()
    v = open_viewer(run_dir)
    try:
        settle(v)
        rec = press(v, "undo")
        assert rec["undone"] == first["judgment"]
        assert v.current.query.id == first["query"]
    finally:
        v.close()


def test_waits_with_spinner_until_the_trainer_enqueues(tmp_path):
    store = PreferenceStore(tmp_path / "run")
    ids = store.add_clips(synthetic_clips(4, length=5, size=(24, 32)))
    store.set_meta("status", "running")
    v = open_viewer(tmp_path / "run")
    try:
        for _ in range(5):
            v.step()
        assert v.current is None and not v.done
        post_key("left")
        v.step()
        assert "no pair on screen" in v.message[0] and store.count_judgments() == 0
        store.add_queries(np.array([[ids[0], ids[1]]]), np.array([1.0]))  # the trainer asks
        settle(v)
        assert (v.current.query.left, v.current.query.right) == (ids[0], ids[1])
    finally:
        v.close()
        store.close()


def test_exits_when_the_run_finishes(run_dir):
    v = open_viewer(run_dir)
    try:
        settle(v)
        with PreferenceStore(run_dir, create=False) as s:
            s.set_meta("status", "finished")
        t0 = time.monotonic()
        counts = v.run()
        assert time.monotonic() - t0 < 3.0
        assert v.finished and counts["status"] == "finished"
    finally:
        v.close()


def test_skips_a_prefetched_pair_the_trainer_cancelled(run_dir):
    v = open_viewer(run_dir)
    try:
        settle(v)
        nxt = v.prefetcher._ready[0].query.id
        with PreferenceStore(run_dir, create=False) as s:
            s._exec("UPDATE queries SET status='cancelled' WHERE id=?", (nxt,))
        press(v, "left")
        settle(v)
        assert v.current.query.id != nxt
    finally:
        v.close()


@pytest.mark.parametrize("frame_hw", [(210, 160), (48, 48)])  # Atari-like (tall) and MuJoCo-like (square)
def test_resize_rescales_to_fit_keeping_aspect(tmp_path, frame_hw):
    store, _ = make_demo_store(tmp_path / "r", 2, clips=synthetic_clips(4, length=4, size=frame_hw))
    store.close()
    v = open_viewer(tmp_path / "r")
    try:
        settle(v)
        for w, h in ((900, 600), (400, 260)):
            pygame.event.post(pygame.event.Event(pygame.VIDEORESIZE, w=w, h=h, size=(w, h)))
            v.step()
            assert v.screen.get_size() == (w, h)
            bw, bh = v._box
            for side in (0, 1):
                sw, sh = v.current.surfaces[side][0].get_size()
                assert sw <= bw and sh <= bh and (sw == bw or sh == bh)
                assert abs(sw / sh - frame_hw[1] / frame_hw[0]) < 0.05
        # the prepared pair follows the new size in the background
        assert wait_until(lambda: v.prefetcher._ready[0].size == v._box, 5.0)
    finally:
        v.close()


def test_playback_is_in_sync_and_loops_with_a_pause(run_dir):
    t = [100.0]
    v = Viewer(run_dir, "alice", cfg=ViewerConfig(width=480, height=320, clip_fps=10, hold_s=0.5), clock=lambda: t[0])
    v.open()
    try:
        end = time.monotonic() + 5
        while v.current is None and time.monotonic() < end:
            v.step()
            time.sleep(0.005)
        v.play_t0 = t[0]
        assert v.frame_index(t[0]) == 0
        assert v.frame_index(t[0] + 0.35) == 3
        assert v.frame_index(t[0] + 0.9) == 5  # held on the last step (length 6) during the pause
        assert v.frame_index(t[0] + 0.6 + 0.5 + 0.01) == 0  # then loops
    finally:
        v.close()


def test_not_a_run_dir_and_no_display_are_clear_errors(tmp_path, monkeypatch):
    from prefrl.cli import main

    (tmp_path / "empty").mkdir()
    with pytest.raises(PrefrlError, match="not a prefrl run directory"):
        main(["label", "--run-dir", str(tmp_path / "empty")])
    with pytest.raises(PrefrlError, match="exactly one of"):
        main(["label"])
    monkeypatch.delenv("SDL_VIDEODRIVER")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(PrefrlError, match="SDL_VIDEODRIVER=dummy") as e:
        init_display((320, 240), "t")
    assert "xvfb" in str(e.value)


def test_clips_without_frames_are_a_clear_error(tmp_path):
    store = PreferenceStore(tmp_path / "run")
    ids = store.add_clips(synthetic_clips(2, length=3, size=(8, 8)), keep_frames=False)
    store.add_queries(np.array([ids]))
    store.close()
    v = open_viewer(tmp_path / "run")
    try:
        with pytest.raises(PrefrlError, match="no rendered frames"):
            for _ in range(200):
                v.step()
                time.sleep(0.005)
    finally:
        v.close()


def test_two_annotators_on_one_run_get_different_pairs(run_dir):
    with PreferenceStore(run_dir, create=False) as a, PreferenceStore(run_dir, create=False) as b:
        qa = a.claim_queries("alice", limit=2)
        qb = b.claim_queries("bob", limit=2)
        assert {q.id for q in qa}.isdisjoint(q.id for q in qb)
        assert [q.id for q in a.claim_queries("alice", limit=2)] == [q.id for q in qa]  # own claims are kept
        lapsed = b.claim_queries("bob", limit=6, ttl_s=0.0)  # claims older than the TTL lapse
        assert len(lapsed) == 6
        a.release_claims("alice")


def test_sigkill_right_after_the_key_loses_nothing(run_dir):
    """A viewer process is killed (SIGKILL) the moment it reports the key handled."""
    env = dict(os.environ, SDL_VIDEODRIVER="dummy", PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefrl.human.scripted", "--run-dir", str(run_dir), "--annotator", "kim",
         "--keys", "left,right", "--then", "hang"],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    try:
        recs = [json.loads(proc.stdout.readline()) for _ in range(2)]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    db = sqlite3.connect(run_dir / "prefs.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    with PreferenceStore(run_dir, create=False) as s:
        js = s.judgments()
        assert [(j.id, j.label, j.annotator) for j in js] == [
            (recs[0]["judgment"], 1.0, "kim"), (recs[1]["judgment"], 0.0, "kim")]
        # the killed viewer's claims hold off others only until they lapse
        assert len(s.claim_queries("bob", limit=10, ttl_s=0.0)) == 4


def test_the_loop_redraws_only_when_something_changes(run_dir):
    cfg = ViewerConfig(width=480, height=320, clip_fps=0.5, hold_s=0.0, poll_s=0.02)
    still = Viewer(run_dir, "alice", cfg=cfg)
    still.open()
    try:
        settle(still)
        for _ in range(3):  # counts refresh and the like settle
            still.step(wait=True)
        n0, t0 = still.frames_drawn, time.monotonic()
        while time.monotonic() - t0 < 0.3:
            still.step(wait=True)
        assert still.frames_drawn - n0 <= 3  # a still picture costs (almost) nothing
        still.cfg.clip_fps = still.clip_fps = 60.0
        n0, t0 = still.frames_drawn, time.monotonic()
        while time.monotonic() - t0 < 0.3:
            still.step(wait=True)
        assert still.frames_drawn - n0 >= 6  # moving clips are drawn every display frame
    finally:
        still.close()


def test_a_double_tap_judges_only_the_pair_on_screen(run_dir):
    v = open_viewer(run_dir)
    try:
        settle(v)
        first = v.current.query.id
        post_key("left")
        post_key("left")  # both keys are in the queue before the next pair is drawn
        v.step()
        js = v.store.judgments()
        assert [j.query_id for j in js] == [first]
        assert "not on screen yet" in v.message[0]
    finally:
        v.close()


def test_two_windows_under_one_annotator_name_never_judge_the_same_pair(tmp_path):
    """Issue 16: two viewers named alice on one run judged 54 pairs twice (301 judgments, budget 300)."""
    store, qids = make_demo_store(tmp_path / "run", 24, clips=synthetic_clips(12, length=4, size=(16, 16)), label_budget=24)
    store.close()
    env = dict(os.environ, SDL_VIDEODRIVER="dummy", PYTHONPATH=str(REPO))

    def window(delay_s: float) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "prefrl.human.scripted", "--run-dir", str(tmp_path / "run"), "--annotator", "alice",
             "--then", "oracle", "--delay-s", str(delay_s), "--timeout-s", "60"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )

    procs = [window(0.25)]
    try:
        first = procs[0].stdout.readline()
        assert '"judgment"' in first  # the first window is labelling ...
        procs.append(window(0.05))  # ... when the second opens under the same name
        with PreferenceStore(tmp_path / "run", create=False) as s:
            assert wait_until(lambda: s.count_pending() == 0, 60.0, 0.05)
            s.set_meta("status", "finished")  # both windows close
        outs = [p.communicate(timeout=30) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    per_window = [sum(1 for line in out.splitlines() if '"judgment"' in line) for out, _ in outs]
    per_window[0] += 1  # the line read above
    with PreferenceStore(tmp_path / "run", create=False) as s:
        js = s.judgments()
        assert sorted(j.query_id for j in js) == sorted(qids)  # every pair judged exactly once
        assert len(js) == 24 == sum(per_window) and all(n > 0 for n in per_window), per_window
        assert s._db.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0  # judged or given back
