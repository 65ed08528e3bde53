"""Query selection: which pairs of clips to ask the oracle about.

- ``random``: uniform pairs of distinct clips.
- ``disagreement``: draw a candidate pool ``pool_factor`` times larger than the number
  of queries, score each pair by the variance across ensemble members of
  P(left preferred), keep the top ones (Christiano et al. 2017, section 2.2.4).
- ``entropy``: the same candidate pool, scored by the entropy of the predicted preference
  P(left preferred), averaged over members (PEBBLE, Lee et al. 2021: entropy sampling, the
  pairs nearest the model's decision boundary). Works with a single model too.
- ``novelty``: the clips least like those already asked about, each against a random partner
  of the pool. A clip's novelty is the largest, over its steps, distance from the step's
  embedding (``RewardEnsemble.embed_steps``: a CNN's convolution features, an MLP's standardised
  inputs) to the nearest embedding of a sample of asked clips' steps; clips are taken farthest
  first, each one joining the asked set before the next is chosen (greedy k-center, as in the
  k-center sampling of B-Pref, Lee et al. 2021, but per step: one rare event, a point won at
  Pong, makes a clip novel). Meant for what the ensemble has no opinion on yet, which
  disagreement cannot find; on Pong it changed what was labeled and the agent learned to score
  (README, "Pong at 500k"), though replayed on one fixed pool it did not single out won points.
"""

from __future__ import annotations

import numpy as np
import torch

from prefrl.core.ensemble import ArrayBatch, RewardEnsemble
from prefrl.core.types import PrefrlError

SELECTORS = ("random", "disagreement", "entropy", "novelty")


def random_pairs(n_clips: int, n_pairs: int, rng: np.random.Generator, exclude: set[tuple[int, int]] | None = None) -> np.ndarray:
    """(n_pairs, 2) int64 pairs of distinct clip indices, avoiding ``exclude`` where possible."""
    if n_clips < 2:
        raise PrefrlError(f"need at least 2 clips to form a pair, have {n_clips}")
    exclude = exclude or set()
    out: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    for _ in range(20):  # a few rounds of rejection sampling
        need = n_pairs - len(out)
        if need <= 0:
            break
        a = rng.integers(0, n_clips, 2 * need)
        b = rng.integers(0, n_clips - 1, 2 * need)
        b = b + (b >= a)  # distinct from a
        for i, j in zip(a.tolist(), b.tolist()):
            key = (min(i, j), max(i, j))
            if key in exclude or key in seen:
                continue
            seen.add(key)
            out.append((i, j))
            if len(out) == n_pairs:
                break
    return np.array(out, dtype=np.int64).reshape(-1, 2)


def preference_probs(ensemble: RewardEnsemble, inputs: ArrayBatch, pairs: np.ndarray,
                     returns: np.ndarray | None = None) -> np.ndarray:
    """(P, M) each member's Bradley-Terry P(left preferred) for each pair (raw, unnormalised returns).

    ``returns``: the (N, M) raw clip returns of all N clips when already known (the engine caches
    them between refits); otherwise the clips in ``pairs`` are scored here.
    """
    if returns is not None:
        rl, rr = returns[pairs[:, 0]], returns[pairs[:, 1]]
    else:
        used = np.unique(pairs)
        pos = np.full(int(used.max()) + 1, -1)
        pos[used] = np.arange(len(used))
        rets = ensemble.predict_clip_returns({k: v[used] for k, v in inputs.items()}, normalised=False)  # (U, M)
        rl, rr = rets[pos[pairs[:, 0]]], rets[pos[pairs[:, 1]]]  # (P, M)
    return torch.sigmoid(torch.as_tensor(rl - rr)).numpy()


def disagreement(ensemble: RewardEnsemble, inputs: ArrayBatch, pairs: np.ndarray,
                 returns: np.ndarray | None = None) -> np.ndarray:
    """(P,) variance across members of P(left preferred) for each pair."""
    p = preference_probs(ensemble, inputs, pairs, returns)
    if p.shape[1] < 2:
        return np.zeros(len(pairs))
    return p.var(axis=1)


def preference_entropy(ensemble: RewardEnsemble, inputs: ArrayBatch, pairs: np.ndarray,
                       returns: np.ndarray | None = None) -> np.ndarray:
    """(P,) entropy (nats, at most log 2) of each member's P(left preferred), averaged over members (PEBBLE)."""
    p = np.clip(preference_probs(ensemble, inputs, pairs, returns).astype(np.float64), 1e-12, 1 - 1e-12)
    return (-(p * np.log(p) + (1 - p) * np.log1p(-p))).mean(axis=1)


SCORERS = {"disagreement": disagreement, "entropy": preference_entropy}


