"""Text preference / SFT files: the three preference formats, K-wise weights, errors naming file:line:field."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from prefrl.text.data import read_preferences, read_prompts, read_sft
from prefrl.core.types import PrefrlError


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_all_three_formats_mix_into_one_dataset(tmp_path):
    f = _write(
        tmp_path / "p.jsonl",
        [
            {"prompt": "The soup", "chosen": " was great.", "rejected": " was bad."},
            {"input_text": "The soup", "candidate_0": " was bad.", "candidate_1": " was great.", "choice": 1},
            "",
            {"prompt": "The room", "completions": [" was ok.", " was lovely.", " was dirty.", " was nice."], "ranking": [1, 3, 0, 2]},
        ],
    )
    p = read_preferences(f)
    assert p.formats == {"trl": 1, "vertex": 1, "kwise": 1}
    # (prompt, completion) pairs are deduplicated into clips: 2 for the soup, 4 for the room
    assert len(p) == 6
    c = p.comparisons
    assert len(c) == 1 + 1 + 6
    # TRL: chosen is left with label 1; Vertex choice 1: candidate_1 preferred -> label 0 for (c0, c1)
    assert p.completions[c.left[0]] == " was great." and c.label[0] == 1.0
    assert p.completions[c.left[1]] == " was bad." and c.label[1] == 0.0
    # K-wise: C(4,2) = 6 pairs, each weighted 1/6, better one on the left
    assert np.allclose(c.weight[2:], 1 / 6) and np.allclose(c.weight[:2], 1.0)
    order = [" was lovely.", " was nice.", " was ok.", " was dirty."]
    for i, j in zip(c.left[2:], c.right[2:]):
        assert order.index(p.completions[i]) < order.index(p.completions[j])


def test_soft_labels_and_skips_on_trl_lines(tmp_path):
    f = _write(
        tmp_path / "p.jsonl",
        [
            {"prompt": "a", "chosen": "x", "rejected": "y", "label": 0.5},
            {"prompt": "a", "chosen": "x", "rejected": "z", "label": None},
        ],
    )
    c = read_preferences(f).comparisons
    assert c.label[0] == 0.5 and np.isnan(c.label[1])
    assert len(c.labeled()) == 1


@pytest.mark.parametrize(
    "row, match",
    [
        ({"prompt": "a", "chosen": "x"}, r"p\.jsonl:2: missing field `rejected`"),
        ({"input_text": "a", "candidate_0": "x", "candidate_1": "y", "choice": 2}, r"p\.jsonl:2: field `choice` must be 0 or 1"),
        ({"input_text": "a", "candidate_0": "x", "candidate_1": "y"}, r"p\.jsonl:2: missing field `choice`"),
        ({"prompt": "a", "completions": ["x", "y"], "ranking": [0, 5]}, r"p\.jsonl:2: field `ranking` must hold"),
        ({"prompt": "a", "completions": "xy", "ranking": [0, 1]}, r"p\.jsonl:2: field `completions` must be a list"),
        ({"prompt": "a", "chosen": [{"role": "user"}], "rejected": "y"}, r"p\.jsonl:2: field `chosen` is a list"),
        ({"prompt": 3, "chosen": "x", "rejected": "y"}, r"p\.jsonl:2: field `prompt` must be a string"),
        ({"prompt": "a", "chosen": "x", "rejected": "y", "label": 2}, r"p\.jsonl:2: field `label` must be a probability"),
        ({"text": "hello"}, r"p\.jsonl:2: not a preference line"),
        ("{not json", r"p\.jsonl:2: not valid JSON"),
        ("[1, 2]", r"p\.jsonl:2: expected a JSON object"),
    ],
)
def test_bad_line_names_file_line_and_field(tmp_path, row, match):
    f = _write(tmp_path / "p.jsonl", [{"prompt": "a", "chosen": "x", "rejected": "y"}, row])
    with pytest.raises(PrefrlError, match=match):
        read_preferences(f)


def test_sft_and_prompt_files(tmp_path):
    f = _write(tmp_path / "s.jsonl", [{"prompt": "The soup", "completion": " was great."}, {"text": "plain text"}])
    ex = read_sft(f)
    assert (ex[0].prompt, ex[0].completion) == ("The soup", " was great.")
    assert (ex[1].prompt, ex[1].completion) == ("", "plain text")
    assert read_prompts(_write(tmp_path / "q.jsonl", [{"prompt": "x"}, {"input_text": "y", "candidate_0": "z"}])) == ["x", "y"]
    with pytest.raises(PrefrlError, match=r"s2\.jsonl:1: missing field `completion`"):
        read_sft(_write(tmp_path / "s2.jsonl", [{"prompt": "a"}]))
    with pytest.raises(PrefrlError, match="no such JSONL file"):
        read_sft(tmp_path / "missing.jsonl")


def test_cli_prints_one_line_and_exits_2_on_a_bad_line(tmp_path, monkeypatch, capsys):
    from prefrl import cli

    f = _write(tmp_path / "p.jsonl", [{"prompt": "a", "chosen": "x", "rejected": "y"}, {"prompt": "a", "chosen": "x"}])
    monkeypatch.setattr(sys, "argv", ["prefrl", "text", "dpo", str(f), "--policy", str(tmp_path), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as e:
        cli.entry()
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "p.jsonl:2: missing field `rejected`" in err
