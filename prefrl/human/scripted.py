"""A scripted person at the keyboard: drives a real ``Viewer`` through posted key events.

Tests, the benchmark and demos use it to exercise the exact path a person's key takes
(SDL event queue -> ``Viewer.handle_event`` -> store), in this process or as a
separate viewer process beside a trainer::

    SDL_VIDEODRIVER=dummy python -m prefrl.human.scripted --run-dir D --annotator bot \\
        --keys left,right,undo,equal --then oracle --log keys.jsonl

Each key is logged as one JSON line (flushed at once): the key, and the judgment it
wrote or undid, so a test can compare what was pressed with what reached the store.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from prefrl.human.viewer import Viewer, ViewerConfig
from prefrl.core.store import PreferenceStore, Query

KEY_NAMES = ("left", "right", "equal", "skip", "undo", "replay", "quit")


def key_code(name: str) -> int:
    import pygame

    codes = {
        "left": pygame.K_LEFT, "right": pygame.K_RIGHT, "equal": pygame.K_UP, "skip": pygame.K_DOWN,
        "undo": pygame.K_BACKSPACE, "replay": pygame.K_SPACE, "quit": pygame.K_q,
        "1": pygame.K_1, "2": pygame.K_2, "e": pygame.K_e, "s": pygame.K_s, "esc": pygame.K_ESCAPE,
    }
    return codes[name]


def post_key(key: int | str) -> None:
    """Put a key press on SDL's event queue, as the keyboard would."""
    import pygame

    code = key_code(key) if isinstance(key, str) else key
    pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=code, mod=0, unicode="", scancode=0))


def true_return_policy(store: PreferenceStore) -> Callable[[Query], str]:
    """A rational person: prefers the clip with the higher true return (equal if tied).

    For text items the true return is the stored oracle score; a pair without scores is skipped.
    """

    def choose(q: Query) -> str:
        if store.is_text(q.left):
            r = store.text_scores([q.left, q.right])
            if r[0] is None or r[1] is None:
                return "skip"
        else:
            r = store.load_clips([q.left, q.right]).true_returns()
        return "left" if r[0] > r[1] else ("right" if r[1] > r[0] else "equal")

    return choose


def press(viewer: Viewer, name: str) -> dict:
    """Post one key, let the viewer handle it, and describe what it did."""
    q = viewer.current.query if viewer.current is not None else None
    before = list(viewer.judged)
    viewer.last_undone = None
    post_key(name)
    viewer.step()
    rec: dict = {"key": name, "t": time.time(), "query": None if q is None else q.id}
    if len(viewer.judged) > len(before):
        jid = viewer.judged[-1]
        rec.update(judgment=jid, left=q.left, right=q.right)  # type: ignore[union-attr]
    if viewer.last_undone is not None:
        u = viewer.last_undone
        rec.update(undone=u.id, undone_query=u.query_id)
    return rec


def drive(
    viewer: Viewer,
    keys: Iterator[str],
    delay_s: float = 0.0,
    log: TextIO | None = None,
    then: str = "stop",
    policy: Callable[[Query], str] | None = None,
    timeout_s: float = 120.0,
) -> list[dict]:
    """Press ``keys`` one by one, each once a pair has been on screen for ``delay_s``.

    Args:
        viewer: an open viewer.
        keys: key names (``KEY_NAMES``); ``undo`` and ``quit`` are pressed without waiting for a pair.
        delay_s: how long a pair plays before its key is pressed.
        log: where to write one JSON line per key.
        then: when ``keys`` run out: ``stop`` (return), ``hang`` (keep playing, no keys: the
            window stays up until killed), ``oracle`` (label with ``policy`` until the viewer is done).
        policy: maps the pair on screen to a key name (``then="oracle"``).
        timeout_s: give up after this long.

    Returns:
        one record per key pressed.
    """
    records: list[dict] = []
    pending = iter(keys)
    nxt = next(pending, None)
    end = time.monotonic() + timeout_s
    while not viewer.done and time.monotonic() < end:
        if nxt is None:
            if then == "stop":
                break
            if then == "oracle" and policy is not None and _pair_due(viewer, delay_s):
                nxt = policy(viewer.current.query)  # type: ignore[union-attr]
        if nxt is not None and (nxt in ("undo", "quit") or _pair_due(viewer, delay_s)):
            rec = press(viewer, nxt)
            records.append(rec)
            if log is not None:
                log.write(json.dumps(rec) + "\n")
                log.flush()
            nxt = next(pending, None)
            continue
        viewer.step(wait=True)
    return records


def _pair_due(viewer: Viewer, delay_s: float) -> bool:
    return (
        viewer.current is not None and viewer.shown_at is not None and viewer.clock() - viewer.shown_at >= delay_s
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run-dir", type=Path, required=True, help="store directory (run, or dataset labels store)")
    p.add_argument("--annotator", default="scripted")
    p.add_argument("--shared", action="store_true", help="dataset mode")
    p.add_argument("--keys", default="", help=f"comma-separated key names: {', '.join(KEY_NAMES)}")
    p.add_argument("--then", default="stop", choices=("stop", "hang", "oracle"))
    p.add_argument("--delay-s", type=float, default=0.0)
    p.add_argument("--log", type=Path, default=None)
    p.add_argument("--timeout-s", type=float, default=120.0)
    a = p.parse_args(argv)
    keys = [k for k in a.keys.split(",") if k]
    log = open(a.log, "a") if a.log else sys.stdout
    cfg = ViewerConfig(linger_s=0.0, exit_when_done=True)
    viewer = Viewer(a.run_dir, a.annotator, shared=a.shared, cfg=cfg).open()
    try:
        policy = true_return_policy(viewer.store) if a.then == "oracle" else None
        drive(viewer, iter(keys), a.delay_s, log, a.then, policy, a.timeout_s)
        log.write(json.dumps({"done": True, "finished": viewer.finished, "judged": viewer.judged}) + "\n")
        log.flush()
    finally:
        viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
