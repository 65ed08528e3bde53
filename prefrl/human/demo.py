"""Stores to try the viewer on without a training run (tests, benchmark, screenshots).

``synthetic_frames`` draws a ball moving across a tinted background, with toy clips
underneath (so a reward model can train on the same store); ``mujoco_frames`` renders
real MuJoCo rollouts (needs ``MUJOCO_GL=egl`` or a display).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prefrl.core.rundir import Meta
from prefrl.core.store import PreferenceStore
from prefrl.core.toy import toy_clips
from prefrl.core.types import Clips


def synthetic_frames(n: int, length: int, size: tuple[int, int] = (96, 128), seed: int = 0) -> np.ndarray:
    """(n, length, H, W, 3) uint8: per clip, a ball crossing a tinted background.

    Args:
        size: (H, W) of a frame, e.g. (210, 160) like Atari or (480, 480) like MuJoCo renders.
    """
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]  # (H, W)
    out = np.empty((n, length, h, w, 3), np.uint8)
    for i in range(n):
        tint = rng.integers(40, 200, 3)
        bg = (tint[None, None, :] * (0.5 + 0.5 * yy[..., None] / h)).astype(np.uint8)  # (H, W, 3)
        x0, y0 = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        vx, vy = rng.normal(0, 0.02 * w), rng.normal(0, 0.02 * h)
        r2 = (0.08 * min(h, w)) ** 2
        for t in range(length):
            frame = bg.copy()
            cx, cy = (x0 + vx * t) % w, (y0 + vy * t) % h
            frame[(xx - cx) ** 2 + (yy - cy) ** 2 < r2] = (250, 250, 250)
            out[i, t] = frame
    return out


def synthetic_clips(n: int, length: int = 20, size: tuple[int, int] = (96, 128), seed: int = 0) -> Clips:
    """Toy clips (known reward) with synthetic frames."""
    c = toy_clips(n, length=length, seed=seed)
    return Clips(c.obs, c.acts, c.true_rew, synthetic_frames(n, length, size, seed))


def mujoco_clips(env_id: str, n: int, length: int, size: tuple[int, int] = (240, 320), seed: int = 0) -> Clips:
    """Clips of a random policy in a MuJoCo env with rendered frames (slow: software GL)."""
    import gymnasium as gym

    env = gym.make(env_id, render_mode="rgb_array", height=size[0], width=size[1])
    obs_l, act_l, rew_l, fr_l = [], [], [], []
    o, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    for _ in range(n):
        obs, acts, rews, frames = [], [], [], []
        for _ in range(length):
            a = env.action_space.sample()
            frames.append(env.render())
            o2, r, term, trunc, _ = env.step(a)
            obs.append(o)
            acts.append(a)
            rews.append(r)
            o = o2
            if term or trunc:
                o, _ = env.reset()
        obs_l.append(obs)
        act_l.append(acts)
        rew_l.append(rews)
        fr_l.append(frames)
    env.close()
    return Clips(
        np.asarray(obs_l, np.float32), np.asarray(act_l, np.float32), np.asarray(rew_l, np.float32),
        np.asarray(fr_l, np.uint8),
    )


def make_demo_store(
    root: str | Path,
    n_queries: int,
    clips: Clips | None = None,
    label_budget: int | None = None,
    status: str = "running",
    seed: int = 0,
) -> tuple[PreferenceStore, list[int]]:
    """A store laid out like a run waiting for human labels: clips with frames and queued pairs.

    Returns:
        the open store and the ids of the queued queries (best score first).
    """
    clips = clips if clips is not None else synthetic_clips(2 * n_queries, seed=seed)
    store = PreferenceStore(root)
    ids = np.array(store.add_clips(clips, keep_frames=True))
    rng = np.random.default_rng(seed)
    pairs = np.array([rng.choice(ids, 2, replace=False) for _ in range(n_queries)]).reshape(-1, 2)  # (Q, 2)
    scores = np.linspace(1.0, 0.0, len(pairs))
    qids = store.add_queries(pairs, scores)
    store.set_meta(Meta.LABEL_BUDGET.value, label_budget if label_budget is not None else n_queries)
    store.set_meta(Meta.STATUS.value, status)
    return store, qids


def screenshot(out: str | Path, env_id: str = "HalfCheetah-v5", size: tuple[int, int] = (1100, 560)) -> Path:
    """Open the real viewer on MuJoCo clips, judge one pair, and save the window as a PNG.

    Run under a display (``xvfb-run python -m prefrl.human.demo --screenshot videos/viewer_screenshot.png``).
    """
    import tempfile
    import time

    import pygame

    from prefrl.human.scripted import post_key
    from prefrl.human.viewer import Viewer, ViewerConfig

    root = Path(tempfile.mkdtemp(prefix="prefrl_shot_")) / "halfcheetah-human"
    clips = mujoco_clips(env_id, 8, 30, size=(256, 256), seed=1)
    store, _ = make_demo_store(root, 6, clips=clips, label_budget=40)
    store.close()
    with Viewer(root, "alice", cfg=ViewerConfig(width=size[0], height=size[1], clip_fps=20)) as v:
        end = time.monotonic() + 20
        while (v.current is None or v.prefetcher.n_ready() == 0) and time.monotonic() < end:
            v.step(wait=True)
        post_key("left")
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.9:  # the next pair plays a little
            v.step(wait=True)
        pygame.image.save(v.screen, str(out))
        print(f"driver {pygame.display.get_driver()}, window {v.screen.get_size()} -> {out}")
    return Path(out)


REVIEWS = [
    ("The hotel room was", " spotless, quiet and bright. The staff upgraded us without being asked and the breakfast "
     "buffet had fresh fruit, good coffee and warm pastries every morning. We would happily stay here again.",
     " small. The air conditioning rattled all night, the towels were thin and the front desk took an hour to answer "
     "the phone. It was fine for one night, but not for the price."),
    ("Our waiter", " was friendly and quick, and the pasta was perfect.", " forgot our order twice."),
    ("The battery of this phone", " lasts two full days.", " died by lunchtime, every day."),
    ("The second season", " is even better than the first: sharper writing and a great cast.", " drags; I stopped after three episodes."),
]
"""(prompt, a positive completion, a negative completion): text pairs for the viewer's demos and screenshot."""


