"""Re-run a saved agent on the true reward, optionally writing an MP4 with imageio."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from prefrl.types import PrefrlError

VIDEO_FPS_TARGET = 30


def load_run_config(run_dir: Path):
    from prefrl.rl.train import RunConfig

    path = run_dir / "config.json"
    if not path.is_file():
        raise PrefrlError(f"{run_dir}: not a prefrl run directory (no config.json)")
    try:
        return RunConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, KeyError) as e:
        raise PrefrlError(f"{path}: unreadable run config ({e})") from e


def evaluate_run(run_dir: str | Path, episodes: int = 5, video: bool = False, video_path: str | Path | None = None,
                 deterministic: bool = True) -> dict:
    """Run the saved agent for ``episodes`` episodes; returns true returns (and the video path).

    The policy sees observations normalised with the statistics saved at training time.
    The video shows the first episode (frames subsampled to ~30 fps of real time).
    """
    from stable_baselines3.common.vec_env import VecNormalize

    from prefrl.rl.envs import env_dt, make_vec_env
    from prefrl.rl.train import _set_vecnorm_state, build_ppo, load_agent_checkpoint
    from prefrl.utils import set_torch_threads

    set_torch_threads()
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    ckpt = load_agent_checkpoint(run_dir / "agent.pt")
    env_cfg = dataclasses.replace(cfg.task.env, n_envs=1, render_size=max(cfg.task.env.render_size, 256))
    venv = make_vec_env(env_cfg, cfg.seed + 20_000, render=video)
    env = venv
    if ckpt["vecnorm"] is not None:
        env = VecNormalize(venv, norm_obs=cfg.task.env.normalize_obs, norm_reward=False, training=False)
        _set_vecnorm_state(env, ckpt["vecnorm"])
    model = build_ppo(cfg, env, None)
    model.policy.load_state_dict(ckpt["policy"])
    returns, frames = [], []
    obs = env.reset()
    max_steps = 100_000 * episodes  # guard: an env that never ends must not run (and buffer frames) forever
    for _ in range(max_steps):
        if len(returns) >= episodes:
            break
        action, _ = model.predict(obs, deterministic=deterministic)
        obs, _, dones, infos = env.step(action)
        if video and not returns and "frame" in infos[0] and len(frames) < 5000:
            frames.append(infos[0]["frame"])
        if dones[0] and "episode" in infos[0]:
            returns.append(float(infos[0]["episode"]["r"]))
    env.close()
    if not returns:
        raise PrefrlError(f"{run_dir}: no episode ended within {max_steps} steps")
    out = {"returns": returns, "return_mean": float(np.mean(returns)), "return_std": float(np.std(returns))}
    if video and frames:
        path = Path(video_path) if video_path else run_dir / "videos" / "agent.mp4"
        dt = env_dt(env_cfg) or 1 / VIDEO_FPS_TARGET
        stride = max(1, int(round((1 / dt) / VIDEO_FPS_TARGET)))
        write_video(path, frames[::stride], fps=(1 / dt) / stride)
        out["video"] = str(path)
    return out


def write_video(path: str | Path, frames: list[np.ndarray] | np.ndarray, fps: float) -> Path:
    """Write RGB uint8 frames (T, H, W, 3) to an MP4 (H.264 via imageio-ffmpeg)."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with imageio.get_writer(path, fps=max(1.0, float(fps)), codec="libx264", quality=7, macro_block_size=8) as w:
        for f in frames:
            w.append_data(np.asarray(f, np.uint8))
    return path
