"""An AI judge (RLAIF): a local causal language model compares two completions of a prompt.

The judge reads a judging prompt: a short written principle, the prompt, and both
completions labeled ``A`` and ``B``, ending in a question; it prefers the completion whose
label (`` A`` / `` B``, encoded as a continuation of that prompt) gets the higher
log-probability (Bai et al. 2022, "Constitutional AI"; Lee et al. 2023, "RLAIF"). Language
models favour a position (often the first answer), so every pair is asked in both orders:

=====================================  =============================================
both orders prefer the same completion  that preference (label 1.0 or 0.0)
the orders disagree (position bias)     a skip (NaN: stored, never trained on), or
                                        ``0.5`` (equal) with ``on_disagree="equal"``
both orders exactly indifferent         0.5 (equal)
=====================================  =============================================

A judge that always answers ``A`` therefore never states a preference: it says "left" in
one order and "right" in the other, so every pair is a skip (or a tie). Skip is the default
because a tie trains the reward model towards "equally good", which a position-biased
judge has not said.

The model is any local Hugging Face causal-LM directory (``local_files_only``; nothing is
downloaded). What it is worth depends on the model: a judge needs to follow the instruction,
which takes an instruction-tuned model of a billion parameters or more; the tiny GPT-2 made
by ``prefrl text sft`` is a mechanism check, not a judge (README: AI judge).

The labeling engine and ``prefrl train``/``open_oracle`` reach the judge as the oracle kind
``ai:/path/to/model``, registered through the ``prefrl.oracles`` entry point
(``open_judge_oracle``), so the core never imports this module.

Example:
    >>> judge = AIJudge.load("runs/judge-model")                       # doctest: +SKIP
    >>> judge.label(["The food"], [" was great."], [" was awful."])    # doctest: +SKIP
    array([1.], dtype=float32)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from prefrl.core.oracles import Oracle
from prefrl.core.store import PreferenceStore
from prefrl.core.types import PrefrlError
from prefrl.text.lm import completion_logprobs, encode, load_lm, max_positions, pad

DEFAULT_PRINCIPLE = (
    "You judge two continuations of the same text. The better continuation is positive in tone, "
    "fluent, and continues the text naturally."
)
TEMPLATE = "{principle}\n\nText: {prompt}\n\nContinuation A: {first}\n\nContinuation B: {second}\n\nWhich continuation is better, A or B?\nAnswer:"
TEMPLATE_TWO_PROMPTS = ("{principle}\n\nText A: {prompt}\nContinuation A: {first}\n\nText B: {prompt2}\nContinuation B: {second}"
                        "\n\nWhich continuation is better, A or B?\nAnswer:")
"""For a pair of completions of different prompts (the labeling engine may pair any two items of its pool)."""
LABELS = (" A", " B")
ON_DISAGREE = ("skip", "equal")


@dataclass
class JudgeStats:
    """What the judge said over the pairs of its last call (both orders asked for each pair)."""

    pairs: int = 0
    consistent: int = 0
    """Pairs where both orders preferred the same completion."""
    first_preferred: int = 0
    """Answers (two per pair) that preferred the completion shown first (as A): 0.5 x 2 x pairs is unbiased."""
    mean_bias: float = 0.0
    """Mean over pairs of (m_AB + m_BA) / 2, m = log p(A) - log p(B): > 0 favours position A."""

    def as_dict(self) -> dict[str, float]:
        n = max(self.pairs, 1)
        return {"judge/pairs": float(self.pairs), "judge/consistent": self.consistent / n,
                "judge/first_preferred": self.first_preferred / (2 * n), "judge/mean_bias": self.mean_bias}


def combine_orders(m_left_first: np.ndarray, m_right_first: np.ndarray, on_disagree: str = "skip") -> np.ndarray:
    """(P,) labels P(left preferred) from the label margins of both orders.

    Args:
        m_left_first: (P,) log p(A) - log p(B) with the left completion shown as A.
        m_right_first: (P,) the same with the right completion shown as A.
        on_disagree: what the orders' disagreement becomes: ``skip`` (NaN) or ``equal`` (0.5).

    Example:
        >>> combine_orders(np.array([2.0, 2.0, -1.0, 0.0]), np.array([-1.0, 3.0, 0.5, 0.0])).tolist()
        [1.0, nan, 0.0, 0.5]
    """
    if on_disagree not in ON_DISAGREE:
        raise PrefrlError(f"`on_disagree` must be one of {', '.join(ON_DISAGREE)}, got `{on_disagree}`")
    v1 = np.sign(np.asarray(m_left_first, np.float64))  # +1: left preferred when shown first
    v2 = -np.sign(np.asarray(m_right_first, np.float64))  # +1: left preferred when shown second
    labels = np.where(v1 > 0, 1.0, 0.0)
    labels = np.where(v1 == 0, 0.5, labels)  # both indifferent (v2 == 0 too, else it is a disagreement)
    disagree = v1 != v2
    labels[disagree] = np.nan if on_disagree == "skip" else 0.5
    return labels.astype(np.float32)


class AIJudge:
    """Compares completions with a causal LM's log-probabilities of the labels ``A`` and ``B``.

    Args:
        model: a causal LM returning ``.logits`` (B, L, V) for ``input_ids``/``attention_mask``/``position_ids``.
        tokenizer: its tokenizer (with a pad token).
        principle: the written principle the judging prompt starts with.
        on_disagree: ``skip`` or ``equal`` when the two orders disagree (module doc).
        batch_size: judging prompts per forward pass.
        name: the judge's annotator name in the store.
    """

    source = "ai"
    """``source`` of the judge's stored judgments."""

    def __init__(self, model: nn.Module, tokenizer, principle: str = DEFAULT_PRINCIPLE, on_disagree: str = "skip",
                 batch_size: int = 8, name: str = "ai"):
        if on_disagree not in ON_DISAGREE:
            raise PrefrlError(f"`on_disagree` must be one of {', '.join(ON_DISAGREE)}, got `{on_disagree}`")
        if batch_size < 1:
            raise PrefrlError(f"`batch_size` must be >= 1, got {batch_size}")
        if not principle.strip():
            raise PrefrlError("the judge's principle is empty")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.principle = principle.strip()
        self.on_disagree = on_disagree
        self.batch_size = batch_size
        self.annotator = name
        self.name = "ai"
        self.label_ids = [encode(tokenizer, [s])[0] for s in LABELS]
        if not all(self.label_ids) or self.label_ids[0] == self.label_ids[1]:
            raise PrefrlError(f"the judge's tokenizer cannot tell the labels {LABELS} apart: {self.label_ids}")
        self.max_len = max_positions(model) if hasattr(model, "config") else None
        if self.max_len is not None and self.max_len <= 16 + max(len(x) for x in self.label_ids):
            raise PrefrlError(f"the judge model reads only {self.max_len} positions: too few for a judging prompt")
        self.stats = JudgeStats()

    @classmethod
    def load(cls, path: str | Path, **kw) -> AIJudge:
        """The judge from a local Hugging Face causal-LM directory (no downloads); annotator ``ai:<dir name>``."""
        path = Path(path)
        model, tok = load_lm(path)
        kw.setdefault("name", f"ai:{path.resolve().name}")
        return cls(model, tok, **kw)

    def judging_prompt(self, prompt: str, first: str, second: str, prompt2: str | None = None) -> str:
        """The text the judge reads: principle, prompt, completion A (``first``), completion B, the question.

        ``prompt2``: the prompt of ``second`` when it differs from ``prompt`` (each answer is shown with its own).
        """
        if prompt2 is not None and prompt2.strip() != prompt.strip():
            return TEMPLATE_TWO_PROMPTS.format(principle=self.principle, prompt=prompt.strip(), first=first.strip(),
                                               prompt2=prompt2.strip(), second=second.strip())
        return TEMPLATE.format(principle=self.principle, prompt=prompt.strip(), first=first.strip(), second=second.strip())

    @torch.no_grad()
    def margins(self, texts: list[str]) -> np.ndarray:
        """(N,) log p(" A" | text) - log p(" B" | text), each label's tokens summed.

        A judging prompt longer than the model's positions keeps its last tokens (the question
        and the answers' ends), so the principle is what is cut first.
        """
        out = np.zeros(len(texts), np.float64)
        ids = encode(self.tokenizer, texts)
        longest = max(len(x) for x in self.label_ids)
        for s in range(0, len(texts), self.batch_size):
            chunk = ids[s : s + self.batch_size]
            if self.max_len is not None:
                chunk = [x[-(self.max_len - longest):] for x in chunk]
            queries = [x for x in chunk for _ in LABELS]
            responses = [lab for _ in chunk for lab in self.label_ids]
            q, qm = pad(queries, self.tokenizer.pad_token_id, left=True)
            r, rm = pad(responses, self.tokenizer.pad_token_id, left=False)
            lp = (completion_logprobs(self.model, q, qm, r, rm) * rm).sum(dim=1).double().numpy()  # (2B,)
            out[s : s + len(chunk)] = lp[0::2] - lp[1::2]
        return out

    def label(self, prompts: list[str], left: list[str], right: list[str], right_prompts: list[str] | None = None) -> np.ndarray:
        """(P,) labels P(left preferred): 1.0, 0.0, 0.5 (indifferent) or NaN (the orders disagree, as a skip).

        ``right_prompts``: the prompts of the right completions where they differ from ``prompts``.
        """
        rp = list(prompts) if right_prompts is None else list(right_prompts)
        if not (len(prompts) == len(left) == len(right) == len(rp)):
            raise PrefrlError(f"the judge got {len(prompts)} prompts, {len(left)} left and {len(right)} right completions"
                              f" and {len(rp)} right prompts")
        if not prompts:
            return np.zeros(0, np.float32)
        texts = [self.judging_prompt(p, a, b, q) for p, a, b, q in zip(prompts, left, right, rp)]
        texts += [self.judging_prompt(q, b, a, p) for p, a, b, q in zip(prompts, left, right, rp)]
        m = self.margins(texts)
        m1, m2 = m[: len(prompts)], m[len(prompts) :]
        labels = combine_orders(m1, m2, self.on_disagree)
        self.stats = JudgeStats(len(prompts), int(((np.sign(m1) == -np.sign(m2)) & (m1 != 0)).sum()),
                                int((m1 > 0).sum() + (m2 > 0).sum()), float(((m1 + m2) / 2).mean()))
        return labels

    def judge(self, prompts: list[str], left: list[str], right: list[str]) -> tuple[list, list, np.ndarray]:
        """(scores left, scores right, labels): the text-oracle interface of ``label_samples``; a judge has no scores."""
        return [None] * len(prompts), [None] * len(prompts), self.label(prompts, left, right)