def make_text_store(root: str | Path, reviews: list[tuple[str, str, str]] | None = None, seed: int = 0) -> PreferenceStore:
    """A store of text pairs judged by a scripted oracle, as ``prefrl text label`` leaves it.

    Each review gives a prompt and two completions (item scores +1 and -1, the positive one on a
    random side); the pair is judged with ``source`` ``demo/synthetic`` (the higher score wins).
    """
    rng = np.random.default_rng(seed)
    store = PreferenceStore(root)
    for prompt, good, bad in reviews or REVIEWS:
        flip = bool(rng.integers(2))
        comps, scores = ([bad, good], [-1.0, 1.0]) if flip else ([good, bad], [1.0, -1.0])
        ids = store.add_texts([prompt, prompt], comps, scores)
        store.add_judgments(np.array([ids]), np.array([0.0 if flip else 1.0]), source="demo/synthetic")
    return store


def text_screenshot(out: str | Path, size: tuple[int, int] = (1000, 560)) -> Path:
    """Open the real viewer on text pairs (a labels store, as ``prefrl label --dataset`` makes) and save it as a PNG.

    Headless: ``SDL_VIDEODRIVER=dummy python -m prefrl.human.demo --text-screenshot docs/text_viewer.png``.
    """
    import tempfile
    import time

    import pygame

    from prefrl.human.dataset import open_dataset_store
    from prefrl.human.viewer import Viewer, ViewerConfig

    tmp = Path(tempfile.mkdtemp(prefix="prefrl_text_shot_"))
    make_text_store(tmp / "prefs").close()
    root = open_dataset_store(tmp / "prefs")
    with Viewer(root, "alice", shared=True, cfg=ViewerConfig(width=size[0], height=size[1])) as v:
        end = time.monotonic() + 20
        while (v.current is None or v.shown_at is None) and time.monotonic() < end:
            v.step(wait=True)
        v.step()
        pygame.image.save(v.screen, str(out))
        print(f"driver {pygame.display.get_driver()}, window {v.screen.get_size()} -> {out}")
    return Path(out)


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description="viewer demo helpers")
    p.add_argument("--screenshot", type=Path, help="PNG of the viewer on MuJoCo clips")
    p.add_argument("--text-screenshot", type=Path, help="PNG of the viewer on text pairs")
    a = p.parse_args()
    if a.screenshot is None and a.text_screenshot is None:
        p.error("give --screenshot or --text-screenshot")
    if a.screenshot is not None:
        screenshot(a.screenshot)
    if a.text_screenshot is not None:
        text_screenshot(a.text_screenshot)
