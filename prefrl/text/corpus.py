"""A procedurally generated review corpus for the demo task "continue a review positively".

Nothing is downloaded: reviews are assembled from templates and a small vocabulary.
A prompt opens a review and names an aspect (``"We ate at the harbor cafe on Friday.
The soup"``); a completion finishes it with a positive, negative, neutral or mixed
judgment (``" was really delicious and the staff was friendly."``). The sentiment words
are in VADER's lexicon (or deliberately absent, for neutral completions), so the VADER
oracle can tell the classes apart. The SFT model learns the mix; RLHF should move it
toward positive completions.

Example:
    >>> ex = make_corpus(4, seed=0)
    >>> len(ex), isinstance(ex[0].prompt, str)
    (4, True)
"""

from __future__ import annotations

import numpy as np

from prefrl.text.data import SFTExample

SENTIMENTS = ("positive", "negative", "neutral", "mixed")
DEFAULT_MIX = (0.35, 0.35, 0.2, 0.1)

_DOMAINS: dict[str, dict[str, list[str]]] = {
    "restaurant": {
        "openings": [
            "We ate at the harbor cafe on Friday.",
            "I had lunch at the corner bistro today.",
            "We tried the new noodle bar last night.",
            "I took my parents to the old steakhouse.",
            "We ordered from the pizza place down the street.",
        ],
        "aspects": ["soup", "pasta", "dessert", "coffee", "service", "bread", "salad", "curry", "fish", "staff"],
        "closers_pos": ["I would eat here again.", "I would recommend it.", "We loved it."],
        "closers_neg": ["I would not eat here again.", "What a waste of money.", "We hated it."],
        "closers_neu": ["We paid and went home.", "It was a normal lunch."],
    },
    "hotel": {
        "openings": [
            "I stayed at the seaside hotel last week.",
            "We booked two nights at the mountain lodge.",
            "I spent a weekend at the city hotel.",
            "We stayed at the small inn near the station.",
        ],
        "aspects": ["room", "bed", "pool", "breakfast", "lobby", "view", "shower", "staff"],
        "closers_pos": ["I would stay here again.", "I would recommend it.", "We loved it."],
        "closers_neg": ["I would not stay here again.", "What a waste of money.", "We hated it."],
        "closers_neu": ["We checked out on Sunday.", "It was a normal stay."],
    },
    "movie": {
        "openings": [
            "I watched the new space movie yesterday.",
            "We saw the detective film on Saturday.",
            "I streamed the family comedy last night.",
            "We went to the late show of the war drama.",
        ],
        "aspects": ["plot", "acting", "music", "ending", "cast", "dialogue", "soundtrack", "camera work"],
        "closers_pos": ["I would watch it again.", "I would recommend it.", "We loved it."],
        "closers_neg": ["I would not watch it again.", "What a waste of money.", "We hated it."],
        "closers_neu": ["It ran for two hours.", "It was a normal evening."],
    },
    "product": {
        "openings": [
            "I bought these headphones last month.",
            "I have used this phone for a year.",
            "We got a new coffee machine in March.",
            "I ordered this backpack online.",
        ],
        "aspects": ["battery", "screen", "sound", "case", "charger", "design", "price", "handle"],
        "closers_pos": ["I would buy it again.", "I would recommend it.", "We loved it."],
        "closers_neg": ["I would not buy it again.", "What a waste of money.", "We hated it."],
        "closers_neu": ["It came in a box.", "It was a normal purchase."],
    },
}

_POS = ["good", "great", "wonderful", "amazing", "excellent", "lovely", "perfect", "fantastic", "superb", "pleasant", "nice", "beautiful", "delicious", "friendly", "awesome"]
_NEG = ["bad", "terrible", "awful", "horrible", "disappointing", "poor", "dirty", "boring", "dull", "rude", "ugly", "weak", "broken", "useless"]
_NEU = ["plain", "standard", "normal", "typical", "simple", "small", "long", "short", "usual", "ordinary"]
_ADVS = ["", "", "very ", "really ", "so ", "quite "]


def _pick(rng: np.random.Generator, xs: list[str]) -> str:
    return xs[int(rng.integers(len(xs)))]


def make_prompt(rng: np.random.Generator) -> tuple[str, str, str]:
    """(prompt, domain, aspect): an opening sentence and ``The <aspect>``."""
    domain = _pick(rng, list(_DOMAINS))
    d = _DOMAINS[domain]
    aspect = _pick(rng, d["aspects"])
    return f"{_pick(rng, d['openings'])} The {aspect}", domain, aspect


def make_completion(rng: np.random.Generator, domain: str, aspect: str, sentiment: str) -> str:
    """One completion of the given sentiment, starting with a space."""
    d = _DOMAINS[domain]
    other = _pick(rng, [a for a in d["aspects"] if a != aspect])
    adv = _pick(rng, _ADVS)
    form = int(rng.integers(3))
    if sentiment == "positive":
        words, closers = _POS, d["closers_pos"]
    elif sentiment == "negative":
        words, closers = _NEG, d["closers_neg"]
    elif sentiment == "neutral":
        words, closers = _NEU, d["closers_neu"]
    elif sentiment == "mixed":
        good, bad = _pick(rng, _POS), _pick(rng, _NEG)
        if rng.random() < 0.5:
            return f" was {adv}{good} but the {other} was {bad}."
        return f" was {adv}{bad} but the {other} was {good}."
    else:
        raise ValueError(f"unknown sentiment `{sentiment}` (known: {', '.join(SENTIMENTS)})")
    a, b = _pick(rng, words), _pick(rng, words)
    if form == 0:
        return f" was {adv}{a}."
    if form == 1:
        return f" was {adv}{a} and the {other} was {b}."
    return f" was {adv}{a}. {_pick(rng, closers)}"


def make_corpus(
    n: int, seed: int = 0, mix: tuple[float, float, float, float] = DEFAULT_MIX
) -> list[SFTExample]:
    """n (prompt, completion) reviews; ``mix`` = fractions of positive, negative, neutral, mixed."""
    rng = np.random.default_rng(seed)
    p = np.asarray(mix, float)
    if p.shape != (4,) or (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"`mix` must be 4 non-negative fractions (positive, negative, neutral, mixed), got {mix}")
    p = p / p.sum()
    out = []
    for _ in range(n):
        prompt, domain, aspect = make_prompt(rng)
        sentiment = SENTIMENTS[int(rng.choice(4, p=p))]
        out.append(SFTExample(prompt, make_completion(rng, domain, aspect, sentiment)))
    return out


def make_prompts(n: int, seed: int = 1) -> list[str]:
    """n review openings (the prompts PPO, DPO and evaluation continue)."""
    rng = np.random.default_rng(seed)
    return [make_prompt(rng)[0] for _ in range(n)]
