"""Ratings of policies from judgments: Bradley-Terry fit, bootstrap intervals, adaptive pairs.

Each judgment compares an item (a clip, a text completion) of policy i with one of policy j.
Bradley-Terry at the level of policies: P(an item of i is preferred to one of j) =
sigmoid(r_i - r_j), the core preference loss (``core.loss.bradley_terry_loss``, no label
noise) on the policies' ratings instead of clip returns. Ties (0.5) count half a win each;
skips are stored but never fit.

Fit: the maximum a-posteriori ratings under a Gaussian prior N(0, ``prior_sd``^2), found by
Newton's method (the gradient is the core loss's, the Hessian its closed form
sum p (1 - p) x x^T). The prior keeps the ratings finite when one policy wins every game
(the usual case with a perfect scripted oracle) and makes them identifiable. Ratings are
relative: they are reported on a reference, the mean of the ratings weighted by each policy's
share of the games (``reference_weights``). With an equal-weight mean, a policy that was played
rarely (an adaptive scheme's far-off policy) would pass its large uncertainty into every other
policy's interval, though their differences are well measured; weighted, it barely moves the
reference and only its own interval is wide. In simulation (``bench_rate.py --simulate``, true
ratings 0, 0.7, 3; 120 adaptive comparisons) this took the seeds whose intervals all came apart
from 18 to 37 of 40 at the same coverage.

Intervals: a parametric bootstrap. Each replicate redraws the outcome of every judged pair
from the fitted probabilities and refits; the interval is the estimate plus the central
``ci`` quantiles of the replicates' deviations from their mean. (A resampling bootstrap
reports zero width for a pair that one side has always won so far, after a single game;
redrawn outcomes do not.)

Display: Elo points, ``1000 + r x 400 / ln 10`` (400 points = 10:1 odds).

Separation: two policies are told apart when their intervals are disjoint and the interval of
their difference (its own bootstrap quantiles) excludes 0. The second test matters because the
ratings are relative: a policy with many games dominates the reference, so part of its
uncertainty is absorbed into it, and its own interval alone can look clearer than the difference.

Pair choice: ``uniform`` plays every pair of policies equally often (round-robin, shuffled);
``adaptive`` plays the least-played pair while any pair has fewer than max(``warmup``,
sqrt(N / pairs)) of the N games so far, and otherwise the pair whose order is least certain (the
larger of their intervals' overlap and the reach of their difference's interval across 0), ties
broken by fewer games between them. The growing floor keeps a policy that looked extreme early
from being left with a handful of games: the intervals are conditional on the pairs played, and
an adaptive design that stops playing a policy leaves its early luck in place. How well the
intervals cover simulated true ratings under each scheme: ``python scripts/bench_rate.py
--simulate`` (figures in the README, "Rating policies").

The rating loop (``run_rating``) asks an ``Oracle`` through the preference store, so a
scripted teacher answers at once and people answer in ``prefrl label``; every judgment is in
the store the moment it is made, and which stored item belongs to which policy is kept in
the store's meta table (``rating_pools``), so a rerun on the same store resumes.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from prefrl.core.loss import bradley_terry_loss, preference_probability
from prefrl.core.oracles import Oracle, check_oracle_name, open_oracle
from prefrl.core.rundir import Meta, write_json_atomic
from prefrl.core.store import PreferenceStore
from prefrl.core.types import PrefrlError

ELO_PER_UNIT = 400.0 / math.log(10.0)
ELO_BASE = 1000.0
POOLS_META = "rating_pools"
"""Store meta key: ``{policy key: [item ids]}``, the items each policy produced."""


@dataclass(frozen=True)
class RatingConfig:
    """How ratings are fit and pairs chosen."""

    bootstrap: int = 300
    """Bootstrap replicates for the intervals."""
    ci: float = 0.9
    """Coverage of the intervals."""
    prior_sd: float = 2.0
    """Standard deviation of the Gaussian prior on each rating (natural units; 1 = 174 Elo)."""
    warmup: int = 2
    """Adaptive scheme: games of every pair of policies before pairs are chosen by uncertainty."""

    def __post_init__(self) -> None:
        if self.bootstrap < 20:
            raise PrefrlError(f"`bootstrap` must be >= 20, got {self.bootstrap}")
        if not 0.5 <= self.ci < 1:
            raise PrefrlError(f"`ci` must be in [0.5, 1), got {self.ci}")
        if not self.prior_sd > 0:
            raise PrefrlError(f"`prior_sd` must be > 0, got {self.prior_sd}")
        if self.warmup < 1:
            raise PrefrlError(f"`warmup` must be >= 1, got {self.warmup}")


# ---- fitting ----------------------------------------------------------------------------------
def fit_ratings(
    left: np.ndarray, right: np.ndarray, labels: np.ndarray, n_policies: int, prior_sd: float = 2.0,
    iters: int = 50, tol: float = 1e-7,
) -> np.ndarray:
    """MAP Bradley-Terry ratings of ``n_policies`` policies, one fit per row of ``labels``.

    Args:
        left, right: (C,) policy index of the left and right item of each judgment.
        labels: (C,) or (B, C) P(left preferred), no NaN (B independent fits share the pairs).
        n_policies: K.
        prior_sd: Gaussian prior on each rating.

    Returns:
        (K,) or (B, K) ratings, centred on their mean (``rate`` moves them to its reference).
    """
    left = torch.as_tensor(np.asarray(left, np.int64))
    right = torch.as_tensor(np.asarray(right, np.int64))
    y = torch.as_tensor(np.asarray(labels, np.float64))
    single = y.dim() == 1
    y = y.reshape(1, -1) if single else y
    b, c = y.shape
    if len(left) != c or len(right) != c:
        raise PrefrlError(f"fit_ratings: {len(left)} left and {len(right)} right indices for {c} labels")
    if torch.isnan(y).any():
        raise PrefrlError("fit_ratings: labels must not be NaN (drop the skips first)")
    k = n_policies
    x = torch.zeros(b, k, dtype=torch.float64)
    if c == 0:
        return x[0].numpy() if single else x.numpy()
    d = torch.zeros(c, k, dtype=torch.float64)
    d[torch.arange(c), left] += 1.0
    d[torch.arange(c), right] -= 1.0
    prec = 1.0 / prior_sd**2
    eye = torch.eye(k, dtype=torch.float64) * prec
    flat_y = y.reshape(-1)
    for _ in range(iters):
        xr = x.detach().requires_grad_(True)
        # The core loss is a mean over all B x C judgments: x (B x C) makes it the sum, and the
        # replicates' parameters are disjoint, so one backward gives every replicate's gradient.
        nll = bradley_terry_loss(xr[:, left].reshape(-1), xr[:, right].reshape(-1), flat_y) * (b * c)
        loss = nll + 0.5 * prec * (xr**2).sum()
        (g,) = torch.autograd.grad(loss, xr)
        with torch.no_grad():
            p = preference_probability(x[:, left], x[:, right])
            w = p * (1.0 - p)  # (B, C): d^2 CE / d diff^2, for any soft label
            h = torch.einsum("ck,bc,cm->bkm", d, w, d) + eye
            step = torch.linalg.solve(h, g.unsqueeze(-1)).squeeze(-1)
            x = x - step
        if float(step.abs().max()) < tol:
            break
    x = x - x.mean(dim=1, keepdim=True)
    return x[0].numpy() if single else x.numpy()


@dataclass
class Ratings:
    """Fitted ratings of K policies.

    Attributes:
        names: (K,) display names.
        rating: (K,) ratings, natural units, on the games-weighted reference (``elo`` for display).
        low, high: (K,) the interval's ends, natural units.
        games: (K,) judged (non-skip) comparisons each policy took part in.
        wins: (K,) wins (ties count half).
        pair_games: (K, K) judged comparisons between each pair.
        samples: (B, K) bootstrap replicates (on the same reference).
        ci: the intervals' coverage.
        skipped: skipped judgments (not fit).
    """

    names: list[str]
    rating: np.ndarray
    low: np.ndarray
    high: np.ndarray
    games: np.ndarray
    wins: np.ndarray
    pair_games: np.ndarray
    samples: np.ndarray
    ci: float
    skipped: int = 0
    extra: dict[str, list] = field(default_factory=dict)
    """Further per-policy columns for the table (e.g. mean true return of its items)."""

    @property
    def comparisons(self) -> int:
        return int(self.pair_games.sum() // 2)

    @staticmethod
    def elo(r: np.ndarray | float) -> np.ndarray:
        return ELO_BASE + np.asarray(r, np.float64) * ELO_PER_UNIT

    def order(self) -> list[int]:
        """Policy indices, best first."""
        return [int(i) for i in np.argsort(-self.rating, kind="stable")]

    def overlap(self, i: int, j: int) -> float:
        """Length of the intersection of the intervals of i and j (negative: the gap between them)."""
        return float(min(self.high[i], self.high[j]) - max(self.low[i], self.low[j]))

    def diff_interval(self, i: int, j: int) -> tuple[float, float]:
        """The interval of r_i - r_j (its own bootstrap quantiles: the ratings' errors are correlated)."""
        d = self.samples[:, i] - self.samples[:, j]
        a = (1.0 - self.ci) / 2
        dev = np.quantile(d - d.mean(), [a, 1 - a]) if len(d) else np.zeros(2)
        base = float(self.rating[i] - self.rating[j])
        return base + float(dev[0]), base + float(dev[1])

    def uncertainty(self, i: int, j: int) -> float:
        """How unsure the order of i and j is: > 0 when their intervals overlap or the interval of their
        difference holds 0 (the larger of the two reaches), < 0 when both are clear of each other."""
        lo, hi = self.diff_interval(i, j)
        return max(self.overlap(i, j), min(hi, -lo))

    def separated(self) -> bool:
        """Every two policies' intervals are disjoint, and so is each difference's interval from 0."""
        k = len(self.names)
        return k > 1 and all(self.uncertainty(i, j) < 0 for i, j in itertools.combinations(range(k), 2))

    def rows(self) -> list[dict]:
        """One dict per policy, best first (ratings in Elo points)."""
        out = []
        for rank, i in enumerate(self.order(), 1):
            row = {"rank": rank, "policy": self.names[i], "rating": round(float(self.elo(self.rating[i])), 1),
                   "ci_low": round(float(self.elo(self.low[i])), 1), "ci_high": round(float(self.elo(self.high[i])), 1),
                   "games": int(self.games[i]), "wins": float(self.wins[i])}
            for k, v in self.extra.items():
                row[k] = v[i]
            out.append(row)
        return out

    def to_json(self) -> dict:
        return {"scale": f"Elo ({ELO_BASE:g} + {ELO_PER_UNIT:.1f} x Bradley-Terry rating; 400 points = 10:1 odds)",
                "ci": self.ci, "comparisons": self.comparisons, "skipped": self.skipped,
                "separated": self.separated(), "policies": self.rows(),
                "pair_games": {f"{self.names[i]} vs {self.names[j]}": int(self.pair_games[i, j])
                               for i, j in itertools.combinations(range(len(self.names)), 2)}}

    def markdown(self) -> str:
        pct = f"{round(self.ci * 100):d}%"
        extra = list(self.extra)
        head = ["rank", "policy", "rating (Elo)", f"{pct} interval", "games", "wins", *extra]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows():
            cells = [str(r["rank"]), r["policy"], f"{r['rating']:.0f}", f"{r['ci_low']:.0f} – {r['ci_high']:.0f}",
                     str(r["games"]), f"{r['wins']:g}", *(_cell(r[k]) for k in extra)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(f"{self.comparisons} comparisons ({self.skipped} skipped); intervals "
                     f"{'do not overlap' if self.separated() else 'overlap, or a difference interval holds 0'}.")
        return "\n".join(lines) + "\n"


def _cell(v: object) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.3g}"
    return "" if v is None else str(v)


def reference_weights(games: np.ndarray) -> np.ndarray:
    """Weights of the mean the ratings are centred on: each policy's share of the games (equal shares
    before any game). A policy played rarely then barely moves the reference, so its uncertainty does
    not widen every other policy's interval."""
    games = np.asarray(games, np.float64)
    return games / games.sum() if games.sum() > 0 else np.full(len(games), 1.0 / len(games))


def rate(
    left: np.ndarray, right: np.ndarray, labels: np.ndarray, names: Sequence[str], cfg: RatingConfig = RatingConfig(),
    rng: np.random.Generator | None = None,
) -> Ratings:
    """Ratings with bootstrap intervals from judgments between policies.

    Args:
        left, right: (C,) policy index of each judgment's left and right item.
        labels: (C,) P(left preferred), NaN = skip.
        names: (K,) policy names.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    k = len(names)
    left, right = np.asarray(left, np.int64), np.asarray(right, np.int64)
    labels = np.asarray(labels, np.float64)
    keep = ~np.isnan(labels)
    skipped = int((~keep).sum())
    left, right, labels = left[keep], right[keep], labels[keep]
    if len(left) and (left.min() < 0 or max(left.max(), right.max()) >= k or (left == right).any()):
        raise PrefrlError(f"rate: judgments must compare two different policies among {k}")
    r = fit_ratings(left, right, labels, k, cfg.prior_sd)
    if len(left):
        p = 1.0 / (1.0 + np.exp(-(r[left] - r[right])))  # fitted P(left preferred)
        sims = (rng.random((cfg.bootstrap, len(left))) < p).astype(np.float64)
        samples = fit_ratings(left, right, sims, k, cfg.prior_sd)
    else:
        samples = np.zeros((cfg.bootstrap, k))
    pair = np.zeros((k, k), np.int64)
    np.add.at(pair, (left, right), 1)
    pair = pair + pair.T
    w = reference_weights(pair.sum(axis=1))
    r = r - r @ w
    samples = samples - (samples @ w)[:, None]
    dev = samples - samples.mean(axis=0)
    a = (1.0 - cfg.ci) / 2
    low, high = r + np.quantile(dev, a, axis=0), r + np.quantile(dev, 1 - a, axis=0)
    wins = np.zeros(k)
    np.add.at(wins, left, labels)
    np.add.at(wins, right, 1.0 - labels)
    return Ratings(list(names), r, low, high, pair.sum(axis=1), wins, pair, samples, cfg.ci, skipped)


# ---- choosing pairs ------------------------------------------------------------------------------
def round_robin_pair(pair_games: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """A pair of policies among those with the fewest games between them (random among ties)."""
    k = len(pair_games)
    pairs = list(itertools.combinations(range(k), 2))
    counts = np.array([pair_games[i, j] for i, j in pairs])
    cands = np.flatnonzero(counts == counts.min())
    return pairs[int(rng.choice(cands))]


def most_uncertain_pair(ratings: Ratings, rng: np.random.Generator) -> tuple[int, int]:
    """The pair of policies whose order is least certain (``Ratings.uncertainty``: overlapping intervals,
    or a difference interval across 0); fewest games between them breaks ties."""
    k = len(ratings.names)
    pairs = list(itertools.combinations(range(k), 2))
    score = np.array([ratings.uncertainty(i, j) for i, j in pairs])
    games = np.array([ratings.pair_games[i, j] for i, j in pairs])
    best = np.flatnonzero(np.isclose(score, score.max(), rtol=0, atol=1e-9))
    best = best[games[best] == games[best].min()]
    return pairs[int(rng.choice(best))]


SCHEMES = ("uniform", "adaptive")


def next_pair(scheme: str, ratings: Ratings, warmup: int, rng: np.random.Generator) -> tuple[int, int]:
    """The next pair of policies to compare under ``scheme`` (``uniform`` or ``adaptive``)."""
    if scheme not in SCHEMES:
        raise PrefrlError(f"unknown pair scheme `{scheme}` (known: {', '.join(SCHEMES)})")
    k = len(ratings.names)
    pairs = list(itertools.combinations(range(k), 2))
    least = min(ratings.pair_games[i, j] for i, j in pairs)
    floor = max(warmup, math.sqrt(ratings.pair_games.sum() / 2 / len(pairs)))  # no pair is left behind
    if scheme == "uniform" or least < floor:
        return round_robin_pair(ratings.pair_games, rng)
    return most_uncertain_pair(ratings, rng)


# ---- the loop over a store ---------------------------------------------------------------------
def stored_pools(store: PreferenceStore) -> dict[str, list[int]]:
    """``{policy key: item ids}`` recorded in the store by earlier rating runs."""
    pools = store.get_meta(POOLS_META, {}) or {}
    if not isinstance(pools, dict) or not all(isinstance(v, list) for v in pools.values()):
        raise PrefrlError(f"{store.path}: meta `{POOLS_META}` is not a mapping of policy to item ids: the store is damaged")
    return {str(k): [int(i) for i in v] for k, v in pools.items()}


def record_pool(store: PreferenceStore, key: str, ids: list[int]) -> None:
    """Record that the store items ``ids`` were produced by the policy ``key``."""
    pools = stored_pools(store)
    pools[key] = [int(i) for i in ids]
    store.set_meta(POOLS_META, pools)


@dataclass
class RatingPlan:
    """What ``run_rating`` compares.

    Attributes:
        keys: (K,) policy keys (as recorded in the store's pools).
        names: (K,) display names.
        pools: (K,) store item ids of each policy.
        aligned: item s of every pool answers the same prompt: pairs compare the same s (text).
        load: store ids -> items with ``true_rew`` where known (what an oracle's ``ask`` reads).
    """

    keys: list[str]
    names: list[str]
    pools: list[list[int]]
    aligned: bool
    load: Callable[[list[int]], object]

    def __post_init__(self) -> None:
        if len(self.keys) < 2:
            raise PrefrlError(f"rating needs at least 2 policies, got {len(self.keys)}")
        if any(len(p) == 0 for p in self.pools):
            raise PrefrlError("rating: every policy needs at least one item")
        if self.aligned and len({len(p) for p in self.pools}) != 1:
            raise PrefrlError("rating: aligned pools (one item per shared prompt) must have the same length")


def judgments_between(store: PreferenceStore, plan: RatingPlan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(left policy, right policy, label) of every stored judgment between two of the plan's policies."""
    owner = {item: k for k, pool in enumerate(plan.pools) for item in pool}
    rows = [(owner[j.left], owner[j.right], np.nan if j.label is None else j.label)
            for j in store.judgments() if j.left in owner and j.right in owner and owner[j.left] != owner[j.right]]
    arr = np.array(rows, np.float64).reshape(-1, 3)
    return arr[:, 0].astype(np.int64), arr[:, 1].astype(np.int64), arr[:, 2]


def _pick_items(plan: RatingPlan, i: int, j: int, asked: set[tuple[int, int]], rng: np.random.Generator) -> tuple[int, int]:
    """An item of policy i and one of policy j, in random sides, not asked before when possible."""
    pi, pj = plan.pools[i], plan.pools[j]
    for _ in range(50):
        if plan.aligned:
            s = int(rng.integers(len(pi)))
            a, b = pi[s], pj[s]
        else:
            a, b = pi[int(rng.integers(len(pi)))], pj[int(rng.integers(len(pj)))]
        if (a, b) not in asked and (b, a) not in asked:
            break
    return (a, b) if rng.random() < 0.5 else (b, a)


def run_rating(
    store: PreferenceStore,
    oracle: Oracle,
    plan: RatingPlan,
    comparisons: int,
    scheme: str = "adaptive",
    cfg: RatingConfig = RatingConfig(),
    rng: np.random.Generator | None = None,
    batch: int = 1,
    stop_when_separated: bool = False,
    poll_s: float = 0.5,
    on_progress: Callable[[Ratings, int], None] | None = None,
) -> Ratings:
    """Ask for judgments between the plan's policies until ``comparisons`` are stored, then fit.

    Judgments already in the store (an earlier run on it) count toward ``comparisons``; pairs
    still outstanding (queued for people) are waited for, never asked twice. A scripted oracle
    answers inside ``ask``; for people this blocks, polling the store, while they judge in
    ``prefrl label`` (Ctrl-C keeps every judgment).

    Args:
        comparisons: total judgments between these policies to reach (skips included).
        scheme: ``adaptive`` or ``uniform`` (see the module doc).
        batch: pairs asked at once (people: the queue the viewer sees).
        stop_when_separated: stop as soon as every two policies are told apart (``Ratings.separated``).
        on_progress: called with the current ratings and the judgments so far after each refit.
    """
    if scheme not in SCHEMES:
        raise PrefrlError(f"unknown pair scheme `{scheme}` (known: {', '.join(SCHEMES)})")
    if comparisons < 1 or batch < 1:
        raise PrefrlError(f"`comparisons` and `batch` must be >= 1, got {comparisons} and {batch}")
    rng = rng if rng is not None else np.random.default_rng(0)
    oracle.poll()  # judgments made before this run are read from the store below, not polled

    def fit() -> tuple[Ratings, int]:
        left, right, labels = judgments_between(store, plan)
        return rate(left, right, labels, plan.names, cfg, rng), len(labels)

    ratings, n = fit()
    asked = store.asked_pairs()
    while True:
        if stop_when_separated and ratings.separated():
            break
        waiting = oracle.outstanding()
        # Counted after `waiting`: a pair judged in between counts twice (asks less now, the rest next
        # round), never not at all (a person judging while this runs never pushes it past `comparisons`).
        judged = len(judgments_between(store, plan)[2])
        todo = min(batch - waiting, comparisons - judged - waiting)
        if todo <= 0 and waiting == 0:
            break
        if todo > 0:
            pairs, games = [], ratings.pair_games.copy()
            for _ in range(todo):
                i, j = next_pair(scheme, _with_games(ratings, games), cfg.warmup, rng)
                games[i, j] += 1
                games[j, i] += 1
                a, b = _pick_items(plan, i, j, asked, rng)
                asked.add((a, b))
                pairs.append((a, b))
            arr = np.array(pairs, np.int64)
            oracle.ask(arr, plan.load(arr[:, 0].tolist()), plan.load(arr[:, 1].tolist()))
        if oracle.outstanding():
            time.sleep(poll_s)
            if not oracle.poll():
                continue
        else:
            oracle.poll()
        ratings, n = fit()
        if on_progress is not None:
            on_progress(ratings, n)
    if n != len(judgments_between(store, plan)[2]):  # judged by people after the last fit
        ratings, n = fit()
    return ratings


def _with_games(r: Ratings, games: np.ndarray) -> Ratings:
    """``r`` with pair counts that include pairs chosen but not judged yet (a batch)."""
    return Ratings(r.names, r.rating, r.low, r.high, games.sum(axis=1), r.wins, games, r.samples, r.ci, r.skipped, r.extra)


@dataclass(kw_only=True)
class RatingFlags:
    """The flags every rating command shares (`prefrl rate`, `prefrl text rate`)."""

    human: bool = False
    """People judge instead: pairs are queued in OUT for `prefrl label --run-dir OUT`; this waits for them."""
    adaptive: bool = False
    """Ask next about the pair of policies whose order is least certain (default: every pair equally often)."""
    comparisons: int = 150
    """Judgments to reach in OUT (those already there count)."""
    stop_when_separated: bool = False
    """Stop before --comparisons once every two policies are told apart (this looks after every judgment,
    so the first separation is optimistic; a fixed --comparisons budget is the honest figure)."""
    batch: int | None = None
    """Pairs asked at once (default: 1 for a scripted teacher, 6 for people)."""
    bootstrap: int = 300
    """Bootstrap replicates for the intervals."""
    ci: float = 0.9
    """Coverage of the intervals."""

    def rating_config(self) -> RatingConfig:
        return RatingConfig(bootstrap=self.bootstrap, ci=self.ci)

    def check_flags(self, teacher: str | None, flag: str = "--oracle") -> None:
        """Refuse bad shared flags by name before anything runs (``teacher``: the scripted teacher asked for)."""
        if self.human and teacher is not None:
            raise PrefrlError(f"give `{flag} NAME` (a scripted teacher) or `--human` (people), not both")
        if teacher is not None:
            check_oracle_name(teacher)
            if teacher == "human":
                raise PrefrlError(f"people judge with `--human`, not `{flag} human`")
        for name, v in (("comparisons", self.comparisons), ("bootstrap", self.bootstrap)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise PrefrlError(f"`--{name}` must be an integer >= 1, got {v!r}")
        if self.batch is not None and self.batch < 1:
            raise PrefrlError(f"`--batch` must be >= 1, got {self.batch}")
        self.rating_config()

    def rate_in_store(self, store: PreferenceStore, plan: RatingPlan, teacher: str | None, rng: np.random.Generator,
                      returns: np.ndarray) -> tuple[Ratings, str]:
        """The command's loop on its store: the viewer's meta keys, the oracle (calibrated on the items'
        ``returns``), ``run_rating`` with progress lines, the store marked finished. Returns (ratings, oracle name)."""
        store.set_meta(Meta.LABEL_BUDGET.value, self.comparisons)
        store.set_meta(Meta.STATUS.value, "running")
        oracle = open_oracle("human" if self.human else teacher or "synthetic", store, rng)
        if np.isfinite(returns).any():
            oracle.calibrate(returns[np.isfinite(returns)])
        scheme = "adaptive" if self.adaptive else "uniform"
        print(f"rating {len(plan.keys)} policies from up to {self.comparisons} comparisons "
              f"({scheme} pairs, oracle {oracle.name}) -> {store.root}")
        if self.human:
            print(f"judge the pairs with: prefrl label --run-dir {store.root}")
        ratings = run_rating(store, oracle, plan, self.comparisons, scheme, self.rating_config(), rng,
                             batch=self.batch or (6 if self.human else 1), stop_when_separated=self.stop_when_separated,
                             on_progress=print_progress)
        store.set_meta(Meta.STATUS.value, "finished")
        store.cancel_pending()
        return ratings, oracle.name


def display_names(paths: Sequence[str | Path]) -> list[str]:
    """Short unique names: each path's last part, with parent parts added until the names differ."""
    parts = [Path(p).resolve().parts for p in paths]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]


def print_progress(ratings: Ratings, n: int, every: int = 25) -> None:
    """A console line with the current ratings every ``every`` judgments (a ``run_rating`` callback)."""
    if n % every == 0:
        best = ", ".join(f"{ratings.names[i]} {ratings.elo(ratings.rating[i]):.0f}" for i in ratings.order())
        print(f"  {n} comparisons: {best}{' (separated)' if ratings.separated() else ''}", flush=True)


def write_ratings(out: str | Path, ratings: Ratings, info: dict | None = None) -> tuple[Path, Path]:
    """``out/ratings.md`` and ``out/ratings.json`` (written atomically); returns their paths."""
    out = Path(out)
    md = out / "ratings.md"
    tmp = md.with_name(f".{md.name}.tmp")
    tmp.write_text(ratings.markdown())
    tmp.replace(md)
    js = write_json_atomic(out / "ratings.json", {**ratings.to_json(), **(info or {})})
    return md, js