def nearest_distance(query: torch.Tensor, ref: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """(Q,) Euclidean distance from each row of ``query`` (Q, D) to its nearest row of ``ref`` (R, D);
    ``chunk`` query rows per distance matrix (memory: chunk x R floats). Infinite when ``ref`` is empty."""
    if len(ref) == 0:
        return torch.full((len(query),), float("inf"))
    return torch.cat([torch.cdist(query[s : s + chunk], ref).min(dim=1).values for s in range(0, len(query), chunk)])


def novelty_pairs(pool_emb: np.ndarray, bank_emb: np.ndarray, n_pairs: int, rng: np.random.Generator,
                  exclude: set[tuple[int, int]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (most novel clip, random partner), most novel first (see the module docstring).

    Args:
        pool_emb: (N, T, F) step embeddings of the pool's clips.
        bank_emb: (B, F) step embeddings of asked clips (B may be 0: every clip is then equally new).
        n_pairs: pairs wanted; at most one per pool clip as the novel side (the rest: random pairs).
        rng: draws the partners.
        exclude: unordered pairs (i, j), i < j, already asked.

    Returns:
        pairs (n, 2) int64, left the novel clip, and its novelty (n,) float (the distance).
    """
    n, t = pool_emb.shape[:2]
    if n < 2:
        raise PrefrlError(f"need at least 2 clips to form a pair, have {n}")
    steps = torch.as_tensor(pool_emb, dtype=torch.float32).reshape(n * t, -1)
    bank = torch.as_tensor(bank_emb, dtype=torch.float32).reshape(len(bank_emb), steps.shape[1] if len(bank_emb) else 0)
    dist = nearest_distance(steps, bank).reshape(n, t)
    taken = np.zeros(n, bool)
    seen = set(exclude or ())
    pairs: list[tuple[int, int]] = []
    scores: list[float] = []
    for _ in range(min(n_pairs, n)):
        nov = dist.max(dim=1).values.numpy().astype(np.float64)
        nov[taken] = -np.inf
        c = int(np.argmax(nov))
        taken[c] = True
        partners = [j for j in rng.permutation(n).tolist() if j != c and (min(c, j), max(c, j)) not in seen]
        if partners:
            seen.add((min(c, partners[0]), max(c, partners[0])))
            pairs.append((c, partners[0]))
            scores.append(float(nov[c]))
        # the chosen clip counts as asked: its steps join the bank for the next choice
        dist = torch.minimum(dist, nearest_distance(steps, steps[c * t : (c + 1) * t]).reshape(n, t))
    rest = n_pairs - len(pairs)
    if rest > 0:
        more = random_pairs(n, rest, rng, seen)
        pairs += [tuple(p) for p in more.tolist()]
        scores += [0.0] * len(more)
    return np.array(pairs, dtype=np.int64).reshape(-1, 2), np.array(scores, dtype=np.float64)


def select_pairs(
    method: str,
    n_pairs: int,
    inputs: ArrayBatch,
    rng: np.random.Generator,
    ensemble: RewardEnsemble | None = None,
    pool_factor: int = 10,
    exclude: set[tuple[int, int]] | None = None,
    returns: np.ndarray | None = None,
    embeddings: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Choose pairs to label.

    Args:
        method: ``random``, ``disagreement`` or ``entropy``.
        n_pairs: number of queries wanted.
        inputs: clip arrays (leading N) the ensemble reads.
        rng: randomness source.
        ensemble: needed for ``disagreement`` (2+ members) and ``entropy`` (any); without it, random pairs.
        pool_factor: candidate pool size as a multiple of ``n_pairs``.
        exclude: unordered pairs (i, j), i < j, already asked.
        returns: (N, M) raw clip returns of the current ensemble when known (cached), so
            the clips are not scored again.
        embeddings: for ``novelty``, the (N, T, F) step embeddings of the pool and the (B, F) ones of
            asked clips (``LabelingEngine`` keeps them); without them, novelty is refused.

    Returns:
        pairs (n, 2) int64 and their scores (n,) float, best first.
    """
    if method not in SELECTORS:
        raise PrefrlError(f"unknown query selection `{method}` (known: {', '.join(SELECTORS)})")
    n_clips = len(next(iter(inputs.values())))
    if method == "novelty":
        if embeddings is None:
            raise PrefrlError("query selection `novelty` needs the step embeddings of the pool and of asked clips")
        return novelty_pairs(embeddings[0], embeddings[1], n_pairs, rng, exclude)
    if method == "random" or ensemble is None or (method == "disagreement" and ensemble.n_members < 2):
        pairs = random_pairs(n_clips, n_pairs, rng, exclude)
        return pairs, np.zeros(len(pairs))
    pool = random_pairs(n_clips, n_pairs * pool_factor, rng, exclude)
    if len(pool) == 0:
        return pool, np.zeros(0)
    scores = SCORERS[method](ensemble, inputs, pool, returns)
    top = np.argsort(-scores, kind="stable")[:n_pairs]
    return pool[top], scores[top]