class JudgeOracle(Oracle):
    """The judge as the labeling engine's oracle: answers text pairs in ``ask``, stored at once."""

    name = "ai"

    def __init__(self, store: PreferenceStore, judge: AIJudge, since_id: int = 0):
        super().__init__(store, since_id)
        self.judge = judge

    def ask(self, pairs: np.ndarray, left, right, scores: np.ndarray | None = None) -> None:
        if not hasattr(left, "completions"):
            raise PrefrlError("the `ai` oracle judges text pairs (prompt + two completions), not clips of a control task")
        labels = self.judge.label(list(left.prompts), list(left.completions), list(right.completions), list(right.prompts))
        self.store.add_judgments(np.asarray(pairs, np.int64).reshape(-1, 2), labels, source=self.judge.source,
                                 annotator=self.judge.annotator)


def open_judge_oracle(arg: str | None, store: PreferenceStore, rng: np.random.Generator, since_id: int = 0) -> JudgeOracle:
    """Entry point of the ``ai`` oracle kind (``prefrl.oracles``): ``ai:/path/to/model``."""
    if not arg:
        raise PrefrlError("the `ai` oracle needs a local causal-LM directory: `ai:/path/to/model`")
    return JudgeOracle(store, AIJudge.load(arg), since_id)


def judge_store(store: PreferenceStore, judge: AIJudge, redo: bool = False, chunk: int = 64) -> dict[str, float]:
    """Have ``judge`` label every distinct pair of text items already judged or asked in ``store``.

    Its judgments go in with ``source`` ``ai`` and the judge's annotator name, on the same item
    ids as the judgments already there, so ``prefrl prefs stats`` measures its agreement with them.
    Pairs the judge (same annotator name) has judged before are left alone unless ``redo``.

    Returns:
        counts: pairs judged, preferences, ties, skips and the judge's position statistics.
    """
    seen: dict[tuple[int, int], tuple[int, int]] = {}
    mine = set()
    for j in store.judgments():
        key = (min(j.left, j.right), max(j.left, j.right))
        if j.annotator == judge.annotator:
            mine.add(key)
        seen.setdefault(key, (j.left, j.right))
    for q in store.pending_queries():
        seen.setdefault((min(q.left, q.right), max(q.left, q.right)), (q.left, q.right))
    pairs = [lr for key, lr in seen.items() if redo or key not in mine]
    if not pairs:
        return {"judge/judged": 0.0}
    ids = sorted({i for lr in pairs for i in lr})
    texts = dict(zip(ids, store.load_texts(ids)))
    prompts = [texts[a][0] for a, _ in pairs]
    right_prompts = [texts[b][0] for _, b in pairs]
    all_labels, total = [], JudgeStats()
    for s in range(0, len(pairs), chunk):  # each chunk's judgments are committed as soon as it is judged
        part = pairs[s : s + chunk]
        labels = judge.label(prompts[s : s + chunk], [texts[a][1] for a, _ in part], [texts[b][1] for _, b in part],
                             right_prompts[s : s + chunk])
        store.add_judgments(np.array(part, np.int64), labels, source=judge.source, annotator=judge.annotator)
        all_labels.append(labels)
        st = judge.stats
        total = JudgeStats(total.pairs + st.pairs, total.consistent + st.consistent, total.first_preferred + st.first_preferred,
                           (total.mean_bias * total.pairs + st.mean_bias * st.pairs) / (total.pairs + st.pairs))
    labels = np.concatenate(all_labels)
    judge.stats = total
    return {"judge/judged": float(len(pairs)), "judge/preferences": float(np.isin(labels, (0.0, 1.0)).sum()),
            "judge/ties": float((labels == 0.5).sum()), "judge/skips": float(np.isnan(labels).sum()), **total.as_dict()}
