"""Re-run a saved agent on the true reward, optionally writing an MP4 with imageio."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from prefrl.control.agent import (
    build_ppo,
    build_sac_for_eval,
    load_agent_checkpoint,
    load_sac_checkpoint,
    set_vecnorm_state,
)
from prefrl.control.config import RunConfig, load_run_config
from prefrl.core.rundir import Meta, RunDir
from prefrl.core.types import PrefrlError
from prefrl.viz import write_video

VIDEO_FPS_TARGET = 30


def open_agent(run_dir: str | Path, seed_offset: int = 20_000, render: bool = False, wrap=None):
    """The saved agent of a run on a fresh single env: ``(cfg, env, model)``.

    The policy sees observations normalised with the statistics saved at training time
    (VecNormalize frozen, rewards untouched). ``wrap`` may wrap the raw vector env first
    (beneath VecNormalize), e.g. a clip collector.
    """
    from stable_baselines3.common.vec_env import VecNormalize

    from prefrl.control.envs import make_vec_env
    from prefrl.core.utils import set_torch_threads, tune_malloc

    set_torch_threads()
    tune_malloc()
    cfg = load_run_config(run_dir)
    rd = RunDir(run_dir)
    sac = cfg.task.algo == "sac"  # PEBBLE: a SAC agent.pt
    if sac:
        ckpt = load_sac_checkpoint(rd.agent)
    else:
        ckpt = load_agent_checkpoint(rd.agent)
    env_cfg = dataclasses.replace(cfg.task.env, n_envs=1, render_size=max(cfg.task.env.render_size, 256))
    venv = make_vec_env(env_cfg, cfg.seed + seed_offset, render=render)
    env = wrap(venv) if wrap is not None else venv
    if ckpt["vecnorm"] is not None:
        env = VecNormalize(env, norm_obs=cfg.task.env.normalize_obs, norm_reward=False, training=False)
        set_vecnorm_state(env, ckpt["vecnorm"])
    if sac:
        model = build_sac_for_eval(cfg.task.sac, env, cfg.seed, ckpt)
    else:
        model = build_ppo(cfg.task.ppo, env, cfg.seed)
        model.policy.load_state_dict(ckpt["policy"])
    return cfg, env, model


def evaluate_run(run_dir: str | Path, episodes: int = 5, video: bool = False, video_path: str | Path | None = None,
                 deterministic: bool = True) -> dict:
    """Run the saved agent for ``episodes`` episodes; returns true returns (and the video path).

    The policy sees observations normalised with the statistics saved at training time.
    The video shows the first episode (frames subsampled to ~30 fps of real time).
    """
    from prefrl.control.envs import env_dt

    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise PrefrlError(f"`--episodes` must be an integer >= 1, got {episodes!r}")
    run_dir = Path(run_dir)
    rd = RunDir(run_dir)
    cfg, env, model = open_agent(run_dir, render=video)
    env_cfg = cfg.task.env
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
        path = Path(video_path) if video_path else rd.video("agent")
        dt = env_dt(env_cfg) or 1 / VIDEO_FPS_TARGET
        stride = max(1, int(round((1 / dt) / VIDEO_FPS_TARGET)))
        write_video(path, frames[::stride], fps=(1 / dt) / stride)
        out["video"] = str(path)
    return out


def finish_arm(cfg: RunConfig, rd: RunDir, model, env, engine, store, wall: float, algo: str | None = None,
               monitor: dict | None = None) -> dict:
    """The end of one arm (PPO or SAC): summary.json, the store marked finished, the final evaluation.

    ``summary["labels"]`` is the number of judgments the saved reward model was fit on
    (``engine.labels_at_fit``), so the summary and the model always agree. ``monitor``: the
    reward-hacking monitor's block (``prefrl.control.monitor.MonitorCallback.summary``).
    """
    ep_true = [ep["r"] for ep in (model.ep_info_buffer or [])]  # None when a resume had no steps left
    learned = cfg.reward == "learned"
    summary = {
        "task": cfg.task.name,
        **({"algo": algo} if algo else {}),
        "reward": cfg.reward,
        "oracle": cfg.oracle if learned else None,
        "seed": cfg.seed,
        "timesteps": int(model.num_timesteps),
        "labels": engine.labels_at_fit if engine is not None else 0,
        "true_return_mean": float(np.mean(ep_true)) if ep_true else None,
        "wall_s": round(wall, 2),
    }
    if monitor is not None:
        summary["monitor"] = monitor
    if store is not None:
        store.set_meta(Meta.STATUS.value, "finished")
        store.cancel_pending()
        store.close()
    env.close()
    if cfg.eval_episodes > 0:
        ev = evaluate_run(rd.path, episodes=cfg.eval_episodes, video=cfg.video)
        summary["eval_return_mean"] = ev["return_mean"]
        if ev.get("video"):
            summary["video"] = ev["video"]
    rd.write_summary(summary)
    return summary
