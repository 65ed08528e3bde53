"""The pygame side-by-side labelling window.

Two clips play side by side, in sync and looped, scaled to a resizable window; a key
press writes the judgment to the store at once (committed before the next pair is
drawn) and the next pair, prepared in a background thread while this one played,
appears without a wait.

A pair of text items (two completions of one prompt, ``PreferenceStore.add_texts``) is
shown the same way: the prompt on top, the two completions side by side below it, all
wrapped to the window's width; when they do not fit, Page Up/Down, Home/End and the mouse
wheel scroll them. The keys, undo and the store are those of clips.

Keys (also shown in the window):

==================  =================================================
Left, 1             left clip is better (label 1.0)
Right, 2            right clip is better (label 0.0)
Up, E               equally good (label 0.5)
Down, S             can't tell: a skip (recorded, never trained on)
Space               replay both clips from the start (text: back to the top)
PgUp/PgDn, wheel    scroll a text pair that does not fit (Home/End: top/bottom)
Backspace           undo your last judgment and show that pair again
Q, Esc              quit (every judgment made is already saved)
==================  =================================================

The main loop is ``Viewer.step`` (events, ``tick``, ``draw``, flip), so tests drive it
one step at a time with posted events; ``Viewer.run`` repeats it at the display rate,
waking early for a key so that the next pair is on screen within milliseconds.

Example:
    >>> with Viewer(run_dir, annotator="alice") as v:   # doctest: +SKIP
    ...     v.run()
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prefrl.core.rundir import Meta
from prefrl.core.store import Judgment, PreferenceStore, Query
from prefrl.core.types import PrefrlError
from prefrl.human.frames import PreparedPair, PreparedText, Prefetcher, Size, load_pair

# label of each key; None is a skip
LABEL_KEYS: dict[str, float | None] = {
    "left": 1.0, "1": 1.0, "[1]": 1.0,
    "right": 0.0, "2": 0.0, "[2]": 0.0,
    "up": 0.5, "e": 0.5,
    "down": None, "s": None,
}
LABEL_NAMES = {1.0: "left better", 0.0: "right better", 0.5: "equally good", None: "can't tell (skip)"}

BG = (22, 24, 29)
PANEL = (36, 39, 46)
TEXT = (228, 230, 235)
DIM = (140, 146, 158)
ACCENT = (84, 156, 255)
GOOD = (92, 200, 128)
WARN = (240, 190, 80)
BAD = (240, 96, 96)


@dataclass
class ViewerConfig:
    """Window and playback settings of ``prefrl label``."""

    width: int = 1280
    """Initial window width in pixels (the window is resizable)."""
    height: int = 720
    """Initial window height in pixels."""
    fps: float = 60.0
    """Display refresh rate of the window."""
    clip_fps: float | None = None
    """Playback speed of clips in steps per second; default: the run's `render_fps` meta, else 30."""
    hold_s: float = 0.5
    """Pause on the last frame before a clip loops."""
    prefetch: int = 1
    """Pairs prepared ahead of the one on screen."""
    poll_s: float = 0.25
    """How often to look for new pairs while none is pending."""
    exit_when_done: bool = False
    """Dataset mode: quit once every pair is labeled (otherwise wait for Q, so the last one can be undone)."""
    linger_s: float = 1.5
    """How long the 'run finished' message stays before the window closes."""

    def __post_init__(self) -> None:
        if self.width < 320 or self.height < 240:
            raise PrefrlError(f"window must be at least 320x240, got `width`={self.width}, `height`={self.height}")
        if self.fps <= 0:
            raise PrefrlError(f"`fps` must be > 0, got {self.fps}")
        if self.clip_fps is not None and self.clip_fps <= 0:
            raise PrefrlError(f"`clip_fps` must be > 0, got {self.clip_fps}")
        if self.prefetch < 1:
            raise PrefrlError(f"`prefetch` must be >= 1, got {self.prefetch}")


