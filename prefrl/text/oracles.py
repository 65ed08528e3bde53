"""Oracles for text: a score per completion, labels through the core's scripted teachers.

A text oracle scores each completion (its "true reward", a one-step clip); labels come
from ``prefrl.core.oracles.ScriptedOracle.label_rewards`` on those scores as (P, 1) rewards,
so the B-Pref teachers (``synthetic``, ``stochastic``, ``mistake``, ``skip``, ``equal``,
``myopic``) add the same noise to text as to control.

Scores:

==========  ==========================================================================
``vader``   VADER compound sentiment in [-1, 1] (Hutto & Gilbert 2014; the lexicon ships
            inside the ``vaderSentiment`` package, nothing is downloaded)
``keyword`` (# positive keywords - # negative keywords) / # words, from small word lists
``length``  number of words (a classic reward-hacking target, for sanity checks)
==========  ==========================================================================

Example:
    >>> o = TextOracle("vader", teacher="synthetic", rng=np.random.default_rng(0))
    >>> o.label(["p", "p"], [" was great."] * 2, [" was awful.", " was great."]).tolist()
    [1.0, 0.5]
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable

import numpy as np

from prefrl.core.oracles import ScriptedOracle, make_oracle
from prefrl.core.types import PrefrlError

_WORD = re.compile(r"[a-z']+")
POSITIVE_WORDS = frozenset(
    "good great wonderful amazing excellent lovely perfect fantastic superb pleasant nice beautiful delicious "
    "friendly awesome loved recommend enjoyed happy".split()
)
NEGATIVE_WORDS = frozenset(
    "bad terrible awful horrible disappointing poor dirty boring dull rude ugly weak broken useless hated waste "
    "not".split()
)


def _vader() -> Callable[[str], float]:
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as e:
        raise PrefrlError(f"the `vader` oracle needs the `vaderSentiment` package ({e}); run `pip install 'prefrl[text]'`") from e
    sia = SentimentIntensityAnalyzer()
    return lambda text: float(sia.polarity_scores(text)["compound"])


def _keyword(text: str) -> float:
    words = _WORD.findall(text.lower())
    if not words:
        return 0.0
    return (sum(w in POSITIVE_WORDS for w in words) - sum(w in NEGATIVE_WORDS for w in words)) / len(words)


def _length(text: str) -> float:
    return float(len(text.split()))


_SCORERS: dict[str, Callable[[], Callable[[str], float]]] = {
    "vader": _vader,
    "keyword": lambda: _keyword,
    "length": lambda: _length,
}
TEXT_ORACLES = tuple(_SCORERS)


def make_scorer(name: str) -> Callable[[str], float]:
    """The scoring function of a text oracle (``vader``, ``keyword``, ``length``)."""
    if name not in _SCORERS:
        close = difflib.get_close_matches(name, TEXT_ORACLES, n=3)
        hint = f"; did you mean {', '.join(f'`{c}`' for c in close)}?" if close else ""
        raise PrefrlError(f"unknown text oracle `{name}` (known: {', '.join(TEXT_ORACLES)}){hint}")
    return _SCORERS[name]()


class TextOracle:
    """Scores completions and labels pairs of them with a scripted teacher's noise.

    Args:
        name: the score (``vader``, ``keyword``, ``length``).
        teacher: core oracle preset for the noise (``synthetic`` = always the higher score).
        rng: randomness of stochastic teachers and mistakes.
        on: ``completion`` scores the completion alone; ``full`` scores prompt + completion.
        **knobs: overrides of the teacher's knobs (``beta``, ``eps_mistake``, ...).
    """

    def __init__(self, name: str, teacher: str = "synthetic", rng: np.random.Generator | None = None, on: str = "completion", **knobs: float):
        if on not in ("completion", "full"):
            raise PrefrlError(f"`on` must be `completion` or `full`, got `{on}`")
        self.name = name
        self.on = on
        self.scorer = make_scorer(name)
        self.teacher: ScriptedOracle = make_oracle(teacher, rng if rng is not None else np.random.default_rng(0), **knobs)

    def score(self, prompts: list[str], completions: list[str]) -> np.ndarray:
        """(N,) float64 oracle score of each completion (the one-step true reward)."""
        texts = completions if self.on == "completion" else [p + c for p, c in zip(prompts, completions)]
        return np.array([self.scorer(t) for t in texts], dtype=np.float64)

    def label_scores(self, score_left: np.ndarray, score_right: np.ndarray) -> np.ndarray:
        """(P,) labels P(left preferred), NaN = skip, from (P,) scores via the core teacher."""
        return self.teacher.label_rewards(np.asarray(score_left)[:, None], np.asarray(score_right)[:, None])

    def label(self, prompts: list[str], left: list[str], right: list[str]) -> np.ndarray:
        """(P,) labels for completions ``left[i]`` vs ``right[i]`` of ``prompts[i]``."""
        return self.label_scores(self.score(prompts, left), self.score(prompts, right))

    @property
    def source(self) -> str:
        """``source`` of the stored judgments: score and teacher, e.g. ``vader/synthetic``."""
        return f"{self.name}/{self.teacher.name}"

    def judge(self, prompts: list[str], left: list[str], right: list[str]) -> tuple[list, list, np.ndarray]:
        """(scores of left, scores of right, labels) of the pairs: what ``label_samples`` stores
        (the interface ``prefrl.text.judge.AIJudge`` shares, with no scores)."""
        score_l, score_r = self.score(prompts, left), self.score(prompts, right)
        return score_l.tolist(), score_r.tolist(), self.label_scores(score_l, score_r)
