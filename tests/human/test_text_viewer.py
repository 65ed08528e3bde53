"""Text pairs in the viewer: a dataset of text pairs labeled by two annotators with posted keys,
scrolling, a run's pending text queries, and `prefrl prefs stats` over people and the oracle."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
import pygame  # a core dependency: missing it must fail, not skip

from prefrl.cli import main  # noqa: E402
from prefrl.core.oracles import HumanOracle  # noqa: E402
from prefrl.core.store import PreferenceStore  # noqa: E402
from prefrl.core.types import PrefrlError  # noqa: E402
from prefrl.human.dataset import open_dataset_store  # noqa: E402
from prefrl.human.demo import REVIEWS, make_text_store, synthetic_clips  # noqa: E402
from prefrl.human.frames import PreparedText  # noqa: E402
from prefrl.human.scripted import drive, post_key, press, true_return_policy  # noqa: E402
from prefrl.human.stats import store_stats  # noqa: E402
from prefrl.human.viewer import Viewer, ViewerConfig  # noqa: E402


@pytest.fixture(autouse=True)
def dummy_video(monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    yield
    pygame.display.quit()


@pytest.fixture
def text_ds(tmp_path):
    """A directory holding a store of 4 oracle-judged text pairs, as `prefrl text label` leaves it."""
    make_text_store(tmp_path / "prefs").close()
    return tmp_path / "prefs"


def viewer(root, annotator, shared=True, **kw) -> Viewer:
    cfg = ViewerConfig(width=640, height=400, poll_s=0.02, linger_s=0.0, **kw)
    return Viewer(root, annotator, shared=shared, cfg=cfg).open()


def settle(v: Viewer, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v.step()
        if v.current is not None and v.shown_at is not None:
            return
        time.sleep(0.005)
    raise AssertionError("no pair came on screen")


def test_two_annotators_label_a_text_dataset_with_posted_keys(text_ds):
    root = open_dataset_store(text_ds)
    v = viewer(root, "alice")
    try:
        seen, recs = [], []
        for key in ("left", "right", "equal", "undo", "skip", "right"):
            if key != "undo":
                settle(v)
                pair = v.current
                assert isinstance(pair, PreparedText)
                seen.append((pair.query.id, pair.prompt, pair.completions))
            recs.append(press(v, key))
        v.step()
        assert v.current is None and v.finished  # every pair labeled by alice
    finally:
        v.close()
    with PreferenceStore(root, create=False) as store:  # another connection: committed
        mine = [j for j in store.judgments() if j.annotator == "alice"]
        texts = {q: (p, c) for q, p, c in seen}
        assert [j.label for j in mine] == [1.0, 0.0, None, 0.0]  # the `equal` was undone, then skipped
        assert {j.query_id for j in mine} == {q for q, _, _ in seen}
        for j in mine:  # what was on screen is what was judged
            (pl, cl), (pr, cr) = store.load_texts([j.left, j.right])
            assert texts[j.query_id] == (pl, (cl, cr)) and pl == pr
            assert j.source == "human" and j.response_s is not None
        assert recs[3]["undone"] == recs[2]["judgment"]
        assert {p for p, _, _ in REVIEWS} == {p for _, p, _ in seen}
    v = viewer(root, "bob", exit_when_done=True)  # a second annotator sees every pair too, judging by the stored scores
    try:
        policy = true_return_policy(v.store)
        drive(v, iter([]), then="oracle", policy=policy, timeout_s=20)
        end = time.monotonic() + 5
        while not v.finished and time.monotonic() < end:
            v.step()
    finally:
        v.close()
    with PreferenceStore(root, create=False, readonly=True) as store:
        stats = store_stats(store)
        assert stats["items"] == "texts" and stats["annotators"]["bob"]["judgments"] == 4
        assert stats["left_to_label"] == {"alice": 0, "bob": 0}
        agree = {frozenset((r["a"], r["b"])): r for r in stats["agreement"]}
        assert agree[frozenset(("bob", "demo/synthetic"))]["agreement"] == 1.0  # bob follows the scores
        assert agree[frozenset(("alice", "bob"))]["shared"] == 3  # alice's skip is left out
    out = main(["prefs", "stats", "--dataset", str(text_ds), "--json"])
    assert out["annotators"]["alice"]["skip"] == 1 and out["items"] == "texts"


def test_text_labels_are_what_prefrl_text_reward_reads(text_ds):
    from prefrl.text.data import read_preferences  # what `prefrl text reward DIR` reads

    root = open_dataset_store(text_ds)
    v = viewer(root, "alice")
    try:
        for key in ("left", "left", "right", "right"):
            settle(v)
            press(v, key)
    finally:
        v.close()
    prefs = read_preferences(root)
    assert len(prefs.comparisons) == 8  # the dataset's 4 judgments and alice's 4
    assert set(prefs.prompts) == {p for p, _, _ in REVIEWS}


def test_long_text_scrolls_with_keys_and_the_wheel_and_wraps_to_the_width(tmp_path):
    long = " ".join(f"word{i}" for i in range(400))
    make_text_store(tmp_path / "prefs", [("A long prompt " * 30, long, " short."), ("p", " a", " b")]).close()
    root = open_dataset_store(tmp_path / "prefs")
    v = viewer(root, "alice")
    try:
        settle(v)
        v.step()  # drawn once: the overflow is known
        assert v.scroll == 0 and v._scroll_max > 0
        x, _, w, _ = v._text_area()
        lines = v.wrap(long, v.TEXT_SIZE, 200)
        assert " ".join(lines) == long and all(v._font(v.TEXT_SIZE).size(s)[0] <= 200 for s in lines)
        assert v.wrap("x" * 300, v.TEXT_SIZE, 100)[0] != "x" * 300  # a word wider than the panel is cut
        post_key(pygame.K_PAGEDOWN)
        v.step()
        page = v.scroll
        assert page > 0
        pygame.event.post(pygame.event.Event(pygame.MOUSEWHEEL, x=0, y=-1, flipped=False))
        v.step()
        assert v.scroll == page + v.SCROLL_STEP
        post_key(pygame.K_END)
        v.step()
        assert v.scroll == v._scroll_max
        post_key(pygame.K_PAGEDOWN)  # never past the end
        v.step()
        assert v.scroll == v._scroll_max
        pygame.event.post(pygame.event.Event(pygame.MOUSEWHEEL, x=0, y=3, flipped=False))
        v.step()
        assert v.scroll == v._scroll_max - 3 * v.SCROLL_STEP
        post_key(pygame.K_HOME)
        v.step()
        assert v.scroll == 0
        post_key(pygame.K_END)
        v.step()
        press(v, "left")  # the next pair starts at its top
        settle(v)
        assert v.scroll == 0 and set(v.current.completions) == {" a", " b"}
    finally:
        v.close()


def test_pending_text_queries_of_a_run_are_labeled_in_the_viewer(tmp_path):
    with PreferenceStore(tmp_path / "run") as store:
        ids = store.add_texts(["The soup"] * 4, [" was hot.", " was cold.", " was salty.", " was great."])
        store.set_meta("status", "running")
        store.set_meta("label_budget", 2)
        HumanOracle(store).ask(np.array([[ids[0], ids[1]], [ids[2], ids[3]]]), scores=np.array([1.0, 0.5]))
    v = viewer(tmp_path / "run", "carol", shared=False)
    try:
        settle(v)
        assert v.current.query.left == ids[0]
        press(v, "left")
        settle(v)
        press(v, "right")
    finally:
        v.close()
    with PreferenceStore(tmp_path / "run", create=False) as store:
        js = store.judgments()
        assert [(j.left, j.right, j.label, j.annotator) for j in js] == [(ids[0], ids[1], 1.0, "carol"), (ids[2], ids[3], 0.0, "carol")]
        assert store.count_pending() == 0
        texts, comps, _ = store.text_training_data()
        assert len(comps) == 2


def test_a_store_of_clips_or_an_empty_one_is_refused_as_a_text_dataset(tmp_path):
    with PreferenceStore(tmp_path / "clips") as s:  # a store of judged clips without clips.npz
        ids = s.add_clips(synthetic_clips(2, length=3, size=(8, 8)))
        s.add_judgments(np.array([ids]), np.array([1.0]), source="synthetic")
    with pytest.raises(PrefrlError, match="compare clips"):
        open_dataset_store(tmp_path / "clips")
    PreferenceStore(tmp_path / "empty").close()
    with pytest.raises(PrefrlError, match="no text pairs"):
        open_dataset_store(tmp_path / "empty")


def test_prefs_stats_on_a_text_store_without_hand_labels(text_ds, capsys):
    out = main(["prefs", "stats", "--dataset", str(text_ds)])
    assert out["annotators"]["demo/synthetic"]["judgments"] == 4
    assert "no hand labels yet" in capsys.readouterr().out
    json.dumps(out)


def test_label_command_opens_a_text_dataset(text_ds, capsys):
    root = open_dataset_store(text_ds)
    v = viewer(root, "dan")
    try:
        for _ in range(4):
            settle(v)
            press(v, "left")
    finally:
        v.close()
    counts = main(["label", "--dataset", str(text_ds), "--annotator", "dan", "--exit-when-done", "--width", "400", "--height", "300"])
    assert counts["mine"] == 4 and counts["open"] == 0  # every pair judged: the window closes by itself
    assert "dan: 4 judgments saved" in capsys.readouterr().out


def test_a_jsonl_of_text_preferences_is_imported_then_labeled(tmp_path):
    lines = [{"prompt": p, "chosen": g, "rejected": b} for p, g, b in REVIEWS]
    lines.append({"input_text": "The view", "candidate_0": " was dull.", "candidate_1": " was stunning.", "choice": 1})
    (tmp_path / "prefs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    m = main(["text", "import", str(tmp_path / "prefs.jsonl"), "--out", str(tmp_path / "ds")])
    assert m["import/judgments"] == 5
    root = open_dataset_store(tmp_path / "ds")
    v = viewer(root, "erin")
    try:
        for _ in range(5):
            settle(v)
            press(v, "right")
    finally:
        v.close()
    with PreferenceStore(root, create=False, readonly=True) as store:
        stats = store_stats(store)
    assert stats["annotators"]["erin"]["right"] == 5 and stats["annotators"]["import"]["judgments"] == 5
