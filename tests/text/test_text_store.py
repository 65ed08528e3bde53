"""Text pairs and judgments through the preference store: label, export/import, reward fit from a store, logs, configs."""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

from prefrl.core.rundir import RunDir
from prefrl.core.store import SCHEMA_VERSION, STORE_FILE, TEXT_PREFERENCES_FILE, PreferenceStore
from prefrl.core.toy import toy_clips
from prefrl.core.trainer import RewardTrainConfig
from prefrl.core.types import PrefrlError
from prefrl.core.utils import set_torch_threads
from prefrl.text.config import TinyGPTConfig, text_reward_train
from prefrl.text.corpus import make_corpus, make_prompts
from prefrl.text.data import read_preferences, write_jsonl
from prefrl.text.lm import SampleConfig, make_tiny_checkpoint
from prefrl.text.oracles import TextOracle

TINY = TinyGPTConfig(vocab_size=320, n_layer=1, n_head=2, n_embd=32, n_positions=64)
SAMPLE = SampleConfig(max_new_tokens=8)
FIT = RewardTrainConfig(epochs=2, batch_size=8, val_fraction=0.3)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    set_torch_threads(1)
    texts = [e.prompt + e.completion for e in make_corpus(300, seed=0)]
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "lm", texts, TINY, seed=0)


@pytest.fixture(scope="module")
def labeled(ckpt, tmp_path_factory):
    """`label_samples` (TRL; a noisy teacher that also ties and skips) into a fresh directory: (dir, metrics)."""
    from prefrl.text.pipeline import label_samples

    d = tmp_path_factory.mktemp("labels")
    oracle = TextOracle("length", teacher="mistake", rng=np.random.default_rng(1), eps_mistake=0.2, eps_skip=0.6, eps_equal=0.1)
    m = label_samples(ckpt, make_prompts(24, seed=3), d / "train.jsonl", oracle, "trl", k=3, sample_cfg=SAMPLE, seed=0)
    return d, m


