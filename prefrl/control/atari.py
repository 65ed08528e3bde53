"""Atari environments for preference learning (Christiano et al. 2017, section 3.1.2 and appendix A.2).

Stack (bottom to top), built by ``make_atari_env`` for ``[env] type = "atari"``::

    gymnasium.make("ALE/Pong-v5", frameskip=1)   # ROMs ship inside ale-py; sticky actions (p = 0.25) as in v5
    AtariPreprocessing                            # no-op starts, frame skip 4 (max of the last 2 frames),
                                                  # 84x84 grayscale; terminal_on_life_loss=False: no life-loss signal
    HUDMaskWrapper                                # the score area (and BeamRider's enemy count, Enduro's
                                                  # dashboard) set to 0, so the reward model cannot read the score
    FrameStackObservation(4)                      # obs (4, 84, 84) uint8, channel-first: SB3's CnnPolicy takes
                                                  # it as is (no VecTransposeImage)

``prefrl.control.envs.make_env_fn`` then adds the episode handling of the preset (the Atari
presets use ``episode = "truncate"``: a game over ends the episode as a *truncation*, so
PPO bootstraps through it and the agent gets no episode-end signal), the optional
``info["frame"]`` RGB frames (210x160x3, the unmasked screen, for the viewer and videos)
and ``Monitor``. Everything above sits beneath ``LearnedRewardVecEnv``, so the reward model
reads exactly the masked, stacked frames the policy reads.

Options come from the preset's ``[env.atari]`` table (``AtariOptions``); unknown keys are
refused with the close matches.

Note:
    The masks are rectangles in native 210x160 screen pixels (``HUD_MASKS``), measured on
    frames of random play: every pixel row or column of the 84x84 observation that the
    rectangle touches is blanked. Masking happens in the observation, so the policy does
    not see the score either (the paper blanked the score on the screen both read).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from prefrl.core.types import PrefrlError

Rect = tuple[int, int, int, int]
"""(top, bottom, left, right) in native 210x160 screen pixels, bottom/right exclusive."""

NATIVE_SHAPE = (210, 160)

HUD_MASKS: dict[str, tuple[Rect, ...]] = {
    # Score digits, rows 1-20; the white wall starts at row 24.
    "pong": ((0, 22, 0, 160),),
    # Score, lives and player digits, rows 5-14; the grey wall starts at row 17.
    "breakout": ((0, 17, 0, 160),),
    # Score (rows 10-18), sector (21-29) and the enemy-ship count (32-40, paper: blanked too);
    # the first beam is at row 41.
    "beam_rider": ((0, 41, 0, 160),),
    # The dashboard under the road (odometer, day, cars left to pass; the paper's "speedometer").
    "enduro": ((156, 210, 0, 160),),
    # Score digits, rows 6-12, columns 34-70; Q*bert himself reaches row 12 right of column 72
    # and the lives icons below stay visible.
    "qbert": ((0, 13, 0, 72),),
    # Score digits, rows 9-16; the lives icons (rows 22-29) stay visible.
    "seaquest": ((0, 18, 0, 160),),
    # Both players' scores, rows 10-19 (this also hides the mothership, which flies along that band).
    "space_invaders": ((0, 20, 0, 160),),
}
"""Christiano's seven games: the HUD rectangles blanked for the reward model."""


@dataclass(frozen=True)
class AtariOptions:
    """The preset's ``[env.atari]`` table."""

    frame_skip: int = 4
    """Emulator frames per agent step (max-pooled over the last two); 4 gives 15 agent steps per second."""
    screen_size: int = 84
    """Observation width and height (grayscale)."""
    frame_stack: int = 4
    """Frames stacked in each observation (channel-first)."""
    noop_max: int = 30
    """Up to this many no-op steps after each reset (Mnih et al. 2015)."""
    mask: str | list = "auto"
    """`auto`: the game's HUD table (HUD_MASKS); `none`; or a list of [top, bottom, left, right]
    rectangles in native 210x160 pixels."""

    def __post_init__(self) -> None:
        for name in ("frame_skip", "screen_size", "frame_stack"):
            if int(getattr(self, name)) < 1:
                raise PrefrlError(f"[env.atari] `{name}` must be >= 1, got {getattr(self, name)}")
        if self.noop_max < 0:
            raise PrefrlError(f"[env.atari] `noop_max` must be >= 0, got {self.noop_max}")
        if isinstance(self.mask, str):
            if self.mask not in ("auto", "none"):
                raise PrefrlError(f"[env.atari] `mask` must be `auto`, `none` or a list of [top, bottom, left, right], got `{self.mask}`")
        else:
            for r in self.mask:
                if not (isinstance(r, (list, tuple)) and len(r) == 4 and all(isinstance(v, int) for v in r)):
                    raise PrefrlError(f"[env.atari] `mask` rectangles are [top, bottom, left, right] integers, got {r!r}")
                top, bottom, left, right = r
                if not (0 <= top < bottom <= NATIVE_SHAPE[0] and 0 <= left < right <= NATIVE_SHAPE[1]):
                    raise PrefrlError(f"[env.atari] `mask` rectangle {list(r)} is outside the 210x160 screen or empty")

    @staticmethod
    def from_dict(d: dict) -> AtariOptions:
        fields = [f.name for f in dataclasses.fields(AtariOptions)]
        for key in d:
            if key not in fields:
                close = difflib.get_close_matches(key, fields, n=3)
                hint = f"; did you mean {', '.join(f'`{c}`' for c in close)}?" if close else ""
                raise PrefrlError(f"[env.atari]: unknown key `{key}` (known: {', '.join(fields)}){hint}")
        return AtariOptions(**d)


