"""The SB3 agents: building PPO and SAC from a preset, VecNormalize, and agent checkpoints.

``agent.pt`` is a plain dict of tensors, numbers and JSON strings with a format tag (loads
with ``weights_only=True``): for PPO the policy and optimiser state dicts, for SAC the actor,
critics, target critics, optimisers and entropy temperature (and PEBBLE's phase); both with
the step count, the VecNormalize statistics and the wall time so far.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from prefrl.control.tasks import EnvConfig, PPOConfig, SACConfig
from prefrl.core.types import PrefrlError

AGENT_FORMAT = "prefrl.agent/1"
SAC_AGENT_FORMAT = "prefrl.sac_agent/1"


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


def save_agent(path: Path, model, env, wall_s: float, monitor: dict | None = None) -> None:
    """Write ``agent.pt`` atomically; ``monitor``: the reward-hacking monitor's state (``MonitorCallback.state``)."""
    ckpt = {
        "format": AGENT_FORMAT,
        "policy": model.policy.state_dict(),
        "optimizer": model.policy.optimizer.state_dict(),
        "num_timesteps": int(model.num_timesteps),
        "vecnorm": vecnorm_state(env),
        "wall_s": float(wall_s),
        "monitor_json": json.dumps(monitor or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)


def load_agent_checkpoint(path: Path) -> dict:
    return _load_checkpoint(path, AGENT_FORMAT, "agent")


def _load_checkpoint(path: Path, fmt: str, what: str) -> dict:
    """A checkpoint dict loaded with ``weights_only=True``, refused unless its format tag is ``fmt``."""
    path = Path(path)
    if not path.is_file():
        raise PrefrlError(f"{path}: no agent checkpoint (was the run started?)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PrefrlError(f"{path}: unreadable agent checkpoint ({type(e).__name__})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != fmt:
        raise PrefrlError(f"{path}: not a prefrl {what} checkpoint (format {ckpt.get('format') if isinstance(ckpt, dict) else None})")
    return ckpt


def saved_monitor_state(ckpt: dict | None) -> dict:
    """The reward-hacking monitor's state in a checkpoint ({} if none, or from before it was saved)."""
    return json.loads(ckpt.get("monitor_json", "{}")) if ckpt is not None else {}


def restore_agent(model, env, ckpt: dict) -> None:
    """Load a checkpoint's policy, optimiser, step count and VecNormalize statistics into ``model``/``env``."""
    model.policy.load_state_dict(ckpt["policy"])
    model.policy.optimizer.load_state_dict(ckpt["optimizer"])
    set_vecnorm_state(env, ckpt["vecnorm"])
    model.num_timesteps = ckpt["num_timesteps"]
    model._last_obs = None  # re-reset the env at learn()


# ---- SAC (PEBBLE) -------------------------------------------------------------------------
def build_sac(sac: SACConfig, env, seed: int, tb_dir: str | None = None, buffer_size: int | None = None,
              replay_buffer_class=None):
    """SB3 SAC with the preset's hyperparameters (CPU, quiet); PEBBLE passes its replay buffer class."""
    from stable_baselines3 import SAC

    return SAC(
        "MlpPolicy", env, learning_rate=sac.learning_rate, buffer_size=buffer_size or sac.buffer_size,
        learning_starts=sac.learning_starts, batch_size=sac.batch_size, tau=sac.tau, gamma=sac.gamma,
        train_freq=sac.train_freq, gradient_steps=sac.gradient_steps, ent_coef=sac.ent_coef,
        replay_buffer_class=replay_buffer_class, policy_kwargs={"net_arch": list(sac.net_arch)},
        seed=seed, tensorboard_log=tb_dir, verbose=0, device="cpu",
    )


def save_sac_agent(path: Path, model, env, wall_s: float, pebble: dict | None = None,
                   monitor: dict | None = None) -> None:
    """Write ``agent.pt`` (format ``prefrl.sac_agent/1``) atomically; ``monitor`` as ``save_agent``'s."""
    ckpt = {
        "format": SAC_AGENT_FORMAT,
        "actor": model.actor.state_dict(),
        "critic": model.critic.state_dict(),
        "critic_target": model.critic_target.state_dict(),
        "actor_optimizer": model.actor.optimizer.state_dict(),
        "critic_optimizer": model.critic.optimizer.state_dict(),
        "log_ent_coef": model.log_ent_coef.detach().clone() if model.log_ent_coef is not None else None,
        "ent_coef_optimizer": model.ent_coef_optimizer.state_dict() if model.ent_coef_optimizer is not None else None,
        "num_timesteps": int(model.num_timesteps),
        "n_updates": int(model._n_updates),
        "vecnorm": vecnorm_state(env),
        "wall_s": float(wall_s),
        "pebble_json": json.dumps(pebble or {}),
        "monitor_json": json.dumps(monitor or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)


def load_sac_checkpoint(path: Path) -> dict:
    return _load_checkpoint(path, SAC_AGENT_FORMAT, "SAC agent")


def restore_sac_agent(model, env, ckpt: dict) -> dict:
    """Load a checkpoint into ``model``/``env``; returns PEBBLE's saved phase."""
    model.actor.load_state_dict(ckpt["actor"])
    model.critic.load_state_dict(ckpt["critic"])
    model.critic_target.load_state_dict(ckpt["critic_target"])
    model.actor.optimizer.load_state_dict(ckpt["actor_optimizer"])
    model.critic.optimizer.load_state_dict(ckpt["critic_optimizer"])
    if ckpt.get("log_ent_coef") is not None and model.log_ent_coef is not None:
        with torch.no_grad():
            model.log_ent_coef.copy_(ckpt["log_ent_coef"])
        model.ent_coef_optimizer.load_state_dict(ckpt["ent_coef_optimizer"])
    set_vecnorm_state(env, ckpt["vecnorm"])
    model.num_timesteps = int(ckpt["num_timesteps"])
    model._n_updates = int(ckpt.get("n_updates", 0))
    model._last_obs = None  # re-reset the env at learn()
    return json.loads(ckpt.get("pebble_json", "{}"))


def build_sac_for_eval(sac: SACConfig, env, seed: int, ckpt: dict):
    """A SAC whose actor is the checkpoint's (a 1-row buffer: nothing is trained)."""
    model = build_sac(sac, env, seed, buffer_size=1)
    model.actor.load_state_dict(ckpt["actor"])
    return model
