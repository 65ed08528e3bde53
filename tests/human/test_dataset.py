"""Labelling an exported dataset offline, several annotators, and `prefrl prefs stats`."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
import pygame  # a core dependency: missing it must fail, not skip

from prefrl.cli import main  # noqa: E402
from prefrl.human.dataset import open_dataset_store  # noqa: E402
from prefrl.human.demo import synthetic_clips  # noqa: E402
from prefrl.core.oracles import HumanOracle  # noqa: E402
from prefrl.human.scripted import drive, true_return_policy  # noqa: E402
from prefrl.human.stats import annotator_stats, cohen_kappa  # noqa: E402
from prefrl.human.viewer import Viewer, ViewerConfig  # noqa: E402
from prefrl.core.oracles import make_oracle  # noqa: E402
from prefrl.core.store import Judgment, PreferenceStore  # noqa: E402
from prefrl.core.types import PrefrlError  # noqa: E402


@pytest.fixture(autouse=True)
def dummy_video(monkeypatch):
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    yield
    pygame.display.quit()


@pytest.fixture
def dataset(tmp_path):
    """A dataset exported from a run: 8 clips with frames, 5 synthetic-oracle comparisons."""
    clips = synthetic_clips(8, length=4, size=(24, 32), seed=3)
    with PreferenceStore(tmp_path / "run") as s:
        ids = np.array(s.add_clips(clips))
        pairs = np.array([[0, 1], [2, 3], [4, 5], [6, 7], [1, 2]])
        labels = make_oracle("synthetic", np.random.default_rng(0)).label(clips[pairs[:, 0]], clips[pairs[:, 1]])
        s.add_judgments(ids[pairs], labels, source="synthetic")
        s.export(tmp_path / "ds")
    return tmp_path / "ds"


def label_all(root, annotator, keys=None):
    cfg = ViewerConfig(width=400, height=300, poll_s=0.02, exit_when_done=True)
    with Viewer(root, annotator, shared=True, cfg=cfg) as v:
        policy = true_return_policy(v.store)
        recs = drive(v, iter(keys or []), then="oracle" if keys is None else "stop", policy=policy, timeout_s=30)
        if keys is not None:  # step until done
            end = time.monotonic() + 5
            while not v.finished and time.monotonic() < end:
                v.step()
                time.sleep(0.005)
        assert v.finished
    return recs


def test_two_annotators_label_every_pair_and_stats_compare_them(dataset):
    root = open_dataset_store(dataset)
    assert root == dataset / "labels"
    with PreferenceStore(root, create=False) as s:
        assert s.count_pending() == 5
        assert {j.annotator for j in s.judgments()} == {"synthetic"}  # the dataset's labels, for comparison
    label_all(root, "alice")  # a rational person: agrees with the synthetic oracle
    label_all(root, "bob", keys=["left", "left", "right", "skip", "equal"])
    assert open_dataset_store(dataset) == root  # reopening does not import again
    with PreferenceStore(root, create=False) as s:
        js = s.judgments()
        assert len(s.clip_ids()) == 8
    by = {}
    for j in js:
        by.setdefault(j.annotator, []).append(j)
    assert len(by["alice"]) == len(by["bob"]) == 5
    assert {j.query_id for j in by["alice"]} == {j.query_id for j in by["bob"]}  # the same pairs, each once

    stats = main(["prefs", "stats", "--dataset", str(dataset), "--json"])
    a = stats["annotators"]
    assert a["alice"]["judgments"] == 5 and a["bob"]["skip"] == 1 and a["bob"]["equal"] == 1
    rows = {(r["a"], r["b"]): r for r in stats["agreement"]}
    assert rows[("alice", "synthetic")]["agreement"] == 1.0
    bob = rows[("alice", "bob")]
    assert bob["shared"] == 4  # bob's skip is left out
    syn = [j for j in by["synthetic"]]
    expected = sum(1 for j, key in zip(syn[:4], ["left", "left", "right", "equal"])
                   if {1.0: "left", 0.0: "right", 0.5: "equal"}[j.label] == key)
    assert bob["agree"] == expected
    assert stats["pairs_multi"] == 5


def test_dataset_errors_are_clear(tmp_path, dataset):
    with pytest.raises(PrefrlError, match="no such dataset directory"):
        open_dataset_store(tmp_path / "nope")
    nof = tmp_path / "noframes"
    nof.mkdir()
    c = synthetic_clips(2, length=3, size=(8, 8))
    np.savez(nof / "clips.npz", obs=c.obs, acts=c.acts)
    (nof / "comparisons.jsonl").write_text(json.dumps({"left": 0, "right": 1, "label": 1.0}) + "\n")
    with pytest.raises(PrefrlError, match="no `frames` array"):
        open_dataset_store(nof)
    open_dataset_store(dataset, out=tmp_path / "shared")
    (nof / "clips.npz").unlink()
    c2 = synthetic_clips(2, length=3, size=(8, 8))
    np.savez(nof / "clips.npz", obs=c2.obs, acts=c2.acts, frames=c2.frames)
    with pytest.raises(PrefrlError, match="holds labels of"):
        open_dataset_store(nof, out=tmp_path / "shared")
    stats = main(["prefs", "stats", "--dataset", str(nof), "--json"])  # no hand labels yet: the dataset's own
    assert stats["annotators"]["dataset"]["judgments"] == 1 and stats["labels_from"].endswith("comparisons.jsonl")
    with pytest.raises(PrefrlError, match="`--out` goes with `--dataset`"):
        main(["label", "--run-dir", str(tmp_path), "--out", str(tmp_path / "x")])


def test_label_command_on_a_finished_run_returns(tmp_path, capsys):
    with PreferenceStore(tmp_path / "run") as s:
        ids = s.add_clips(synthetic_clips(2, length=3, size=(8, 8)))
        s.add_queries(np.array([ids]))
        s.set_meta("status", "finished")
    counts = main(["label", "--run-dir", str(tmp_path / "run"), "--annotator", "zoe", "--linger-s", "0"])
    assert counts["mine"] == 0 and counts["status"] == "finished"
    assert "zoe: 0 judgments saved" in capsys.readouterr().out


def test_stats_on_a_run_with_oracle_and_people(tmp_path):
    with PreferenceStore(tmp_path / "run") as s:
        ids = s.add_clips(synthetic_clips(4, length=3, size=(8, 8)))
        s.add_judgments(np.array([[ids[0], ids[1]], [ids[2], ids[3]]]), np.array([1.0, 0.0]), source="synthetic")
        s.add_judgment(ids[1], ids[0], 0.0, source="human", annotator="ann", response_s=2.0)  # same pair, flipped
        s.add_judgment(ids[2], ids[3], 1.0, source="human", annotator="ann", response_s=4.0)
    stats = main(["prefs", "stats", "--run-dir", str(tmp_path / "run")])
    assert stats["annotators"]["ann"]["median_response_s"] == 3.0
    (row,) = stats["agreement"]
    assert (row["a"], row["b"], row["shared"], row["agree"]) == ("ann", "synthetic", 2, 1)


def test_cohen_kappa_and_orientation():
    assert cohen_kappa(["left", "right"], ["left", "right"]) == 1.0
    assert cohen_kappa(["left", "left"], ["left", "left"]) != cohen_kappa(["left", "left"], ["left", "left"])  # NaN
    j = lambda i, l, r, lab, who: Judgment(i, l, r, lab, "human", who, 0.0, None, None)  # noqa: E731
    st = annotator_stats([j(1, 5, 6, 1.0, "a"), j(2, 6, 5, 0.0, "b"), j(3, 5, 6, 0.5, "c")])
    rows = {(r["a"], r["b"]): r["agree"] for r in st["agreement"]}
    assert rows == {("a", "b"): 1, ("a", "c"): 0, ("b", "c"): 0}


def test_human_oracle_polls_each_judgment_once_across_undo(tmp_path):
    with PreferenceStore(tmp_path / "run") as s:
        ids = s.add_clips(synthetic_clips(4, length=3, size=(8, 8)))
        oracle = HumanOracle(s)
        qids = oracle.ask(np.array([[ids[0], ids[1]], [ids[2], ids[3]]]), scores=np.array([0.1, 0.9]))
        assert [q.id for q in s.pending_queries()] == qids[::-1]
        j1 = s.add_judgment(ids[2], ids[3], 1.0, "human", "ann", query_id=qids[1])
        assert [j.id for j in oracle.poll()] == [j1]
        s.undo_last("ann")
        j2 = s.add_judgment(ids[2], ids[3], 0.0, "human", "ann", query_id=qids[1])
        assert j2 > j1  # a new id, so the poll below sees it
        assert [j.id for j in oracle.wait(1, timeout_s=1.0)] == [j2]
        assert oracle.poll() == [] and oracle.outstanding() == 1