def init_display(size: Size, title: str):
    """Open the resizable window; a clear error when there is no display to open it on."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    import pygame

    asked = os.environ.get("SDL_VIDEODRIVER")
    hint = (
        "no display to open the labelling window on: run it on a desktop session (DISPLAY set), "
        "under a virtual X server (`xvfb-run prefrl label ...`, Debian package `xvfb`), "
        "or with SDL_VIDEODRIVER=dummy for a headless run"
    )
    try:
        pygame.display.init()
    except pygame.error as e:
        raise PrefrlError(f"{hint} (SDL: {e}; SDL_VIDEODRIVER={asked!r})") from e
    if asked is None and pygame.display.get_driver() in ("offscreen", "dummy"):
        pygame.display.quit()
        raise PrefrlError(f"{hint} (SDL fell back to its `offscreen` driver: DISPLAY is not set)")
    pygame.font.init()
    pygame.display.set_caption(title)
    try:
        return pygame.display.set_mode(size, pygame.RESIZABLE)
    except pygame.error as e:
        raise PrefrlError(f"{hint} (SDL: {e})") from e


class Viewer:
    """Label pairs of clips from a store by hand.

    Args:
        root: store directory (a run directory, or the store a dataset is labeled into).
        annotator: recorded with every judgment.
        shared: True when every annotator labels every pair (a dataset); False for a run,
            where pending pairs are shared out between annotators.
        cfg: window and playback settings.
        clock: time source in seconds (tests may pass a fake one).
    """

    def __init__(
        self,
        root: str | Path,
        annotator: str,
        shared: bool = False,
        cfg: ViewerConfig | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.root = Path(root)
        self.store = PreferenceStore(self.root, create=False)
        self.annotator = annotator
        self.session = f"{annotator}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        """This window's viewer session: its claims keep its pairs from every other window, same annotator or not."""
        self.shared = shared
        self.cfg = cfg or ViewerConfig()
        self.clock = clock
        fps = self.cfg.clip_fps or self.store.get_meta(Meta.RENDER_FPS.value) or 30.0
        self.clip_fps = float(fps)  # type: ignore[arg-type]
        self.screen = None
        self.prefetcher: Prefetcher | None = None
        self.current: PreparedPair | PreparedText | None = None
        self.shown_at: float | None = None
        self.play_t0 = 0.0
        self.done = False
        self.finished = False  # the run is over (or, in dataset mode, every pair is labeled)
        self.message: tuple[str, tuple[int, int, int], float] | None = None
        self.counts: dict[str, object] = {}
        self._counts_at = -1e9
        self._next_frame = 0.0
        self._redraw = True
        self._box: Size = (0, 0)
        self._fonts: dict[int, object] = {}
        self._text_cache: dict[tuple, object] = {}
        self._last_sig: tuple | None = None
        self._font_path: str | None = None
        self._arrows = False
        self._closed = False
        self.frames_drawn = 0
        self.pair_shown_times: list[float] = []
        """Clock time at which each new pair was first on screen (after the flip)."""
        self.draw_times: deque[float] = deque(maxlen=100_000)
        """Seconds each displayed frame took (tick, draw and flip): the headroom under 1/fps."""
        self.key_times: list[float] = []
        """Clock time at which each key press was handled."""
        self.judged: list[int] = []
        """Ids of the judgments made in this window and not undone, oldest first."""
        self._judged_queries: dict[int, int | None] = {}
        self.last_undone: Judgment | None = None
        """The judgment the last Backspace deleted."""
        self.scroll = 0
        """Pixels a text pair is scrolled down by (0 = its top; kept within what it overflows)."""
        self._scroll_max = 0
        self._wrap_cache: dict[tuple, list[str]] = {}

    # ---- lifecycle -----------------------------------------------------------------------
    def open(self) -> Viewer:
        """Open the window and start preparing pairs."""
        import pygame

        self.screen = init_display((self.cfg.width, self.cfg.height), f"prefrl label: {self.root}")
        self._layout()
        self.prefetcher = Prefetcher(
            self.root, self.annotator, self.shared, self.cfg.prefetch, self.cfg.poll_s, session=self.session
        )
        self.prefetcher.set_box(self._box)
        self.prefetcher.start()
        self._refresh_counts(self.clock(), force=True)
        pygame.key.set_repeat()  # a held key must not label several pairs
        return self

    def close(self) -> None:
        """Stop prefetching, give back unjudged claims, close the window (idempotent)."""
        import pygame

        if self._closed:
            return
        self._closed = True
        if self.prefetcher is not None:
            self.prefetcher.stop()
            self.prefetcher = None
        try:  # every claim of this window: the pair on screen, the prepared ones
            self.store.release_claims(self.annotator, viewer=self.session)
        except Exception:  # closing must not fail; claims lapse on their own within CLAIM_TTL_S
            pass
        self.store.close()
        if self.screen is not None:
            pygame.display.quit()
            self.screen = None

    def __enter__(self) -> Viewer:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self) -> dict[str, object]:
        """Label until Q/Esc, the window is closed, or the run finishes; returns the final counts."""
        if self.screen is None:
            self.open()
        while not self.done:
            self.step(wait=True)
        if self.finished and self.cfg.linger_s > 0 and not self.shared:
            end = self.clock() + self.cfg.linger_s
            while self.clock() < end:
                self.step(wait=True)
        self._refresh_counts(self.clock(), force=True)
        return dict(self.counts)

    def step(self, wait: bool = False) -> None:
        """One turn of the main loop: handle queued events, then tick, draw and flip.

        With ``wait``, sleep until the next display frame is due but wake at once for an
        event, and draw immediately after a key that changed the pair on screen.
        """
        import pygame

        events = []
        if wait:
            timeout = self._next_frame - self.clock()
            if timeout > 0.002:
                ev = pygame.event.wait(max(1, int(timeout * 1000)))
                if ev.type != pygame.NOEVENT:
                    events.append(ev)
        events += pygame.event.get()
        for ev in events:
            self.handle_event(ev)
        now = self.clock()
        due = self._next_frame
        period = 1.0 / self.cfg.fps
        if not wait or self._redraw or now >= due:
            # content for the frame's due time, not the (jittery) wake-up time: at clip_fps == fps
            # every display frame then shows the next clip frame, none twice, none skipped
            t = due if wait and 0.0 <= now - due < period else now
            self.tick(t)
            sig = self._signature(t)
            if not wait or self._redraw or sig != self._last_sig:  # nothing changed: no redraw, no flip
                last = self._last_sig
                if wait and not self._redraw and last is not None and sig[1:] == last[1:] and sig[0] is not None \
                        and last[0] is not None and sig[0][0] == last[0][0]:
                    pygame.display.update(self._draw_frames(t))  # only the clips moved: update just them
                else:
                    self.draw(t)
                    pygame.display.flip()
                self.frames_drawn += 1
                after = self.clock()
                self.draw_times.append(after - now)
                if self.current is not None and self.shown_at is None:
                    self.shown_at = after
                    self.pair_shown_times.append(after)
                self._redraw = False
                self._last_sig = sig
            self._next_frame = due + period if now - due < period else now + period

    def _signature(self, now: float) -> tuple:
        """What the window shows at ``now``; an unchanged signature needs no redraw (the trainer keeps the CPU)."""
        msg = self.message[0] if self.message is not None and now < self.message[2] else None
        if self.current is None and not self.finished:
            anim = int(now * self.cfg.fps)  # the spinner turns
        else:
            anim = None
        cur = None if self.current is None else (id(self.current), self.frame_index(now))
        return (cur, anim, msg, tuple(self.counts.values()), self.finished, self._box, self.scroll)

    # ---- events --------------------------------------------------------------------------
    def handle_event(self, ev) -> None:
        """Apply one pygame event (keys, resize, window close)."""
        import pygame

        if ev.type == pygame.QUIT:
            self.done = True
        elif ev.type == pygame.VIDEORESIZE:
            if self.screen is not None and self.screen.get_size() != (ev.w, ev.h):
                self.screen = pygame.display.set_mode((ev.w, ev.h), pygame.RESIZABLE)
            self._layout()
        elif ev.type == pygame.WINDOWSIZECHANGED:
            self._layout()
        elif ev.type == pygame.MOUSEWHEEL:
            self.scroll_by(-ev.y * self.SCROLL_STEP)
        elif ev.type == pygame.KEYDOWN and ev.key in self._scroll_keys():
            self.scroll_by(self._scroll_keys()[ev.key])
        elif ev.type == pygame.KEYDOWN:
            self.key_times.append(self.clock())
            name = pygame.key.name(ev.key)
            if name in LABEL_KEYS:
                self.judge(LABEL_KEYS[name])
            elif ev.key == pygame.K_SPACE:
                self.play_t0 = self.clock()
                self.scroll = 0
                self._redraw = True
            elif ev.key == pygame.K_BACKSPACE:
                self.undo()
            elif ev.key in (pygame.K_q, pygame.K_ESCAPE):
                self.done = True

    SCROLL_STEP = 48
    """Pixels one wheel notch scrolls a text pair."""

    def _scroll_keys(self) -> dict[int, int]:
        """Scrolling keys and their step in pixels (a page is most of the text area)."""
        import pygame

        page = max(self.SCROLL_STEP, int(0.8 * self._text_area()[3])) if self.screen is not None else 200
        return {pygame.K_PAGEDOWN: page, pygame.K_PAGEUP: -page, pygame.K_HOME: -10**9, pygame.K_END: 10**9}

    def scroll_by(self, dy: int) -> None:
        """Scroll a text pair by ``dy`` pixels (down > 0), kept within its overflow; clips ignore it."""
        if not isinstance(self.current, PreparedText):
            return
        new = min(max(0, self.scroll + dy), self._scroll_max)
        if new != self.scroll:
            self.scroll = new
            self._redraw = True

    def judge(self, label: float | None) -> int | None:
        """Write a judgment on the pair on screen (committed before returning) and show the next one.

        Returns:
            the judgment's id, or None when no pair was on screen.
        """
        now = self.clock()
        if self.current is None:
            self._flash("no pair on screen to judge", WARN, now)
            return None
        if self.shown_at is None:  # e.g. a double tap: the second key must not judge a pair never seen
            self._flash("that pair was not on screen yet: key ignored", WARN, now)
            return None
        q = self.current.query
        response = max(0.0, now - self.shown_at)
        jid = self.store.add_judgment(
            q.left, q.right, label, source="human", annotator=self.annotator, response_s=response, query_id=q.id
        )
        self.judged.append(jid)
        self._judged_queries[jid] = q.id
        self._flash(f"saved #{jid}: {LABEL_NAMES[label]}", GOOD, now)
        self._show(self._next_open_pair())
        self._counts_at = -1e9
        return jid

    def undo(self) -> None:
        """Delete your last judgment (even one from an earlier session) and show its pair again."""
        now = self.clock()
        j = self.store.undo_last(self.annotator, viewer=self.session)  # the pair is ours again while shown
        if j is None:
            self._flash("nothing to undo", WARN, now)
            return
        self.last_undone = j
        if j.id in self.judged:
            self.judged.remove(j.id)
        self._judged_queries.pop(j.id, None)
        assert self.prefetcher is not None
        if j.query_id is not None:
            self.prefetcher.discard(j.query_id)
        if self.current is not None:
            self.prefetcher.push_front(self.current)
        label = None if j.label is None else float(j.label)
        self._flash(f"undid #{j.id} ({LABEL_NAMES.get(label, label)}): judge it again", WARN, now)
        self._show(load_pair(self.store, Query(j.query_id, j.left, j.right, 0.0), self._box))  # type: ignore[arg-type]
        self._counts_at = -1e9

    def _next_open_pair(self) -> PreparedPair | None:
        assert self.prefetcher is not None
        while True:
            pair = self.prefetcher.pop()
            if pair is None or pair.query.id is None:
                return pair
            if pair.query.id in self._judged_queries.values():
                continue  # judged in this window meanwhile (e.g. prepared again around an undo)
            if self.shared or self.store.query_status(pair.query.id) == "pending":
                return pair  # still wanted (not cancelled by the trainer, not judged by someone else)

    def _show(self, pair: PreparedPair | None) -> None:
        if pair is not None and pair.size != self._box:
            pair.rescale(self._box)
        self.current = pair
        self.shown_at = None
        self.scroll = 0
        self._scroll_max = 0
        self.play_t0 = self.clock()
        self._redraw = True
        if self.prefetcher is not None:
            self.prefetcher.hold(set() if pair is None or pair.query.id is None else {pair.query.id})

    def _flash(self, text: str, color: tuple[int, int, int], now: float, seconds: float = 2.0) -> None:
        self.message = (text, color, now + seconds)
        self._redraw = True

    # ---- state ---------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Advance state: pick up a prepared pair when none is shown, refresh counts, notice the end."""
        assert self.prefetcher is not None
        if self.prefetcher.error is not None:
            raise self.prefetcher.error
        if self.current is None and not self.finished:
            pair = self._next_open_pair()
            if pair is not None:
                self._show(pair)
                self.play_t0 = now
        self._refresh_counts(now)
        if self.shared:
            if self.current is None and self.counts["open"] == 0 and self.prefetcher.n_ready() == 0:
                self.finished = True
                self.done = self.done or self.cfg.exit_when_done
            elif self.current is not None:
                self.finished = False
        elif self.counts["status"] == "finished" and not self.finished:
            self.finished = True
            self.done = True
            if self.current is not None:
                self.prefetcher.push_front(self.current)  # released on close
                self.current = None

    def _refresh_counts(self, now: float, force: bool = False) -> None:
        if not force and now - self._counts_at < 0.5:
            return
        self._counts_at = now
        s = self.store
        mine = s.count_judgments(annotator=self.annotator)
        open_ = s.count_open(self.annotator, shared=self.shared)
        if self.shared:
            total = mine + open_
            budget, done = total, mine
        else:
            budget = s.get_meta(Meta.LABEL_BUDGET.value)
            done = s.count_judgments()
        self.counts = {
            "mine": mine,
            "all": s.count_judgments(),
            "open": open_,
            "budget": budget,
            "done": done,
            "status": None if self.shared else s.get_meta(Meta.STATUS.value),
        }

    def frame_index(self, now: float) -> int:
        """Step of the current pair on screen at ``now``: playback at clip_fps, a pause, then a loop."""
        if self.current is None:
            return 0
        n = self.current.length
        period = n / self.clip_fps + self.cfg.hold_s
        local = max(0.0, now - self.play_t0) % period
        return min(int(local * self.clip_fps + 1e-6), n - 1)

    # ---- drawing -------------------------------------------------------------------------
    HEADER_H = 62
    FOOTER_H = 64
    CAPTION_H = 40
    PAD = 14

    def _layout(self) -> None:
        assert self.screen is not None
        w, h = self.screen.get_size()
        box = (
            max(16, (w - 3 * self.PAD) // 2),
            max(16, h - self.HEADER_H - self.FOOTER_H - self.CAPTION_H - 2 * self.PAD),
        )
        if box != self._box:
            self._box = box
            if self.current is not None:
                self.current.rescale(box)
            if self.prefetcher is not None:
                self.prefetcher.set_box(box)
        self._redraw = True

    def _font(self, size: int):
        """A font of ``size`` (in pygame's default-font units); DejaVu/FreeSans when installed, for arrows."""
        import pygame

        if self._font_path is None:
            path = pygame.font.match_font("dejavusans,freesans,liberationsans,arial") or ""
            if path:
                probe = pygame.font.Font(path, 16).metrics("←→↑↓")
                path = path if probe and all(m is not None for m in probe) else ""
            self._font_path = path
            self._arrows = bool(path)
        f = self._fonts.get(size)
        if f is None:
            if self._font_path:
                f = pygame.font.Font(self._font_path, max(8, int(size * 0.7)))
            else:
                f = pygame.font.Font(None, size)
            self._fonts[size] = f
        return f

    def _key(self, arrow: str) -> str:
        """An arrow glyph, or its name when the font has no arrows."""
        self._font(20)
        return arrow if self._arrows else {"←": "Left", "→": "Right", "↑": "Up", "↓": "Down"}[arrow]

    def _render(self, text: str, size: int, color: tuple[int, int, int]):
        """A text surface, rendered once per (text, size, color)."""
        key = (text, size, color)
        surf = self._text_cache.get(key)
        if surf is None:
            if len(self._text_cache) > 512:
                self._text_cache.clear()
            surf = self._text_cache[key] = self._font(size).render(text, True, color)
        return surf

    def _text(self, text: str, pos: tuple[int, int], size: int = 24, color=TEXT, anchor: str = "topleft") -> object:
        surf = self._render(text, size, color)
        rect = surf.get_rect(**{anchor: pos})
        self.screen.blit(surf, rect)  # type: ignore[union-attr]
        return rect

    def draw(self, now: float) -> None:
        """Render the whole window for time ``now`` (no flip)."""
        scr = self.screen
        assert scr is not None
        scr.fill(BG)
        self._draw_header(now)
        if isinstance(self.current, PreparedText):
            self._draw_text_pair()
        elif self.current is not None:
            self._draw_pair(now)
        else:
            self._draw_waiting(now)
        self._draw_footer(now)

    def _draw_header(self, now: float) -> None:
        import pygame

        scr = self.screen
        w = scr.get_width()  # type: ignore[union-attr]
        c = self.counts
        mode = "dataset" if self.shared else "run"
        self._text(f"prefrl label  ·  {mode} {self.root.name}", (self.PAD, 10), 28)
        self._text(f"annotator: {self.annotator}", (w - self.PAD, 10), 26, ACCENT, "topright")
        if self.shared:
            stats = f"labeled by you {c['mine']}   ·   left to label {c['open']}"
        else:
            stats = f"labeled {c['all']} (by you {c['mine']})   ·   pending {c['open']}"
        r = self._text(stats, (self.PAD, 38), 22, DIM)
        budget, done = c.get("budget"), c.get("done")
        if isinstance(budget, int) and budget > 0:
            what = "pairs" if self.shared else "label budget"
            label = f"{done} / {budget} {what}"
            x = max(w // 2, r.right + 24 + self._font(22).size(label)[0] + 10)
            bar = pygame.Rect(x, 40, w - self.PAD - x, 12)
            if bar.w >= 40:
                pygame.draw.rect(scr, PANEL, bar, border_radius=6)
                frac = min(1.0, int(done) / budget)  # type: ignore[arg-type]
                if frac > 0:
                    pygame.draw.rect(scr, ACCENT, (bar.x, bar.y, max(12, int(bar.w * frac)), bar.h), border_radius=6)
                self._text(label, (bar.x - 10, 38), 22, DIM, "topright")

    def _draw_pair(self, now: float) -> None:
        import pygame

        pair = self.current
        assert pair is not None and self.screen is not None
        top = self.HEADER_H + self.PAD
        bw, bh = self._box
        keys = (f"{self._key('←')} or 1", f"{self._key('→')} or 2")
        for side in (0, 1):
            x0 = self.PAD + side * (bw + self.PAD)
            pygame.draw.rect(self.screen, PANEL, (x0, top, bw, bh))
            clip = (pair.query.left, pair.query.right)[side]
            cap_y = top + bh + 8
            r = self._text(("LEFT", "RIGHT")[side], (x0, cap_y), 30)
            self._text(f"[{keys[side]}]", (r.right + 12, cap_y + 2), 26, ACCENT)
            self._text(f"clip {clip}", (x0 + bw, cap_y + 4), 20, DIM, "topright")
        self._draw_frames(now)

    def _draw_frames(self, now: float) -> list:
        """Blit both clips' frames for ``now`` and the playback bar; returns the rects drawn."""
        import pygame

        pair = self.current
        assert pair is not None and self.screen is not None
        if isinstance(pair, PreparedText):  # nothing plays: the whole pair
            return [self._draw_text_pair()]
        scr = self.screen
        i = self.frame_index(now)
        top = self.HEADER_H + self.PAD
        bw, bh = self._box
        rects = []
        for side in (0, 1):
            panel = pygame.Rect(self.PAD + side * (bw + self.PAD), top, bw, bh)
            frames = pair.surfaces[side]
            surf = frames[min(i, len(frames) - 1)]  # every frame of a clip has one size: it covers the last
            rects.append(scr.blit(surf, surf.get_rect(center=panel.center)))
        bar = pygame.Rect(self.PAD, top + bh + 2, scr.get_width() - 2 * self.PAD, 3)  # shared playback position
        pygame.draw.rect(scr, PANEL, bar)
        pygame.draw.rect(scr, DIM, (bar.x, bar.y, int(bar.w * (i + 1) / pair.length), bar.h))
        rects.append(bar)
        return rects

    TEXT_SIZE = 28
    """Font size of prompts and completions (pygame default-font units)."""

    def _text_area(self) -> tuple[int, int, int, int]:
        """(x, y, w, h) of the region a text pair is drawn and scrolled in."""
        assert self.screen is not None
        w, h = self.screen.get_size()
        top = self.HEADER_H + self.PAD
        return self.PAD, top, max(16, w - 2 * self.PAD), max(16, h - self.FOOTER_H - self.PAD - top)

    def wrap(self, text: str, size: int, width: int) -> list[str]:
        """``text`` broken into lines no wider than ``width`` pixels (at spaces; a longer word is cut)."""
        key = (text, size, width)
        got = self._wrap_cache.get(key)
        if got is not None:
            return got
        font = self._font(size)
        fits = lambda t: font.size(t)[0] <= width  # noqa: E731
        lines: list[str] = []
        for para in text.split("\n"):
            line = ""
            for word in para.split(" "):
                cand = f"{line} {word}" if line else word
                if fits(cand):
                    line = cand
                    continue
                if line:
                    lines.append(line)
                while not fits(word) and len(word) > 1:  # longest head of the word that fits
                    lo, hi = 1, len(word)
                    while lo < hi:
                        mid = (lo + hi + 1) // 2
                        lo, hi = (mid, hi) if fits(word[:mid]) else (lo, mid - 1)
                    lines.append(word[:lo])
                    word = word[lo:]
                line = word
            lines.append(line)
        if len(self._wrap_cache) > 256:
            self._wrap_cache.clear()
        self._wrap_cache[key] = lines
        return lines

    def _draw_text_pair(self):
        """Prompt on top, the two completions side by side below, wrapped and scrolled; returns the area."""
        import pygame

        pair = self.current
        scr = self.screen
        assert isinstance(pair, PreparedText) and scr is not None
        x, top, aw, ah = self._text_area()
        area = pygame.Rect(x, top, aw, ah)
        size, inner = self.TEXT_SIZE, 10
        lh = self._font(size).get_linesize()
        cap_h = self._font(26).get_linesize() + 4
        bar_w = 8  # room for the scroll bar
        cw = (aw - bar_w - self.PAD) // 2
        prompt = self.wrap(pair.prompt.strip() or "(empty prompt)", size, aw - bar_w - 2 * inner)
        cont = "… " if pair.prompt.strip() else ""  # a completion continues the prompt
        sides = [self.wrap(cont + c.strip() if c.strip() else "(empty)", size, cw - 2 * inner) for c in pair.completions]
        prompt_h = len(prompt) * lh + 2 * inner
        comp_h = max(len(sides[0]), len(sides[1])) * lh + 2 * inner
        content_h = cap_h + prompt_h + self.PAD + cap_h + comp_h
        self._scroll_max = max(0, content_h - ah)
        self.scroll = min(self.scroll, self._scroll_max)
        scr.set_clip(area)
        scr.fill(BG, area)
        y = top - self.scroll
        self._text("PROMPT", (x, y), 24, DIM)
        y += cap_h
        pygame.draw.rect(scr, PANEL, (x, y, aw - bar_w, prompt_h), border_radius=6)
        for k, line in enumerate(prompt):
            self._text(line, (x + inner, y + inner + k * lh), size, TEXT)
        y += prompt_h + self.PAD
        keys = (f"{self._key('←')} or 1", f"{self._key('→')} or 2")
        for side in (0, 1):
            x0 = x + side * (cw + self.PAD)
            r = self._text(("LEFT", "RIGHT")[side], (x0, y), 26)
            self._text(f"[{keys[side]}]", (r.right + 12, y + 2), 24, ACCENT)
            self._text(f"item {(pair.query.left, pair.query.right)[side]}", (x0 + cw, y + 2), 20, DIM, "topright")
            pygame.draw.rect(scr, PANEL, (x0, y + cap_h, cw, comp_h), border_radius=6)
            color = TEXT if pair.completions[side].strip() else DIM
            for k, line in enumerate(sides[side]):
                self._text(line, (x0 + inner, y + cap_h + inner + k * lh), size, color)
        if self._scroll_max > 0:  # scroll bar: where the view is in the whole pair
            track = pygame.Rect(area.right - bar_w + 3, top, bar_w - 3, ah)
            pygame.draw.rect(scr, PANEL, track, border_radius=3)
            th = max(24, ah * ah // content_h)
            ty = top + (ah - th) * self.scroll // self._scroll_max
            pygame.draw.rect(scr, ACCENT, (track.x, ty, track.w, th), border_radius=3)
        scr.set_clip(None)
        return area

    def _draw_waiting(self, now: float) -> None:
        import pygame

        scr = self.screen
        assert scr is not None
        w, h = scr.get_size()
        cx, cy = w // 2, self.HEADER_H + (h - self.HEADER_H - self.FOOTER_H) // 2
        if self.finished:
            if self.shared:
                lines = ["every pair is labeled", "Backspace: undo the last one   ·   Q: quit"]
            else:
                lines = ["the run has finished", "every judgment is saved; closing"]
            self._text(lines[0], (cx, cy - 20), 40, GOOD, "center")
            self._text(lines[1], (cx, cy + 22), 26, DIM, "center")
            return
        a = (now * 4.0) % (2 * math.pi)  # spinner: a quarter arc turning
        rect = pygame.Rect(0, 0, 56, 56)
        rect.center = (cx, cy - 50)
        pygame.draw.circle(scr, PANEL, rect.center, 28, 6)
        pygame.draw.arc(scr, ACCENT, rect, a, a + math.pi / 2, 6)
        if self.counts.get("open"):
            line, sub = "loading the next pair…", ""
        else:
            line = "no pending pairs"
            sub = "waiting for the trainer to ask for labels" if not self.shared else ""
        self._text(line, (cx, cy + 6), 36, TEXT, "center")
        if sub:
            self._text(sub, (cx, cy + 40), 24, DIM, "center")

    def _draw_footer(self, now: float) -> None:
        import pygame

        scr = self.screen
        assert scr is not None
        w, h = scr.get_size()
        y = h - self.FOOTER_H
        pygame.draw.line(scr, PANEL, (0, y), (w, y), 2)
        legend = [
            (f"{self._key('←')} 1", "left better"), (f"{self._key('→')} 2", "right better"),
            (f"{self._key('↑')} E", "equal"), (f"{self._key('↓')} S", "can't tell"),
            ("Space", "replay"), ("Backspace", "undo"), ("Q Esc", "quit"),
        ]
        text = isinstance(self.current, PreparedText)
        if text:
            legend[4] = ("PgUp PgDn", "scroll")
        font = self._font(22)

        def width(items: list[tuple[str, str]]) -> int:
            return sum(font.size(k)[0] + font.size(d)[0] + 36 for k, d in items)

        if width(legend) > w - 2 * self.PAD:  # narrow window: short words, then a smaller font
            short = ["left", "right", "equal", "skip", "scroll" if text else "replay", "undo", "quit"]
            legend = [(k, s_) for (k, _), s_ in zip(legend, short)]
            legend[5] = ("Bksp", "undo")
            if text:
                legend[4] = ("PgDn", "scroll")
            if width(legend) > w - 2 * self.PAD:
                font = self._font(17)
        x = self.PAD
        for key, what in legend:
            ks = self._render(key, 22 if font is self._font(22) else 17, TEXT)
            chip = pygame.Rect(x, y + 10, ks.get_width() + 14, 24)
            pygame.draw.rect(scr, PANEL, chip, border_radius=5)
            scr.blit(ks, ks.get_rect(center=chip.center))
            r = self._text(what, (chip.right + 6, y + 14), 22 if font is self._font(22) else 17, DIM)
            x = r.right + 16
        if self.message is not None:
            text, color, until = self.message
            if now < until:
                self._text(text, (self.PAD, y + 40), 22, color)
            else:
                self.message = None
