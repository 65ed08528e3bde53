"""The AI judge (RLAIF): log-prob comparison of the labels, both orders, the `ai` oracle kind, commands."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from prefrl.core.oracles import check_oracle_name, open_oracle
from prefrl.core.store import PreferenceStore
from prefrl.core.types import Clips, PrefrlError, TextItems
from prefrl.core.utils import set_torch_threads
from prefrl.text.config import TinyGPTConfig
from prefrl.text.corpus import make_corpus
from prefrl.text.judge import AIJudge, JudgeOracle, combine_orders, judge_store
from prefrl.text.lm import encode, load_lm, make_tiny_checkpoint

TINY = TinyGPTConfig(vocab_size=320, n_layer=1, n_head=2, n_embd=32, n_positions=256)
PROMPTS = ["The hotel", "Our waiter", "The pasta", "This phone", "The movie", "The room"]
GOOD = [" was great and friendly.", " was great, we loved it.", " tasted great.", " works great.", " was great fun.", " was great."]
BAD = [" was awful and rude.", " was dirty and slow.", " tasted bland.", " broke in a week.", " was dull.", " smelled bad."]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    set_torch_threads(1)
    texts = [e.prompt + e.completion for e in make_corpus(300, seed=0)]
    return make_tiny_checkpoint(tmp_path_factory.mktemp("judge") / "tiny-judge", texts, TINY, seed=0)


@pytest.fixture(scope="module")
def tok(ckpt):
    return load_lm(ckpt)[1]


class LabelLM(nn.Module):
    """A causal LM stand-in whose logits, at every position, score the label tokens by a rule.

    ``bias`` is added to the last token of label A (a position preference); with ``marker``, the
    label whose continuation contains it gets ``strength`` more (content), read from the judging
    prompt the judge built (decoded from the input ids, padding dropped).
    """

    def __init__(self, tokenizer, bias: float = 0.0, marker: str | None = None, strength: float = 3.0):
        super().__init__()
        self.tok = tokenizer
        self.a, self.b = (encode(tokenizer, [s])[0][-1] for s in (" A", " B"))
        self.bias, self.marker, self.strength = bias, marker, strength
        self.scale = nn.Parameter(torch.ones(()))  # a real module with a parameter, like any LM

    def forward(self, input_ids, attention_mask=None, **_):
        bsz, length = input_ids.shape
        logits = torch.zeros(bsz, length, len(self.tok))
        logits[..., self.a] += self.bias
        if self.marker is not None:
            for i in range(bsz):
                ids = input_ids[i][attention_mask[i].bool()] if attention_mask is not None else input_ids[i]
                text = self.tok.decode(ids.tolist())
                a_part = text.split("Continuation A:")[1].split("Continuation B:")[0]
                b_part = text.split("Continuation B:")[1].split("Which continuation")[0]
                if self.marker in a_part and self.marker not in b_part:
                    logits[i, :, self.a] += self.strength
                elif self.marker in b_part and self.marker not in a_part:
                    logits[i, :, self.b] += self.strength
        return SimpleNamespace(logits=logits * self.scale)


def test_combine_orders_keeps_only_preferences_both_orders_state():
    m1 = np.array([2.0, 2.0, -1.0, 0.0, -3.0, 1.0])  # left shown as A
    m2 = np.array([-1.0, 3.0, 0.5, 0.0, -0.1, 0.0])  # right shown as A
    assert combine_orders(m1, m2).tolist()[:4] == [1.0, pytest.approx(np.nan, nan_ok=True), 0.0, 0.5]
    lab = combine_orders(m1, m2)
    assert np.isnan(lab[[1, 4, 5]]).all()  # A both times, B both times, one-sided
    assert combine_orders(m1, m2, "equal")[[1, 4, 5]].tolist() == [0.5, 0.5, 0.5]
    with pytest.raises(PrefrlError, match="on_disagree"):
        combine_orders(m1, m2, "coin")


@pytest.mark.parametrize("on_disagree,expected", [("skip", None), ("equal", 0.5)])
def test_a_judge_that_always_says_A_never_states_a_preference(tok, tmp_path, on_disagree, expected):
    judge = AIJudge(LabelLM(tok, bias=4.0), tok, on_disagree=on_disagree)
    n = len(PROMPTS)
    margins_ab = judge.margins([judge.judging_prompt(p, g, b) for p, g, b in zip(PROMPTS, GOOD, BAD)])
    assert (margins_ab > 3.5).all()  # it really does say A, by a wide margin
    with PreferenceStore(tmp_path / "s") as store:
        ids = np.array(store.add_texts([p for p in PROMPTS for _ in (0, 1)], [c for g, b in zip(GOOD, BAD) for c in (g, b)]))
        pairs = ids.reshape(-1, 2)
        items = TextItems([p for p in PROMPTS for _ in (0, 1)], [c for g, b in zip(GOOD, BAD) for c in (g, b)], {})
        JudgeOracle(store, judge).ask(pairs, items[np.arange(0, 2 * n, 2)], items[np.arange(1, 2 * n, 2)])
        JudgeOracle(store, judge).ask(pairs[:, ::-1], items[np.arange(1, 2 * n, 2)], items[np.arange(0, 2 * n, 2)])
        js = store.judgments()
    assert len(js) == 2 * n and {j.label for j in js} == {expected}  # no preference, in either order
    assert {(j.source, j.annotator) for j in js} == {("ai", "ai")}
    assert judge.stats.consistent == 0 and judge.stats.first_preferred == 2 * n


def test_the_judge_follows_content_over_a_weaker_position_bias(tok):
    prompts, left, right = PROMPTS + PROMPTS, GOOD + BAD, BAD + GOOD  # the good one on each side
    judge = AIJudge(LabelLM(tok, bias=1.0, marker="great"), tok, batch_size=4)
    assert judge.label(prompts, left, right).tolist() == [1.0] * 6 + [0.0] * 6
    assert judge.stats.consistent == 12 and judge.stats.mean_bias == pytest.approx(1.0, abs=1e-4)
    other = PROMPTS[::-1] + PROMPTS[::-1]  # completions of different prompts: each shown with its own
    assert "Text B: The bar" in judge.judging_prompt(PROMPTS[0], GOOD[0], BAD[0], "The bar")
    assert judge.label(prompts, left, right, other).tolist() == [1.0] * 6 + [0.0] * 6
    strong_bias = AIJudge(LabelLM(tok, bias=5.0, marker="great"), tok)  # position outweighs content: no preference
    assert np.isnan(strong_bias.label(prompts, left, right)).all()


def test_margins_are_the_label_log_prob_difference_of_the_real_model(ckpt):
    torch.manual_seed(0)
    judge = AIJudge.load(ckpt, batch_size=3)
    assert judge.annotator == "ai:tiny-judge"
    texts = [judge.judging_prompt(p, g, b) for p, g, b in zip(PROMPTS[:5], GOOD, BAD)]
    got = judge.margins(texts)
    want = []
    with torch.no_grad():  # one unpadded sequence at a time: log p(label tokens | text)
        for t in texts:
            lp = []
            for lab in judge.label_ids:
                ids = torch.tensor([encode(judge.tokenizer, [t])[0] + lab])
                logp = torch.log_softmax(judge.model(input_ids=ids).logits[0].double(), -1)
                lp.append(sum(float(logp[len(ids[0]) - len(lab) - 1 + k, tok]) for k, tok in enumerate(lab)))
            want.append(lp[0] - lp[1])
    np.testing.assert_allclose(got, want, atol=1e-4)  # left padding and batching change nothing
    assert np.abs(got).max() > 0  # a random model is not exactly indifferent
    swapped = judge.margins([judge.judging_prompt(p, b, g) for p, g, b in zip(PROMPTS[:5], GOOD, BAD)])
    np.testing.assert_array_equal(judge.label(PROMPTS[:5], GOOD[:5], BAD[:5]), combine_orders(got, swapped))


def test_the_ai_kind_is_registered_for_the_core_without_it_importing_text(ckpt, tmp_path):
    code = ("import sys; from prefrl.core.oracles import check_oracle_name; check_oracle_name('ai:/m'); check_oracle_name('ai');"
            "assert not any(m.startswith('prefrl.text') or m == 'transformers' for m in sys.modules), 'imported text'")
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(PrefrlError, match=r"unknown oracle `aii`.*did you mean `ai`"):
        check_oracle_name("aii")
    with pytest.raises(PrefrlError, match="unknown oracle `synthetc`.*`synthetic`"):
        check_oracle_name("synthetc")
    with PreferenceStore(tmp_path / "s") as store:
        with pytest.raises(PrefrlError, match="needs a local causal-LM directory"):
            open_oracle("ai", store, np.random.default_rng(0))
        with pytest.raises(PrefrlError, match="no such model directory"):
            open_oracle(f"ai:{tmp_path / 'nope'}", store, np.random.default_rng(0))
        oracle = open_oracle(f"ai:{ckpt}", store, np.random.default_rng(0))
        assert isinstance(oracle, JudgeOracle)
        ids = np.array(store.add_texts(["The food"] * 2, [" was great.", " was awful."]))
        items = TextItems(["The food"] * 2, [" was great.", " was awful."], {})
        oracle.ask(ids.reshape(1, 2), items[[0]], items[[1]])
        got = oracle.poll()
        assert [(j.left, j.right, j.annotator) for j in got] == [(ids[0], ids[1], "ai:tiny-judge")]
        with pytest.raises(PrefrlError, match="judges text pairs"):
            oracle.ask(np.array([[1, 2]]), Clips(np.zeros((1, 2, 1)), np.zeros((1, 2, 1))), Clips(np.zeros((1, 2, 1)), np.zeros((1, 2, 1))))


def test_judge_store_adds_the_judge_beside_the_scripted_oracle_and_stats_compare_them(tok, tmp_path):
    from prefrl.human.stats import store_stats
    from prefrl.text.oracles import TextOracle

    with PreferenceStore(tmp_path / "s") as store:
        left, right = GOOD[:4] + BAD[4:], BAD[:4] + GOOD[4:]
        ids = np.array(store.add_texts([p for p in PROMPTS for _ in (0, 1)], [c for a, b in zip(left, right) for c in (a, b)]))
        oracle = TextOracle("keyword")
        store.add_judgments(ids.reshape(-1, 2), oracle.label(PROMPTS, left, right), source=oracle.source)
        judge = AIJudge(LabelLM(tok, bias=0.5, marker="great"), tok, name="ai:stub", batch_size=2)
        m = judge_store(store, judge, chunk=4)  # two chunks
        assert m["judge/judged"] == 6 and m["judge/preferences"] == 6 and m["judge/consistent"] == 1.0
        assert judge_store(store, judge)["judge/judged"] == 0  # judged before: left alone
        stats = store_stats(store)
    row = next(r for r in stats["agreement"] if {r["a"], r["b"]} == {"ai:stub", "keyword/synthetic"})
    assert row["shared"] == 6 and row["agreement"] == 1.0  # "great" is a positive keyword
    assert stats["annotators"]["ai:stub"]["judgments"] == 6


def test_text_judge_and_text_label_commands_on_the_tiny_model(ckpt, tmp_path):
    from prefrl.cli import main

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(f'{{"prompt": "{p}"}}\n' for p in PROMPTS))
    out = tmp_path / "prefs" / "train.jsonl"
    args = ["text", "label", "--policy", str(ckpt), "--prompts", str(prompts), "--out", str(out), "--limit", "4",
            "--sample.max-new-tokens", "6"]
    main(args + ["--oracle.oracle", "vader"])
    m = main(["text", "judge", str(out.parent), "--judge.model", str(ckpt), "--judge.on-disagree", "equal"])
    assert m["judge/judged"] == 4 and m["judge/ties"] + m["judge/preferences"] == 4
    with PreferenceStore(out.parent, create=False) as store:
        js = store.judgments()
    who = [j.annotator or j.source for j in js]
    assert who.count("ai:tiny-judge") == who.count("vader/synthetic") == 4
    ai_pairs = {(j.left, j.right) for j in js if j.source == "ai"}
    assert ai_pairs == {(j.left, j.right) for j in js if j.source != "ai"}  # the same pairs
    assert all(j.label is not None for j in js if j.source == "ai")  # equal, not skip, on disagreement
    m = main(args + ["--oracle.oracle", "ai", "--oracle.judge.model", str(ckpt)])  # new pairs labeled by the judge
    assert m["label/store_judgments"] == 12
    with pytest.raises(PrefrlError, match="needs `--judge.model DIR`"):
        main(args + ["--oracle.oracle", "ai"])


def test_the_labeling_engine_asks_the_ai_oracle_by_name(ckpt, tmp_path):
    from prefrl.core.engine import LabelingEngine, PrefsConfig
    from prefrl.core.ensemble import RewardEnsemble
    from prefrl.core.nets import InputSpec, RewardModelConfig
    from prefrl.core.trainer import RewardTrainConfig, RewardTrainer

    def encode_texts(prompts, completions):  # a stand-in for the reward model's tokenizer
        return {"obs": np.array([[[len(c), c.count("great")]] for c in completions], np.float32)}

    comps = GOOD + BAD
    prompts = PROMPTS + PROMPTS
    pool = TextItems(prompts, comps, encode_texts(prompts, comps))
    rng = np.random.default_rng(0)
    with PreferenceStore(tmp_path / "run") as store:
        cfg = PrefsConfig(labels=8, retrain_fraction=0.0, reward_epochs=2)
        ens = RewardEnsemble(InputSpec(obs_shape=(2,)), RewardModelConfig(hidden=(8,), use_actions=False))
        eng = LabelingEngine(store, open_oracle(f"ai:{ckpt}", store, rng), RewardTrainer(ens, RewardTrainConfig(epochs=2), rng),
                             cfg.schedule(1000), cfg, rng, encode_texts=encode_texts)
        asked = eng.ask_initial(pool)
        js = store.judgments()
    assert asked > 0 and len(js) == asked
    assert {(j.source, j.annotator) for j in js} == {("ai", "ai:tiny-judge")}
    assert all(j.label in (None, 0.0, 0.5, 1.0) for j in js)
