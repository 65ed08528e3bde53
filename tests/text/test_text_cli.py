"""`prefrl text ...` end to end at toy size (in-process), and the text oracles."""

from __future__ import annotations

import json

import numpy as np
import pytest

from prefrl.cli import main
from prefrl.text.data import read_preferences
from prefrl.text.oracles import TextOracle
from prefrl.core.types import PrefrlError
from prefrl.core.utils import set_torch_threads

TINY = ["--tiny.vocab-size", "320", "--tiny.n-layer", "1", "--tiny.n-head", "2", "--tiny.n-embd", "32", "--tiny.n-positions", "64"]
SAMPLE = ["--sample.max-new-tokens", "10"]


def test_text_pipeline_end_to_end_from_the_command_line(tmp_path):
    set_torch_threads(1)
    d = tmp_path / "data"
    main(["text", "corpus", "--out", str(d), "--n-sft", "200", "--n-prompts", "24", "--n-eval-prompts", "6"])
    sft = main(["text", "sft", "--data", str(d / "sft.jsonl"), "--out", str(tmp_path / "sft"), *TINY, "--sft.epochs", "1", "--sft.batch-size", "16"])
    assert np.isfinite(sft["sft/loss"]) and (tmp_path / "sft" / "config.json").is_file()
    # oracle-labeled preferences in all three formats
    for fmt, k in (("trl", 3), ("vertex", 2), ("kwise", 3)):
        main(["text", "label", "--policy", str(tmp_path / "sft"), "--prompts", str(d / "prompts.jsonl"), "--out",
              str(tmp_path / f"{fmt}.jsonl"), "--format", fmt, "--k", str(k), *SAMPLE])
    prefs = read_preferences([tmp_path / "trl.jsonl", tmp_path / "vertex.jsonl", tmp_path / "kwise.jsonl"])
    assert set(prefs.formats) == {"trl", "vertex", "kwise"}
    m = main(["text", "reward", str(tmp_path / "trl.jsonl"), str(tmp_path / "kwise.jsonl"), "--init-from", str(tmp_path / "sft"),
              "--out", str(tmp_path / "rm"), "--members", "2", "--train.epochs", "1", "--eval-data", str(tmp_path / "vertex.jsonl")])
    assert "reward/test/accuracy" in m and (tmp_path / "rm" / "hf" / "config.json").is_file()
    # disagreement-based pair selection with the 2-member ensemble
    main(["text", "label", "--policy", str(tmp_path / "sft"), "--prompts", str(d / "prompts.jsonl"), "--out", str(tmp_path / "dis.jsonl"),
          "--k", "3", "--reward-model", str(tmp_path / "rm"), "--limit", "6", "--oracle.teacher", "mistake", *SAMPLE])
    assert len(read_preferences(tmp_path / "dis.jsonl").comparisons) == 6
    ppo = main(["text", "ppo", "--policy", str(tmp_path / "sft"), "--reward-model", str(tmp_path / "rm"), "--prompts",
                str(d / "prompts.jsonl"), "--out", str(tmp_path / "ppo"), "--ppo.steps", "2", "--ppo.batch-size", "4",
                "--ppo.minibatch-size", "2", "--ppo.kl-target", "2.0", "--ptx-data", str(d / "sft.jsonl"), "--ppo.ptx-coef", "0.1", *SAMPLE])
    assert ppo["ppo/steps"] == 2 and "oracle/score" in ppo
    rows = (tmp_path / "ppo" / "progress.csv").read_text().splitlines()
    assert len(rows) == 3 and "ppo/kl" in rows[0] and "ppo/entropy" in rows[0] and "ppo/score" in rows[0]
    assert any((tmp_path / "ppo" / "tb").iterdir()) and (tmp_path / "ppo" / "policy" / "config.json").is_file()
    dpo = main(["text", "dpo", str(tmp_path / "trl.jsonl"), str(tmp_path / "vertex.jsonl"), "--policy", str(tmp_path / "sft"),
                "--out", str(tmp_path / "dpo"), "--dpo.epochs", "1", "--dpo.batch-size", "8"])
    assert dpo["dpo/steps"] >= 1 and (tmp_path / "dpo" / "policy" / "model.safetensors").is_file()
    ev = main(["text", "eval", "--policy", str(tmp_path / "ppo" / "policy"), "--ref", str(tmp_path / "sft"), "--prompts",
               str(d / "eval_prompts.jsonl"), "--reward-model", str(tmp_path / "rm"), "--out", str(tmp_path / "eval.json"), *SAMPLE])
    assert ev["eval/kl"] >= -1e-3 and "eval/oracle_score" in ev and json.loads((tmp_path / "eval.json").read_text())
    acc = main(["text", "score", "--reward-model", str(tmp_path / "rm"), "--data", str(tmp_path / "vertex.jsonl")])
    assert 0.0 <= acc["accuracy"] <= 1.0
    main(["text", "sample", "--policy", str(tmp_path / "dpo" / "policy"), "--prompts", str(d / "eval_prompts.jsonl"),
          "--out", str(tmp_path / "s.jsonl"), "--n", "2", "--oracle", "keyword", *SAMPLE])
    scored = main(["text", "score", "--reward-model", str(tmp_path / "rm"), "--data", str(tmp_path / "s.jsonl"), "--out", str(tmp_path / "r.jsonl")])
    assert scored["score/n"] == 12
    main(["text", "export", "--reward-model", str(tmp_path / "rm"), "--out", str(tmp_path / "hf1"), "--member", "1"])
    assert (tmp_path / "hf1" / "tokenizer.json").is_file()


