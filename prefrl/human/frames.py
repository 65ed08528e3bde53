"""Pairs of clips ready to play: frames loaded, scaled once to the panel size, and prefetched.

Scaling happens once per pair and window size (``cv2.resize``, which releases the GIL,
so a background thread can do it while the current pair plays); playback then only
blits ready-made surfaces, two per displayed frame.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prefrl.core.store import CLAIM_HEARTBEAT_S, PreferenceStore, Query
from prefrl.core.types import PrefrlError

Size = tuple[int, int]
"""(width, height) in pixels."""


def fit_size(frame_hw: tuple[int, int], box: Size) -> Size:
    """Largest (width, height) with the frame's aspect ratio that fits in ``box``."""
    h, w = frame_hw
    bw, bh = max(1, box[0]), max(1, box[1])
    s = min(bw / w, bh / h)
    return max(1, int(w * s)), max(1, int(h * s))


def is_pixel_art(frame: np.ndarray, max_colors: int = 64) -> bool:
    """True for frames drawn from a small palette (Atari), false for rendered scenes (MuJoCo)."""
    f = np.ascontiguousarray(frame[::2, ::2])  # (H/2, W/2, 3)
    packed = (f[..., 0].astype(np.uint32) << 16) | (f[..., 1].astype(np.uint32) << 8) | f[..., 2]
    return len(np.unique(packed)) <= max_colors


