"""Benchmark the labelling viewer: keypress -> next pair on screen, and playback frame rate.

Runs the real viewer loop (``Viewer.step(wait=True)``, as ``prefrl label`` does) on a
store of clips with frames; a second thread presses keys (``pygame.event.post``) at
random moments, as a person would, and each latency runs from that post to the end
of the flip that first shows the next pair. Targets: < 50 ms and 60 fps.

    # real X server (Debian's xvfb), the window's pixels really go to a display
    xvfb-run -s "-screen 0 1920x1080x24" .venv/bin/python scripts/bench_viewer.py
    # no X at all
    SDL_VIDEODRIVER=dummy .venv/bin/python scripts/bench_viewer.py

Frames are synthetic (a ball on a gradient) at --frame-size, or real MuJoCo renders
with --mujoco (slow to produce on a CPU-only machine). With --text the pairs are text
items instead (a prompt and two review continuations of 20-60 words, wrapped when first
shown): nothing plays, so only the key latency and the work per drawn frame are timed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

from prefrl.core.store import PreferenceStore  # noqa: E402
from prefrl.human.demo import REVIEWS, make_demo_store, mujoco_clips, synthetic_clips  # noqa: E402
from prefrl.human.scripted import post_key  # noqa: E402
from prefrl.human.viewer import Viewer, ViewerConfig  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def bench(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench_viewer_"))
    n_clips = 2 * args.pairs
    if args.text:
        make_text_queries(tmp / "run", args.pairs)
    elif args.mujoco:
        clips = mujoco_clips("InvertedPendulum-v5", n_clips, args.length, (args.frame_size, args.frame_size))
    else:
        clips = synthetic_clips(n_clips, args.length, (args.frame_size, args.frame_size))
    if not args.text:
        store, _ = make_demo_store(tmp / "run", args.pairs, clips=clips, label_budget=args.pairs)
        store.close()
    # no pause at the loop point: every display frame during playback shows a new clip frame
    cfg = ViewerConfig(width=args.width, height=args.height, fps=args.fps, clip_fps=args.clip_fps, hold_s=0.0,
                       linger_s=0.0)
    v = Viewer(tmp / "run", "bench", cfg=cfg).open()
    import pygame

    # 1) playback: one pair on screen, nothing pressed
    while v.current is None or v.prefetcher.n_ready() < 1:
        v.step(wait=True)
    f0, t0 = v.frames_drawn, time.perf_counter()
    n_draw0 = len(v.draw_times)
    while time.perf_counter() - t0 < (0 if args.text else args.play_s):
        v.step(wait=True)
    fps = (v.frames_drawn - f0) / (time.perf_counter() - t0) if not args.text else None
    draw = list(v.draw_times)[n_draw0:]

    # 2) keypress -> next pair: a thread presses a key at a random moment while a pair plays
    posts: list[float] = []
    stop = threading.Event()
    n_keys = min(args.keys, args.pairs - 2)

    def person() -> None:
        rng = random.Random(0)
        for _ in range(n_keys):
            time.sleep(args.think_s * rng.uniform(0.7, 1.3))
            if stop.is_set():
                return
            posts.append(time.perf_counter())
            post_key(rng.choice(["left", "right", "equal", "skip"]))

    commit: list[float] = []  # time of each store write (committed, fsync'ed) inside the latency
    not_ready: list[int] = []  # keys pressed before the next pair was prepared
    add = v.store.add_judgment

    def timed_add(*a, **kw):
        not_ready.append(int(v.prefetcher.n_ready() == 0))
        t = time.perf_counter()
        out = add(*a, **kw)
        commit.append(time.perf_counter() - t)
        return out

    v.store.add_judgment = timed_add  # type: ignore[method-assign]
    shown0, keys0 = len(v.pair_shown_times), len(v.key_times)
    th = threading.Thread(target=person, daemon=True)
    th.start()
    end = time.perf_counter() + n_keys * args.think_s * 1.5 + 10
    while len(v.judged) < n_keys and time.perf_counter() < end:
        v.step(wait=True)
    for _ in range(3):
        v.step(wait=True)
    stop.set()
    if args.text:  # nothing plays: the frames drawn are those of new pairs (layout and wrapping included)
        draw = list(v.draw_times)[n_draw0:]
    shown = v.pair_shown_times[shown0:]
    lat, wait = [], []
    handled = v.key_times[keys0:]
    for p in posts:
        after = [s for s in shown if s > p]
        if after:
            lat.append(after[0] - p)
        h = [k for k in handled if k >= p]
        if h:
            wait.append(h[0] - p)
    prep = list(v.prefetcher.prep_times)
    res = {
        "load_average_1min": round(os.getloadavg()[0], 2),
        "driver": pygame.display.get_driver(),
        "window": list(v.screen.get_size()),
        "frames": f"{args.pairs} text pairs" if args.text else
        f"{args.pairs * 2} clips x {args.length} steps of {args.frame_size}x{args.frame_size}"
        + (" MuJoCo" if args.mujoco else " synthetic"),
        "panel": list(v._box),
        "playback_fps": None if fps is None else round(fps, 1),  # flips per second, each a new clip frame at clip_fps 60
        "frame_work_ms_mean": round(1000 * float(np.mean(draw)), 2),
        "frame_work_ms_p99": round(1000 * pct(draw, 99), 2),
        "keys": len(lat),
        "key_to_next_pair_ms_median": round(1000 * pct(lat, 50), 1),
        "key_to_next_pair_ms_p95": round(1000 * pct(lat, 95), 1),
        "key_to_next_pair_ms_max": round(1000 * max(lat), 1) if lat else None,
        "key_post_to_handled_ms_median": round(1000 * pct(wait, 50), 1),
        "store_commit_ms_median": round(1000 * pct(commit, 50), 1),
        "store_commit_ms_max": round(1000 * max(commit), 1) if commit else None,
        "keys_before_next_pair_ready": sum(not_ready),
        "prepare_pair_ms_median": round(1000 * pct(prep, 50), 1),
        "judgments_saved": len(v.judged),
    }
    v.close()
    return res


def make_text_queries(root: Path, pairs: int) -> None:
    """A run's store of ``pairs`` pending text pairs (review continuations of 20-60 words)."""
    rng = np.random.default_rng(0)
    words = " ".join(g + b for _, g, b in REVIEWS).split()
    with PreferenceStore(root) as store:
        ids = []
        for i in range(pairs):
            prompt = f"{REVIEWS[i % len(REVIEWS)][0]} (review {i})"
            comps = [" " + " ".join(rng.choice(words, int(rng.integers(20, 60)))) for _ in (0, 1)]
            ids.append(store.add_texts([prompt, prompt], comps))
        store.add_queries(np.array(ids), np.linspace(1.0, 0.0, pairs))
        store.set_meta("label_budget", pairs)
        store.set_meta("status", "running")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", type=int, default=24)
    p.add_argument("--keys", type=int, default=20, help="key presses to time")
    p.add_argument("--think-s", type=float, default=0.6, help="mean time a pair plays before its key")
    p.add_argument("--length", type=int, default=25, help="steps per clip (quick preset: 25)")
    p.add_argument("--frame-size", type=int, default=128, help="rendered frame side (tasks' render_size: 128)")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--fps", type=float, default=60.0)
    p.add_argument("--clip-fps", type=float, default=60.0,
                   help="clip playback speed; 60 makes every display frame a new clip frame")
    p.add_argument("--play-s", type=float, default=5.0, help="seconds of playback to time")
    p.add_argument("--mujoco", action="store_true", help="real InvertedPendulum renders (needs MUJOCO_GL=egl)")
    p.add_argument("--text", action="store_true", help="pairs of text items instead of clips")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()
    res = bench(args)
    for k, val in res.items():
        print(f"{k:28s} {val}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