def game_name(env_id: str) -> str:
    """`ALE/BeamRider-v5` -> `beam_rider` (ale-py's ROM name)."""
    name = env_id.split("/")[-1]
    name = re.sub(r"(NoFrameskip)?-v\d+$", "", name)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def mask_rects(env_id: str, opts: AtariOptions) -> tuple[Rect, ...]:
    """The rectangles to blank for this game under these options."""
    if opts.mask == "none":
        return ()
    if opts.mask == "auto":
        if game_name(env_id) not in HUD_MASKS:
            import warnings

            warnings.warn(f"no HUD mask is known for `{env_id}`: the reward model can read its score "
                          f"(set [env.atari] mask to a list of [top, bottom, left, right] rectangles)", stacklevel=2)
        return HUD_MASKS.get(game_name(env_id), ())
    return tuple(tuple(r) for r in opts.mask)  # type: ignore[misc]


def obs_mask(rects: tuple[Rect, ...], size: int) -> np.ndarray:
    """(size, size) bool: observation pixels that any native rectangle touches (True = blanked).

    The observation is the native screen resized with ``cv2.INTER_AREA`` (AtariPreprocessing);
    a pixel is blanked when any native pixel inside a rectangle contributes to it.
    """
    import cv2

    native = np.ones(NATIVE_SHAPE, np.float32)
    for top, bottom, left, right in rects:
        native[top:bottom, left:right] = 0.0
    small = cv2.resize(native, (size, size), interpolation=cv2.INTER_AREA)
    return small < 1.0 - 1e-6


