"""The human oracle: labels that come from people through the preference store.

A scripted oracle answers at once; a person answers later, in another process
(``prefrl label``). ``HumanOracle`` is the trainer's side of that exchange: it
enqueues pairs (best query score first) and hands back the judgments that have
arrived since it last looked, each exactly once, without ever blocking training
(as in rl-teacher, the agent keeps training on the latest reward model meanwhile).

Example:
    >>> oracle = HumanOracle(store)                          # doctest: +SKIP
    >>> oracle.ask(pairs_of_clip_ids, scores)                # doctest: +SKIP
    >>> new = oracle.poll()   # judgments made since the last poll  # doctest: +SKIP
"""

from __future__ import annotations

import time

import numpy as np

from prefrl.preferences import Judgment, PreferenceStore


class HumanOracle:
    """Enqueue pairs for ``prefrl label`` and collect the judgments people make.

    Args:
        store: the run's store (clips of the pairs must be stored with their frames).
        since_id: judgments up to this id count as already seen (default: none).
    """

    name = "human"

    def __init__(self, store: PreferenceStore, since_id: int = 0):
        self.store = store
        self.last_id = since_id

    def ask(self, pairs: np.ndarray, scores: np.ndarray | None = None) -> list[int]:
        """Queue (P, 2) pairs of clip ids; higher ``scores`` are shown first. Returns the query ids."""
        return self.store.add_queries(np.asarray(pairs, np.int64).reshape(-1, 2), scores)

    def poll(self) -> list[Judgment]:
        """Judgments made since the last poll, oldest first (never blocks)."""
        new = self.store.judgments(since_id=self.last_id)
        if new:
            self.last_id = new[-1].id
        return new

    def wait(self, n: int, timeout_s: float, poll_s: float = 0.1) -> list[Judgment]:
        """Poll until ``n`` new judgments arrived or ``timeout_s`` passed (for scripts, not the RL loop)."""
        got: list[Judgment] = []
        end = time.monotonic() + timeout_s
        while len(got) < n and time.monotonic() < end:
            got += self.poll()
            if len(got) < n:
                time.sleep(poll_s)
        return got

    @property
    def pending(self) -> int:
        return self.store.count_pending()
