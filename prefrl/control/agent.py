"""The SB3 agent: building PPO from a preset, VecNormalize, and agent checkpoints.

``agent.pt`` is a plain dict of tensors and numbers (loads with ``weights_only=True``):
the policy and optimiser state dicts, the step count, the VecNormalize statistics and
the wall time so far.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from prefrl.control.tasks import EnvConfig, PPOConfig
from prefrl.core.types import PrefrlError

AGENT_FORMAT = "prefrl.agent/1"


def build_ppo(ppo: PPOConfig, env, seed: int, tb_dir: str | None = None):
    """SB3 PPO with the preset's hyperparameters on ``env`` (CPU, quiet)."""
    from stable_baselines3 import PPO

    policy_kwargs: dict = {"net_arch": list(ppo.net_arch)}
    if not hasattr(env.action_space, "n"):
        policy_kwargs["log_std_init"] = ppo.log_std_init
    return PPO(
        ppo.policy, env,
        n_steps=ppo.n_steps, batch_size=ppo.batch_size, n_epochs=ppo.n_epochs, learning_rate=ppo.learning_rate,
        gamma=ppo.gamma, gae_lambda=ppo.gae_lambda, clip_range=ppo.clip_range, ent_coef=ppo.ent_coef,
        vf_coef=ppo.vf_coef, max_grad_norm=ppo.max_grad_norm, policy_kwargs=policy_kwargs,
        seed=seed, tensorboard_log=tb_dir, verbose=0, device="cpu",
    )


def wrap_normalize(env_cfg: EnvConfig, venv, gamma: float):
    """VecNormalize as the preset says (observations and/or the reward PPO sees), or ``venv`` as is."""
    from stable_baselines3.common.vec_env import VecNormalize

    if not (env_cfg.normalize_obs or env_cfg.normalize_reward):
        return venv
    return VecNormalize(venv, norm_obs=env_cfg.normalize_obs, norm_reward=env_cfg.normalize_reward, gamma=gamma)


def vecnorm_state(env) -> dict | None:
    from stable_baselines3.common.vec_env import VecNormalize

    if not isinstance(env, VecNormalize):
        return None
    out = {}
    for name in ("obs_rms", "ret_rms"):
        rms = getattr(env, name)
        out[name] = {"mean": torch.as_tensor(np.asarray(rms.mean, np.float64)),
                     "var": torch.as_tensor(np.asarray(rms.var, np.float64)), "count": float(rms.count)}
    return out


def set_vecnorm_state(env, state: dict | None) -> None:
    if state is None or not hasattr(env, "obs_rms"):
        return
    for name in ("obs_rms", "ret_rms"):
        rms = getattr(env, name)
        rms.mean = state[name]["mean"].numpy()
        rms.var = state[name]["var"].numpy()
        rms.count = state[name]["count"]


def save_agent(path: Path, model, env, wall_s: float) -> None:
    """Write ``agent.pt`` atomically."""
    ckpt = {
        "format": AGENT_FORMAT,
        "policy": model.policy.state_dict(),
        "optimizer": model.policy.optimizer.state_dict(),
        "num_timesteps": int(model.num_timesteps),
        "vecnorm": vecnorm_state(env),
        "wall_s": float(wall_s),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)


def load_agent_checkpoint(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise PrefrlError(f"{path}: no agent checkpoint (was the run started?)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PrefrlError(f"{path}: unreadable agent checkpoint ({type(e).__name__})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != AGENT_FORMAT:
        raise PrefrlError(f"{path}: not a prefrl agent checkpoint (format {ckpt.get('format') if isinstance(ckpt, dict) else None})")
    return ckpt


def restore_agent(model, env, ckpt: dict) -> None:
    """Load a checkpoint's policy, optimiser, step count and VecNormalize statistics into ``model``/``env``."""
    model.policy.load_state_dict(ckpt["policy"])
    model.policy.optimizer.load_state_dict(ckpt["optimizer"])
    set_vecnorm_state(env, ckpt["vecnorm"])
    model.num_timesteps = ckpt["num_timesteps"]
    model._last_obs = None  # re-reset the env at learn()