class HUDMaskWrapper(gym.ObservationWrapper):
    """Set the HUD pixels of each (H, W) grayscale observation to 0 (Christiano et al. 2017, A.2).

    Args:
        env: an env whose observations are (H, W) uint8 frames.
        mask: (H, W) bool, True where the observation is blanked.
    """

    def __init__(self, env: gym.Env, mask: np.ndarray):
        super().__init__(env)
        if tuple(mask.shape) != tuple(env.observation_space.shape):
            raise PrefrlError(f"HUD mask of shape {mask.shape} does not fit observations of shape {env.observation_space.shape}")
        self.mask = mask
        self._keep = (~mask).astype(np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation * self._keep  # a new array: the env's buffer is never written


def make_atari_env(cfg, render: bool = False) -> gym.Env:
    """One preprocessed, masked, frame-stacked Atari env for an ``EnvConfig`` of type `atari`.

    Args:
        cfg: the preset's ``EnvConfig`` (``id``, ``make_kwargs``, ``atari`` options).
        render: build with ``render_mode="rgb_array"`` so ``env.render()`` gives 210x160x3 frames.

    Returns:
        The env: observations (frame_stack, screen_size, screen_size) uint8, Discrete actions.

    Raises:
        PrefrlError: unknown env id (with close matches) or bad ``[env.atari]`` options.
    """
    import ale_py

    gym.register_envs(ale_py)
    opts = AtariOptions.from_dict(dict(cfg.atari))
    kwargs = dict(cfg.make_kwargs)
    for key in ("frameskip", "render_mode"):
        if key in kwargs:
            raise PrefrlError(f"[env] make_kwargs: `{key}` is set by prefrl for Atari (use [env.atari] frame_skip / keep_frames)")
    kwargs["frameskip"] = 1  # AtariPreprocessing skips frames (and max-pools the last two)
    if render:
        kwargs["render_mode"] = "rgb_array"
    if cfg.max_episode_steps is not None:
        kwargs["max_episode_steps"] = cfg.max_episode_steps
    try:
        env = gym.make(cfg.id, **kwargs)
    except gym.error.Error as e:
        ale_ids = [k for k in gym.registry if k.startswith("ALE/")]
        close = difflib.get_close_matches(cfg.id, ale_ids, n=3)
        hint = f"; did you mean {', '.join(f'`{c}`' for c in close)}?" if close else ""
        raise PrefrlError(f"cannot make Atari env `{cfg.id}`: {e}{hint}") from e
    env = gym.wrappers.AtariPreprocessing(
        env, noop_max=opts.noop_max, frame_skip=opts.frame_skip, screen_size=opts.screen_size,
        terminal_on_life_loss=False, grayscale_obs=True, scale_obs=False,
    )
    rects = mask_rects(cfg.id, opts)
    if rects:
        env = HUDMaskWrapper(env, obs_mask(rects, opts.screen_size))
    return gym.wrappers.FrameStackObservation(env, opts.frame_stack)


def clip_nbytes(opts: AtariOptions, clip_length: int, keep_frames: bool) -> int:
    """Bytes one clip takes in the clip pool: uint8 obs, int64 actions, float32 true rewards, RGB frames when kept.

    With the defaults and 25-step clips: 705,900 bytes (obs 25 x 4 x 84 x 84 = 705,600), and
    3,225,900 with the 210x160x3 frames kept for the viewer and videos.
    """
    obs = clip_length * opts.frame_stack * opts.screen_size**2
    frames = clip_length * NATIVE_SHAPE[0] * NATIVE_SHAPE[1] * 3 if keep_frames else 0
    return obs + frames + clip_length * (8 + 4)


def pair_frames(left: np.ndarray, right: np.ndarray, label: float | None, scale: int = 2, gap: int = 8) -> np.ndarray:
    """Two clips side by side, the preferred one framed in green (both in grey when equal, red when skipped).

    Args:
        left: (T, H, W, 3) uint8 RGB frames, or (T, C, H, W) / (T, H, W) uint8 observations
            (the last stacked frame is shown in grey: what the reward model reads).
        right: the same for the right clip.
        label: P(left preferred): 1.0, 0.0, 0.5 (equal) or None (skip).
        scale: integer upscaling (nearest neighbour keeps Atari pixels sharp).
        gap: pixels between the two panels.

    Returns:
        (T, H', W', 3) uint8 frames.
    """
    a, b = _as_rgb(left), _as_rgb(right)
    if a.shape != b.shape:
        raise PrefrlError(f"clips of a pair need the same frame shape, got {a.shape} and {b.shape}")
    a = a.repeat(scale, axis=1).repeat(scale, axis=2)
    b = b.repeat(scale, axis=1).repeat(scale, axis=2)
    green, grey, red = np.array([40, 200, 60], np.uint8), np.array([128, 128, 128], np.uint8), np.array([200, 40, 40], np.uint8)
    if label is None or np.isnan(label):
        colours = (red, red)
    elif label == 0.5:
        colours = (grey, grey)
    else:
        colours = (green, np.zeros(3, np.uint8)) if label > 0.5 else (np.zeros(3, np.uint8), green)
    t, h, w, _ = a.shape
    border = 4
    out_h, out_w = h + 2 * border, 2 * (w + 2 * border) + gap
    out_h, out_w = -(-out_h // 8) * 8, -(-out_w // 8) * 8  # multiples of 8: H.264 encoders need no resize
    out = np.zeros((t, out_h, out_w, 3), np.uint8)  # (T, H', W', 3)
    for k, (clip, colour) in enumerate(((a, colours[0]), (b, colours[1]))):
        x0 = k * (w + 2 * border + gap)
        out[:, :, x0 : x0 + w + 2 * border] = colour
        out[:, border : border + h, x0 + border : x0 + border + w] = clip
    return out


def _as_rgb(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) RGB as is; (T, C, H, W) stacked obs -> last frame; (T, H, W) grey -> RGB."""
    frames = np.asarray(frames)
    if frames.ndim == 4 and frames.shape[-1] == 3:
        return frames.astype(np.uint8, copy=False)
    if frames.ndim == 4:
        frames = frames[:, -1]  # (T, H, W): the newest frame of each stack
    if frames.ndim != 3:
        raise PrefrlError(f"cannot show frames of shape {frames.shape} (expected (T, H, W, 3), (T, C, H, W) or (T, H, W))")
    return np.repeat(frames[..., None], 3, axis=-1).astype(np.uint8, copy=False)


def write_pair_video(path, left: np.ndarray, right: np.ndarray, label: float | None, fps: float = 15.0,
                     scale: int = 2):
    """Write a side-by-side MP4 of a labeled pair (``pair_frames``) with imageio; returns the path."""
    from prefrl.viz import write_video

    return write_video(path, pair_frames(left, right, label, scale=scale), fps=fps)
