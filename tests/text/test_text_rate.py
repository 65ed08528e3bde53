"""`prefrl text rate` on tiny text policies whose completions differ in length (the `length` oracle)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prefrl.cli import main
from prefrl.core.ratings import stored_pools
from prefrl.core.store import PreferenceStore
from prefrl.core.types import PrefrlError
from prefrl.text.config import TinyGPTConfig
from prefrl.text.corpus import make_corpus
from prefrl.text.lm import load_lm, make_tiny_checkpoint, save_lm

TINY = TinyGPTConfig(vocab_size=320, n_layer=1, n_head=2, n_embd=32, n_positions=64)


def _constant_next_token(src: Path, dst: Path, token: str) -> Path:
    """A copy of the tiny LM whose next-token distribution is fixed and dominated by ``token``:
    the final layer norm outputs a constant vector along that token's (tied) embedding."""
    model, tok = load_lm(src)
    tid = tok.convert_tokens_to_ids(token)
    with torch.no_grad():
        e = model.transformer.wte.weight[tid]
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(e * (60.0 / float(e @ e)))
    save_lm(model, tok, dst, {"kind": f"constant {token}"})
    return dst


@pytest.fixture(scope="module")
def policies(tmp_path_factory) -> dict[str, Path]:
    """Three policies: one that stops at once, the random tiny LM, one that says 'the' until cut off."""
    root = tmp_path_factory.mktemp("text-policies")
    texts = [e.prompt + e.completion for e in make_corpus(300, seed=0)]
    rand = make_tiny_checkpoint(root / "random", texts, TINY, seed=0)
    return {"random": rand,
            "mute": _constant_next_token(rand, root / "mute", "<|endoftext|>"),
            "chatty": _constant_next_token(rand, root / "chatty", "Ġthe")}


@pytest.fixture
def prompts(tmp_path) -> Path:
    p = tmp_path / "prompts.jsonl"
    p.write_text("".join(json.dumps({"prompt": f"The meal number {i} was"}) + "\n" for i in range(12)))
    return p


def test_text_rate_orders_policies_by_length(policies, prompts, tmp_path):
    out = tmp_path / "rate"
    dirs = [str(policies[n]) for n in ("mute", "chatty", "random")]
    flags = ["--prompts", str(prompts), "--oracle", "length", "--out", str(out), "--bootstrap", "100",
             "--sample.max-new-tokens", "8"]
    res = main(["text", "rate", "--run-dirs", *dirs, "--comparisons", "30", "--adaptive", *flags])
    assert [p["policy"] for p in res["policies"]] == ["chatty", "random", "mute"]
    scores = {p["policy"]: p["length score"] for p in res["policies"]}
    assert scores["mute"] == 0 and scores["chatty"] == 8
    assert res["policies"][0]["ci_low"] > res["policies"][2]["ci_high"]
    for name in ("ratings.md", "ratings.json", "ratings.png"):
        assert (out / name).is_file()
    with PreferenceStore(out, readonly=True, create=False) as store:
        pools = stored_pools(store)
        assert len(pools) == 3 and all(len(p) == 12 for p in pools.values())
        owner = {i: k for k, p in pools.items() for i in p}
        js = store.judgments()
        assert len(js) == 30
        for j in js:  # two policies' completions of the same prompt
            (pl, _), (pr, _) = store.load_texts([j.left, j.right])
            assert pl == pr and owner[j.left] != owner[j.right]
    # rerun: the completions are reused, 10 more comparisons
    res2 = main(["text", "rate", "--run-dirs", *dirs, "--comparisons", "40", *flags])
    assert res2["comparisons"] == 40


def test_text_rate_accepts_a_run_dir_with_policy(policies, prompts, tmp_path):
    from prefrl.text.rate import policy_dir

    run = tmp_path / "ppo-run"
    (run / "policy").mkdir(parents=True)
    for f in Path(policies["mute"]).iterdir():
        (run / "policy" / f.name).write_bytes(f.read_bytes())
    assert policy_dir(run) == run / "policy"
    assert policy_dir(policies["random"]) == policies["random"]


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--oracle", "vadr"], "unknown text oracle `vadr`.*did you mean `vader`"),
        (["--teacher", "mistak"], "unknown oracle `mistak`.*did you mean `mistake`"),
        (["--teacher", "mistake", "--human"], "not both"),
        (["--run-dirs", "{random}", "{empty}"], "no text policy in it"),
        (["--run-dirs", "{random}", "{missing}"], "no such policy or run directory"),
        (["--run-dirs", "{random}"], "at least two"),
        (["--prompts", "{missing}"], "no such prompts file"),
    ],
)
def test_text_rate_refuses_bad_input(policies, prompts, tmp_path, extra, match):
    empty = tmp_path / "empty"
    empty.mkdir()
    names = {"random": str(policies["random"]), "empty": str(empty), "missing": str(tmp_path / "missing")}
    extra = [e.format(**names) for e in extra]
    args = ["text", "rate", "--prompts", str(prompts), "--out", str(tmp_path / "out")]
    if "--run-dirs" not in extra:
        args += ["--run-dirs", str(policies["random"]), str(policies["mute"])]
    with pytest.raises(PrefrlError, match=match):
        main(args + extra)
    assert not (tmp_path / "out").exists()