def test_label_writes_pairs_and_judgments_to_the_store_and_exports_the_jsonl_from_it(labeled) -> None:
    d, m = labeled
    lines = [json.loads(ln) for ln in (d / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(lines) == m["label/lines"] == m["label/store_judgments"] > 0
    with PreferenceStore(d, create=False) as store:
        js = store.judgments()
        assert len(js) == len(lines) and all(j.source == "length/mistake" for j in js)
        assert all(store.is_text(j.left) and store.is_text(j.right) for j in js)
        assert store.clip_ids() == [] and len(store.text_ids()) == 2 * len(js)
        labels = [j.label for j in js]
        assert None in labels and 0.5 in labels and {0.0, 1.0} <= set(labels)  # skips, ties and both sides
        oracle = TextOracle("length")
        for j, line in zip(js, lines):
            (p, left), (p2, right) = store.load_texts([j.left, j.right])
            assert p == p2 == line["prompt"]
            # the stored true return is the oracle's score of the completion
            assert store.text_scores([j.left, j.right]) == pytest.approx(oracle.score([p, p], [left, right]).tolist())
            if j.label is None or j.label == 0.5:
                assert (line["chosen"], line["rejected"], line["label"]) == (left, right, j.label)
            else:
                assert (line["chosen"], line["rejected"]) == ((left, right) if j.label == 1.0 else (right, left))
                assert "label" not in line
    assert not (d / "clips").exists()


def test_a_store_reads_as_the_same_preferences_as_its_jsonl_and_its_export(labeled, tmp_path) -> None:
    d, _ = labeled
    from_jsonl, from_store = read_preferences(d / "train.jsonl"), read_preferences(d)
    assert from_store.formats == {"store": len(from_store.comparisons)}
    _assert_same_preferences(from_store, from_jsonl)
    # export -> preferences.jsonl -> read back: the same, less the skips (a dataset line must hold a probability)
    with PreferenceStore(d, create=False) as store:
        n_items, n_comps = store.export(tmp_path / "ds")
        assert n_comps == store.count_judgments(include_skips=False)
    back = read_preferences(tmp_path / "ds" / TEXT_PREFERENCES_FILE)
    kept = from_jsonl.comparisons.labeled()
    assert len(back.comparisons) == len(kept) == n_comps
    for (p, a, b, lab, w), (p2, a2, b2, lab2, w2) in zip(back.pairs(), from_jsonl.pairs()):
        assert (p, a, b, w) == (p2, a2, b2, w2) and lab == pytest.approx(lab2)


def test_reward_fit_from_a_store_gives_the_same_model_as_from_its_jsonl(ckpt, labeled, tmp_path) -> None:
    from prefrl.text.pipeline import fit_reward

    d, _ = labeled
    rm_jsonl, m_jsonl = fit_reward([d / "train.jsonl"], tmp_path / "a", ckpt, FIT, members=2, max_length=32, seed=3,
                                   export_member=None)
    rm_store, m_store = fit_reward([d], tmp_path / "b", ckpt, FIT, members=2, max_length=32, seed=3, export_member=None)
    sa, sb = rm_jsonl.ensemble.state_dict(), rm_store.ensemble.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    for k in ("reward/train/loss", "reward/val/loss", "reward/comparisons", "reward/labeled"):
        assert m_jsonl[k] == m_store[k], k


def test_the_reward_command_reads_a_store_directory(ckpt, labeled, tmp_path) -> None:
    from prefrl.cli import main

    d, _ = labeled
    out = tmp_path / "rm"
    m = main(["text", "reward", str(d), "--init-from", str(ckpt), "--out", str(out), "--max-length", "32",
              "--train.epochs", "1", "--eval-data", str(d / "train.jsonl")])
    assert m["reward/comparisons"] == len(read_preferences(d).comparisons) and "reward/test/accuracy" in m
    cfg = RunDir(out).read_config()
    assert cfg["command"] == "TextReward" and cfg["train"]["lr"] == 2e-4
    assert cfg["train"]["val_fraction"] == pytest.approx(1 / math.e)
    acc = main(["text", "score", "--reward-model", str(out), "--data", str(d)])
    assert 0.0 <= acc["accuracy"] <= 1.0


def test_vertex_drops_ties_from_the_file_but_the_store_keeps_them_and_kwise_stays_jsonl_only(ckpt, tmp_path) -> None:
    from prefrl.text.pipeline import label_samples

    prompts = make_prompts(16, seed=4)
    # `length` with the `equal` teacher makes ties (equal word counts) likely
    oracle = TextOracle("length", teacher="equal", rng=np.random.default_rng(0), eps_equal=0.3)
    m = label_samples(ckpt, prompts, tmp_path / "v" / "vertex.jsonl", oracle, "vertex", k=2, sample_cfg=SAMPLE, seed=1)
    lines = [json.loads(ln) for ln in (tmp_path / "v" / "vertex.jsonl").read_text().splitlines()]
    with PreferenceStore(tmp_path / "v", create=False) as store:
        js = store.judgments()
    strict = [j for j in js if j.label in (0.0, 1.0)]
    assert len(lines) == len(strict) == m["label/lines"] and m["label/ties"] == len(js) - len(strict)
    assert all(set(ln) == {"input_text", "candidate_0", "candidate_1", "choice"} for ln in lines)
    # kwise: rankings are not pairwise judgments, so no store is written
    label_samples(ckpt, prompts[:4], tmp_path / "k" / "kwise.jsonl", TextOracle("keyword"), "kwise", k=3, sample_cfg=SAMPLE)
    assert (tmp_path / "k" / "kwise.jsonl").is_file() and not (tmp_path / "k" / STORE_FILE).exists()
    with pytest.raises(PrefrlError, match="is a directory; `--out` is the preference JSONL file"):
        label_samples(ckpt, prompts, tmp_path / "v", oracle, "trl", sample_cfg=SAMPLE)


def test_reading_a_bad_store_directory_fails_clearly(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrefrlError, match=r"empty: a directory without a preference store \(prefs.sqlite\)"):
        read_preferences(tmp_path / "empty")
    with PreferenceStore(tmp_path / "clips") as store:
        ids = store.add_clips(toy_clips(2, length=3, seed=0), keep_frames=False)
        store.add_judgment(ids[0], ids[1], 1.0, source="synthetic")
    with pytest.raises(PrefrlError, match="judgments compare clips, not text items"):
        read_preferences(tmp_path / "clips")
    PreferenceStore(tmp_path / "nothing").close()
    with pytest.raises(PrefrlError, match="no preference lines found"):
        read_preferences(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / STORE_FILE).write_bytes(b"not a database" * 100)
    with pytest.raises(PrefrlError, match="bad/prefs.sqlite: not a readable preference store"):
        read_preferences(tmp_path / "bad")


def test_a_jsonl_import_into_a_store_round_trips(tmp_path) -> None:
    """TRL lines written into a store as text items and judgments read back as the same preferences."""
    from prefrl.text.data import write_preferences_to_store

    rows = [{"prompt": "The soup", "chosen": " was great.", "rejected": " was bad."},
            {"prompt": "The room", "chosen": " was ok.", "rejected": " was fine.", "label": 0.5},
            {"prompt": "The room", "chosen": " was fine.", "rejected": " was dirty.", "label": 0.8},
            {"prompt": "The soup", "chosen": " was bad.", "rejected": " was great.", "label": None},
            {"input_text": "The bar", "candidate_0": " was loud.", "candidate_1": " was fun.", "choice": 1}]
    write_jsonl(tmp_path / "in.jsonl", rows)
    prefs = read_preferences(tmp_path / "in.jsonl")
    with PreferenceStore(tmp_path / "store") as store:
        jids = write_preferences_to_store(prefs, store, source="import")
        assert len(jids) == 5 and len(store.text_ids()) == len(prefs)  # each distinct text once
    _assert_same_preferences(read_preferences(tmp_path / "store"), read_preferences(tmp_path / "in.jsonl"), exact_order=False)
    write_jsonl(tmp_path / "k.jsonl", [{"prompt": "p", "completions": ["a", "b", "c"], "ranking": [2, 0, 1]}])
    with PreferenceStore(tmp_path / "store2") as store, pytest.raises(PrefrlError, match="weighted .*rankings"):
        write_preferences_to_store(read_preferences(tmp_path / "k.jsonl"), store)


def test_run_logger_writes_progress_through_the_core_progress_log(tmp_path) -> None:
    from prefrl.text.logger import RunLogger

    (tmp_path / "progress.csv").write_text("step,old\n1,2\n")  # a previous run's: replaced, not continued
    log = RunLogger(tmp_path, tensorboard=False)
    log(0, {"a": 1.0})
    log(20, {"a": 0.5, "b": float("nan")})
    log.close()
    assert (tmp_path / "progress.csv").read_text().splitlines() == ["step,a,b", "0,1.0,", "20,0.5,nan"]


def test_text_reward_settings_are_the_core_config_with_text_defaults() -> None:
    from prefrl.text.commands import TextDemo, TextReward

    cfg = TextReward(data=[], out=Path("x"), init_from=Path("y")).train
    assert type(cfg) is RewardTrainConfig
    assert (cfg.lr, cfg.epochs, cfg.batch_size, cfg.patience, cfg.l2, cfg.noise_eps) == (2e-4, 10, 32, 3, 1e-6, 0.05)
    assert cfg.val_fraction == RewardTrainConfig().val_fraction == 1 / math.e
    demo = TextDemo(out=Path("x")).reward
    assert (demo.lr, demo.val_fraction, demo.epochs) == (3e-4, 0.2, 10)
    assert text_reward_train(lr=1.0).lr == 1.0
    src = "".join(p.read_text() for p in Path(__file__).resolve().parents[2].joinpath("prefrl", "text").glob("*.py"))
    assert "0.3679" not in src and "RewardTrainArgs" not in src


def _assert_same_preferences(a, b, exact_order: bool = True) -> None:
    if exact_order:
        assert a.prompts == b.prompts and a.completions == b.completions
        for x, y in ((a.comparisons, b.comparisons),):
            assert x.left.tolist() == y.left.tolist() and x.right.tolist() == y.right.tolist()
            np.testing.assert_array_equal(x.label, y.label)
            np.testing.assert_array_equal(x.weight, y.weight)
        return
    assert sorted(_judgments(a)) == sorted(_judgments(b))


def _judgments(prefs):
    """(prompt, preferred, other, P(preferred), weight) of every comparison, whatever its orientation."""
    c = prefs.comparisons
    for i, j, lab, w in zip(c.left.tolist(), c.right.tolist(), c.label.tolist(), c.weight.tolist()):
        if math.isnan(lab):
            yield prefs.prompts[i], prefs.completions[i], prefs.completions[j], None, w
            continue
        if lab < 0.5:
            i, j, lab = j, i, 1.0 - lab
        yield prefs.prompts[i], prefs.completions[i], prefs.completions[j], round(lab, 6), w


def test_store_schema_is_current_in_files_label_writes(labeled) -> None:
    d, _ = labeled
    with sqlite3.connect(d / STORE_FILE) as db:
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