def scale_frames(frames: np.ndarray, size: Size) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, h, w, 3) uint8 scaled to ``size`` = (w, h).

    Shrinking averages pixels (INTER_AREA); enlarging pixel art (Atari's palette) keeps
    pixels sharp (nearest neighbour); enlarging a rendered scene (MuJoCo) interpolates.
    """
    import cv2

    t, h, w = frames.shape[:3]
    if (w, h) == tuple(size):
        return np.ascontiguousarray(frames)
    s = size[0] / w
    if s < 1:
        interp = cv2.INTER_AREA
    else:
        interp = cv2.INTER_NEAREST if is_pixel_art(frames[0]) else cv2.INTER_LINEAR
    out = np.empty((t, size[1], size[0], 3), np.uint8)  # (T, h, w, 3)
    for i in range(t):
        cv2.resize(frames[i], size, dst=out[i], interpolation=interp)
    return out


def make_surfaces(scaled: np.ndarray) -> list:
    """(T, h, w, 3) uint8 -> T pygame surfaces sharing the array's memory (no copy)."""
    import pygame

    h, w = scaled.shape[1:3]
    return [pygame.image.frombuffer(scaled[i].data, (w, h), "RGB") for i in range(len(scaled))]


@dataclass
class PreparedPair:
    """A query with both clips' frames, and surfaces scaled for one panel size.

    Attributes:
        query: the store query (pair of clip ids).
        frames: two (T, H, W, 3) uint8 arrays, left and right, as stored.
        size: the panel box the surfaces were scaled for.
        surfaces: two lists of pygame surfaces (left, right), one per step.
        scaled: the arrays behind ``surfaces`` (kept alive while they are).
    """

    query: Query
    frames: tuple[np.ndarray, np.ndarray]
    size: Size = (0, 0)
    surfaces: tuple[list, list] = field(default_factory=lambda: ([], []))
    scaled: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def length(self) -> int:
        """Playback length in steps (the longer clip; the shorter holds its last frame)."""
        return max(len(self.frames[0]), len(self.frames[1]))

    def rescale(self, box: Size) -> None:
        """Scale both clips to fit ``box`` (no-op when already scaled for it)."""
        if self.size == box and self.scaled is not None:
            return
        scaled = tuple(scale_frames(f, fit_size(f.shape[1:3], box)) for f in self.frames)
        self.scaled = scaled  # type: ignore[assignment]
        self.surfaces = (make_surfaces(scaled[0]), make_surfaces(scaled[1]))
        self.size = box


@dataclass
class PreparedText:
    """A query over two text items: one prompt and its two completions (the viewer wraps them).

    Attributes:
        query: the store query (pair of text item ids).
        prompt: the prompt both completions continue (both prompts, marked, if they differ).
        completions: (left, right).
        size: the panel box it was last laid out for.
    """

    query: Query
    prompt: str
    completions: tuple[str, str]
    size: Size = (0, 0)

    @property
    def length(self) -> int:
        """A text pair is a one-step item: nothing plays."""
        return 1

    def rescale(self, box: Size) -> None:
        """Text is wrapped when drawn (the viewer caches the lines per width): only the box is kept."""
        self.size = box


def load_pair(store: PreferenceStore, query: Query, box: Size | None) -> PreparedPair | PreparedText:
    """Read both items of ``query``: clips' frames scaled for ``box`` (None: don't scale yet), or two texts."""
    if store.is_text(query.left) or store.is_text(query.right):
        (pl, cl), (pr, cr) = store.load_texts([query.left, query.right])
        prompt = pl if pl == pr else f"[left] {pl}\n[right] {pr}"
        return PreparedText(query, prompt, (cl, cr), box or (0, 0))
    clips = store.load_clips([query.left, query.right], frames=True)
    assert clips.frames is not None
    pair = PreparedPair(query, (clips.frames[0], clips.frames[1]))
    if box is not None:
        pair.rescale(box)
    return pair


class Prefetcher:
    """Background thread that claims the next queries and prepares them while a pair plays.

    It has its own store connection, so a write lock held by the trainer delays only
    the prefetch, never the viewer's key handling. It is also the viewer's heartbeat: every
    ``heartbeat_s`` seconds it refreshes the session's claims, so they last while the window
    lives and lapse soon after it is killed.

    Args:
        root: the store directory.
        annotator: whose queue (claims are taken in this name).
        shared: dataset mode (every annotator labels every pair), see ``PreferenceStore.claim_queries``.
        depth: pairs kept ready beyond the one on screen.
        poll_s: how often to look for new queries when none is pending.
        session: the viewer session the claims are held by (one per window; default: a new one).
        heartbeat_s: how often the session's claims are refreshed.
    """

    def __init__(
        self,
        root: Path,
        annotator: str,
        shared: bool,
        depth: int = 1,
        poll_s: float = 0.25,
        session: str | None = None,
        heartbeat_s: float = CLAIM_HEARTBEAT_S,
    ):
        self.store = PreferenceStore(root, create=False)
        self.annotator = annotator
        self.shared = shared
        self.depth = depth
        self.poll_s = poll_s
        self.session = session if session is not None else f"{self.store.session}:{annotator}"
        self.heartbeat_s = heartbeat_s
        self._cursor: tuple[float, int] | None = None  # (score, id) of the last query claimed
        self._beat = time.monotonic()
        self.error: BaseException | None = None
        self.prep_times: list[float] = []
        """Seconds each pair took to load and scale (in the background)."""
        self._lock = threading.Lock()
        self._ready: deque[PreparedPair] = deque()
        self._held: set[int] = set()
        self._box: Size | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prefrl-prefetch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> list[int]:
        """Stop the thread; returns the ids of queries it had prepared (to release their claims)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5.0)
        with self._lock:
            ids = [p.query.id for p in self._ready]
            self._ready.clear()
        self.store.close()
        return ids

    def set_box(self, box: Size) -> None:
        """The panel size to scale for (ready pairs are rescaled in the background)."""
        with self._lock:
            self._box = box
        self._wake.set()

    def hold(self, query_ids: set[int]) -> None:
        """Query ids the viewer has on screen or in its history (never claimed again meanwhile)."""
        with self._lock:
            self._held = set(query_ids)

    def pop(self) -> PreparedPair | None:
        """The next prepared pair, or None if none is ready yet."""
        with self._lock:
            pair = self._ready.popleft() if self._ready else None
            if pair is not None and pair.query.id is not None:
                self._held = self._held | {pair.query.id}  # never prepared twice, even before hold()
        self._wake.set()
        return pair

    def push_front(self, pair: PreparedPair) -> None:
        """Put a pair back at the head of the queue (after an undo brought back an older one)."""
        with self._lock:
            self._ready.appendleft(pair)

    def discard(self, query_id: int) -> None:
        """Drop a prepared pair of this query (an undo is about to show it on screen)."""
        with self._lock:
            self._ready = deque(p for p in self._ready if p.query.id != query_id)

    def n_ready(self) -> int:
        with self._lock:
            return len(self._ready)

    def _run(self) -> None:
        import cv2

        cv2.setNumThreads(1)  # the machine is shared with the trainer
        try:
            while not self._stop.is_set():
                self._wake.clear()  # before reading the state, so a later set() is never lost
                with self._lock:
                    box = self._box
                    need = len(self._ready) < self.depth
                    exclude = self._held | {p.query.id for p in self._ready}
                    stale = [p for p in self._ready if box is not None and p.size != box]
                for p in stale:  # window resized: rescale what is ready
                    p.rescale(box)  # type: ignore[arg-type]
                if time.monotonic() - self._beat >= self.heartbeat_s:
                    self.store.refresh_claims(self.session)
                    self._beat = time.monotonic()
                if need and box is not None:
                    qs = self.store.claim_queries(
                        self.annotator, 1, exclude, shared=self.shared, viewer=self.session, after=self._cursor
                    )
                    if qs:
                        self._cursor = (qs[0].score, qs[0].id)
                        t0 = time.perf_counter()
                        pair = load_pair(self.store, qs[0], box)
                        self.prep_times.append(time.perf_counter() - t0)
                        with self._lock:
                            self._ready.append(pair)
                        continue
                self._wake.wait(self.poll_s)
        except BaseException as e:  # handed to the viewer, which raises it in the main thread
            self.error = e if isinstance(e, PrefrlError) else PrefrlError(f"preparing the next pair failed: {e!r}")


def wait_until(predicate, timeout_s: float, poll_s: float = 0.01) -> bool:
    """Poll ``predicate`` until true or ``timeout_s`` passes; returns its last value."""
    end = time.perf_counter() + timeout_s
    while not predicate():
        if time.perf_counter() > end:
            return False
        time.sleep(poll_s)
    return True