def test_text_oracles_and_teacher_noise():
    vader = TextOracle("vader")
    s = vader.score(["p"] * 3, [" was great.", " was awful.", " was plain."])
    assert s[0] > 0.3 and s[1] < -0.3 and s[2] == 0.0
    assert vader.label(["p"] * 2, [" was great.", " was plain."], [" was awful.", " was plain."]).tolist() == [1.0, 0.5]
    kw = TextOracle("keyword")
    assert kw.score([""], ["good good bad"])[0] == pytest.approx(1 / 3)
    assert TextOracle("length").score([""], ["a b c"])[0] == 3.0
    # scripted-teacher noise from the core: mistakes flip about eps of the labels
    noisy = TextOracle("vader", teacher="mistake", rng=np.random.default_rng(0), eps_mistake=0.2)
    labels = noisy.label(["p"] * 2000, [" was great."] * 2000, [" was awful."] * 2000)
    assert 0.15 < (labels == 0.0).mean() < 0.25
    full = TextOracle("vader", on="full")
    assert full.score(["I hated it."], [" ok"])[0] < 0
    with pytest.raises(PrefrlError, match="unknown text oracle `vadr`.*did you mean `vader`"):
        TextOracle("vadr")
    with pytest.raises(PrefrlError, match="unknown oracle"):
        TextOracle("vader", teacher="perfect")


def test_text_demo_at_toy_size_labels_through_stores_and_fits_from_one(tmp_path):
    set_torch_threads(1)
    out = tmp_path / "demo"
    summary = main(["text", "demo", "--out", str(out), "--pairs", "12", "--test-pairs", "6", "--n-sft", "120", "--eval-prompts", "4",
                    *TINY, *SAMPLE, "--sft.epochs", "1", "--reward.epochs", "1", "--ppo.steps", "1", "--ppo.batch-size", "4",
                    "--ppo.minibatch-size", "2", "--dpo.epochs", "1", "--dpo.batch-size", "4"])
    assert summary["reward"]["reward/comparisons"] == 12 and "reward/test/accuracy" in summary["reward"]
    # train and held-out pairs live in stores of their own, each beside its JSONL export
    for d, n in ((out / "prefs", 12), (out / "test-prefs", 6)):
        assert (d / "prefs.sqlite").is_file() and len(read_preferences(d).comparisons) == n
    assert read_preferences(out / "prefs").formats == {"store": 12}
    assert json.loads((out / "summary.json").read_text())["labels"]["label/lines"] == 12
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["command"] == "TextDemo" and (cfg["reward"]["lr"], cfg["reward"]["val_fraction"]) == (3e-4, 0.2)
