"""One training run: PPO on a learned (or the true) reward, written to a run directory.

Run directory::

    config.json        everything needed to rerun (resolved task preset included)
    prefs.sqlite       preference store (+ clips/ with the labeled clips)
    agent.pt           PPO policy + optimiser + VecNormalize statistics (weights_only loadable)
    reward_model.pt    reward ensemble
    tb/                TensorBoard scalars
    progress.csv       one row per PPO update: timesteps, labels, true_return_mean, ...
    learning_curve.png true return vs env steps (and the baseline's, when run)
    videos/agent.mp4   the trained agent
    summary.json       timesteps, labels, true_return_mean, eval_return_mean, wall_s
    baseline/          the true-reward PPO run (``--baseline``), same layout
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from prefrl.oracles import check_oracle_name, make_oracle
from prefrl.preferences import PreferenceStore
from prefrl.reward.ensemble import RewardEnsemble
from prefrl.reward.nets import InputSpec, RewardNetConfig
from prefrl.reward.query import random_pairs
from prefrl.reward.trainer import RewardTrainConfig, RewardTrainer
from prefrl.rl.envs import env_dt, make_vec_env
from prefrl.rl.loop import (
    LabelSchedule,
    PreferenceCallback,
    ProgressWriter,
    TrueRewardLogger,
    enqueue_pairs,
    label_pairs,
)
from prefrl.rl.reward_wrapper import ClipCollector, LearnedRewardVecEnv
from prefrl.rl.tasks import TaskConfig
from prefrl.types import PrefrlError
from prefrl.utils import seed_everything, set_torch_threads

AGENT_FORMAT = "prefrl.agent/1"


@dataclass
class RunConfig:
    """Everything a run needs; saved as config.json."""

    task: TaskConfig
    run_dir: str
    oracle: str = "synthetic"
    steps: int = 100_000
    seed: int = 0
    reward: str = "learned"
    reward_model: str | None = None
    eval_episodes: int = 5
    video: bool = True
    baseline: bool = False
    checkpoint_every: int = 10
    initial_wait_s: float = float("inf")
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.reward not in ("learned", "true"):
            raise PrefrlError(f"`--reward` must be `learned` or `true`, got `{self.reward}`")
        check_oracle_name(self.oracle)
        if self.steps <= 0:
            raise PrefrlError(f"`--steps` must be > 0, got {self.steps}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["initial_wait_s"] = None if math.isinf(self.initial_wait_s) else self.initial_wait_s
        return d

    @staticmethod
    def from_dict(d: dict) -> RunConfig:
        d = dict(d)
        d["task"] = TaskConfig.from_dict(d["task"], where="config.json [task]")
        if d.get("initial_wait_s") is None:
            d["initial_wait_s"] = float("inf")
        return RunConfig(**d)

    @property
    def keep_frames(self) -> bool:
        return self.oracle == "human" or self.task.prefs.keep_frames


def clip_length(task: TaskConfig) -> int:
    """Steps per clip: ``clip_length`` or ``clip_seconds`` of play at the env's dt."""
    p = task.prefs
    if p.clip_length is not None:
        return int(p.clip_length)
    dt = env_dt(task.env)
    if dt is None or p.clip_seconds is None:
        return 25
    return max(2, int(round(p.clip_seconds / dt)))


def input_spec_for(venv) -> InputSpec:
    import gymnasium as gym

    obs_space, act_space = venv.observation_space, venv.action_space
    act_n = int(act_space.n) if isinstance(act_space, gym.spaces.Discrete) else None
    return InputSpec(
        obs_shape=tuple(obs_space.shape),
        act_shape=() if act_n is not None else tuple(act_space.shape),
        act_n=act_n,
        obs_dtype=str(obs_space.dtype),
    )


def build_ppo(cfg: RunConfig, env, tb_dir: str | None):
    from stable_baselines3 import PPO

    p = cfg.task.ppo
    policy_kwargs: dict = {"net_arch": list(p.net_arch)}
    if not hasattr(env.action_space, "n"):
        policy_kwargs["log_std_init"] = p.log_std_init
    return PPO(
        p.policy, env,
        n_steps=p.n_steps, batch_size=p.batch_size, n_epochs=p.n_epochs, learning_rate=p.learning_rate,
        gamma=p.gamma, gae_lambda=p.gae_lambda, clip_range=p.clip_range, ent_coef=p.ent_coef,
        vf_coef=p.vf_coef, max_grad_norm=p.max_grad_norm, policy_kwargs=policy_kwargs,
        seed=cfg.seed, tensorboard_log=tb_dir, verbose=0, device="cpu",
    )


def wrap_normalize(cfg: RunConfig, venv):
    from stable_baselines3.common.vec_env import VecNormalize

    e = cfg.task.env
    if not (e.normalize_obs or e.normalize_reward):
        return venv
    return VecNormalize(venv, norm_obs=e.normalize_obs, norm_reward=e.normalize_reward, gamma=cfg.task.ppo.gamma)


def _vecnorm_state(env) -> dict | None:
    from stable_baselines3.common.vec_env import VecNormalize

    if not isinstance(env, VecNormalize):
        return None
    out = {}
    for name in ("obs_rms", "ret_rms"):
        rms = getattr(env, name)
        out[name] = {"mean": torch.as_tensor(np.asarray(rms.mean, np.float64)),
                     "var": torch.as_tensor(np.asarray(rms.var, np.float64)), "count": float(rms.count)}
    return out


def _set_vecnorm_state(env, state: dict | None) -> None:
    if state is None or not hasattr(env, "obs_rms"):
        return
    for name in ("obs_rms", "ret_rms"):
        rms = getattr(env, name)
        rms.mean = state[name]["mean"].numpy()
        rms.var = state[name]["var"].numpy()
        rms.count = state[name]["count"]


def save_agent(path: Path, model, env, wall_s: float) -> None:
    ckpt = {
        "format": AGENT_FORMAT,
        "policy": model.policy.state_dict(),
        "optimizer": model.policy.optimizer.state_dict(),
        "num_timesteps": int(model.num_timesteps),
        "vecnorm": _vecnorm_state(env),
        "wall_s": float(wall_s),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)


def load_agent_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise PrefrlError(f"{path}: no agent checkpoint (was the run started?)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PrefrlError(f"{path}: unreadable agent checkpoint ({type(e).__name__})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != AGENT_FORMAT:
        raise PrefrlError(f"{path}: not a prefrl agent checkpoint (format {ckpt.get('format') if isinstance(ckpt, dict) else None})")
    return ckpt


def collect_random_clips(cfg: RunConfig, n_clips: int, length: int, seed: int) -> ClipCollector:
    """Clips from a uniformly random policy (Christiano's initial labels), on a separate env."""
    venv = make_vec_env(cfg.task.env, seed + 10_000, render=cfg.keep_frames)
    collector = ClipCollector(venv.num_envs, length, n_clips, keep_frames=cfg.keep_frames,
                              max_bytes=pool_max_bytes(cfg.task))
    wrapper = LearnedRewardVecEnv(venv, None, collector)
    wrapper.reset()
    venv.action_space.seed(seed)
    while collector.total_clips < collector.capacity:  # the memory cap may keep fewer (pairs then share clips)
        acts = np.stack([venv.action_space.sample() for _ in range(venv.num_envs)])
        wrapper.step(acts)
    wrapper.close()
    return collector


def pool_max_bytes(task: TaskConfig) -> int | None:
    """The clip pool's memory cap in bytes (``[prefs] pool_mib``), or None."""
    mib = task.prefs.pool_mib
    return None if mib is None else int(mib * 2**20)


def _wait_for_labels(store: PreferenceStore, n: int, timeout_s: float) -> None:
    t0, last = time.time(), 0.0
    while store.count_judgments() < n:
        if time.time() - t0 > timeout_s:
            raise PrefrlError(f"waited {timeout_s:.0f} s for {n} initial human labels, got {store.count_judgments()}")
        if time.time() - last > 15:
            print(f"waiting for human labels: {store.count_judgments()}/{n} "
                  f"(run `prefrl label --run-dir {store.root}` in another terminal)", flush=True)
            last = time.time()
        time.sleep(0.5)


def prepare_run_dir(cfg: RunConfig, resume: bool) -> Path:
    run_dir = Path(cfg.run_dir)
    if run_dir.exists() and (run_dir / "config.json").exists() and not resume:
        raise PrefrlError(f"{run_dir}: a run already exists here; pass `--resume` to continue it or choose another `--run-dir`")
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    return run_dir


def run_training(cfg: RunConfig, resume: bool = False) -> dict:
    """Train one agent (and its baseline if asked); returns summary.json's content."""
    summary = _run_arm(cfg, resume)
    if cfg.baseline and cfg.reward == "learned":
        base = dataclasses.replace(cfg, reward="true", baseline=False, reward_model=None,
                                   run_dir=str(Path(cfg.run_dir) / "baseline"), video=False)
        base_dir = Path(base.run_dir)
        base_resume = resume and (base_dir / "config.json").exists()
        if not base_resume and base_dir.exists() and not (base_dir / "summary.json").exists():
            shutil.rmtree(base_dir)  # an interrupted baseline that never checkpointed: start it over
        if not (base_dir / "summary.json").exists():
            summary["baseline"] = _run_arm(base, base_resume)
        else:
            summary["baseline"] = json.loads((base_dir / "summary.json").read_text())
        base_true = summary["baseline"].get("true_return_mean")
        if base_true:
            summary["true_return_ratio"] = summary["true_return_mean"] / base_true if base_true else None
        (Path(cfg.run_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
    from prefrl.plots import plot_run

    plot_run(Path(cfg.run_dir))
    return summary


def _run_arm(cfg: RunConfig, resume: bool) -> dict:
    set_torch_threads()
    rng = seed_everything(cfg.seed)
    task = cfg.task
    learned = cfg.reward == "learned"
    length = clip_length(task)
    limit = task.env.max_episode_steps
    if limit is None and task.env.type != "atari":
        import gymnasium as gym

        try:
            limit = gym.spec(task.env.id).max_episode_steps
        except gym.error.Error:
            limit = None  # an unknown id is reported with close matches when the env is made
    if learned and limit is not None and length > limit:
        raise PrefrlError(f"task `{task.name}`: clips of {length} steps are longer than its {limit}-step episodes, "
                          "so no clip could ever be cut; set [prefs] clip_length (or clip_seconds) shorter")
    run_dir = prepare_run_dir(cfg, resume)

    venv = make_vec_env(task.env, cfg.seed, render=cfg.keep_frames and learned)
    collector = ClipCollector(venv.num_envs, length, task.prefs.pool_size, cfg.keep_frames,
                              max_bytes=pool_max_bytes(task)) if learned else None
    wrapper = LearnedRewardVecEnv(venv, None, collector)
    env = wrap_normalize(cfg, wrapper)
    model = build_ppo(cfg, env, str(run_dir / "tb"))
    progress = ProgressWriter(run_dir / "progress.csv")

    wall_offset = 0.0
    done_steps = 0
    ckpt = None
    if resume:
        if (run_dir / "summary.json").exists():
            print(f"{run_dir}: run already finished")
            return json.loads((run_dir / "summary.json").read_text())
        if (run_dir / "agent.pt").exists():
            ckpt = load_agent_checkpoint(run_dir / "agent.pt")
            model.policy.load_state_dict(ckpt["policy"])
            model.policy.optimizer.load_state_dict(ckpt["optimizer"])
            _set_vecnorm_state(env, ckpt["vecnorm"])
            done_steps = model.num_timesteps = ckpt["num_timesteps"]
            wall_offset = ckpt["wall_s"]
            model._last_obs = None  # re-reset the env at learn()
    t0 = time.perf_counter()

    store = None
    callback: object
    if learned:
        spec = input_spec_for(venv)
        rm = task.reward_model
        if cfg.reward_model is not None:
            ensemble = RewardEnsemble.load(cfg.reward_model)
            if tuple(ensemble.spec.obs_shape) != spec.obs_shape:
                raise PrefrlError(f"{cfg.reward_model}: reward model reads observations of shape {ensemble.spec.obs_shape}, "
                                  f"task `{task.name}` has {spec.obs_shape}")
        else:
            ensemble = RewardEnsemble(
                spec, RewardNetConfig(kind=rm.kind, hidden=tuple(rm.hidden), dropout=rm.dropout,
                                      use_actions=rm.use_actions, options=dict(rm.options)),
                n_members=task.prefs.members, target_std=task.prefs.target_std,
            )
        trainer = RewardTrainer(ensemble, RewardTrainConfig(lr=rm.lr, batch_size=rm.batch_size,
                                                            noise_eps=task.prefs.noise_eps), rng)
        budget = 0 if cfg.reward_model is not None else task.prefs.labels
        schedule = LabelSchedule(budget, cfg.steps, task.prefs.initial_share, task.prefs.rate_horizon)
        store = PreferenceStore(run_dir)
        store.set_meta("label_budget", budget)
        store.set_meta("status", "running")
        store.set_meta("task", task.name)
        dt = env_dt(task.env)
        if dt:
            store.set_meta("render_fps", round(1.0 / dt, 2))  # the viewer plays clips in real time
        oracle = None if cfg.oracle == "human" else make_oracle(cfg.oracle, rng)

        def checkpoint(cb: PreferenceCallback) -> None:
            ensemble.save(run_dir / "reward_model.pt", extra={"timesteps": model.num_timesteps})
            save_agent(run_dir / "agent.pt", model, env, cb.wall_offset + time.perf_counter() - cb.t0)

        callback = PreferenceCallback(
            wrapper, trainer, store, schedule, oracle, task.prefs.query, rng, progress,
            pool_factor=task.prefs.pool_factor, reward_epochs=task.prefs.reward_epochs,
            retrain_fraction=task.prefs.retrain_fraction,
            keep_frames=cfg.keep_frames, checkpoint_fn=checkpoint, checkpoint_every=cfg.checkpoint_every,
            t0=t0, wall_offset=wall_offset,
        )
        if resume and (run_dir / "reward_model.pt").exists():
            saved = RewardEnsemble.load(run_dir / "reward_model.pt")
            ensemble.load_state_dict(saved.state_dict())
        if cfg.reward_model is None:
            _initial_labels(cfg, store, schedule, oracle, length, rng)
            if resume and (run_dir / "reward_model.pt").exists():
                callback.retrain(task.prefs.reward_epochs)
            else:
                callback.retrain(task.prefs.initial_epochs)
        callback.last_judgment_id = max((j.id for j in store.judgments()), default=0)
        wrapper.set_reward_fn(ensemble.step_fn())
    else:
        def checkpoint(cb: TrueRewardLogger) -> None:  # type: ignore[misc]
            save_agent(run_dir / "agent.pt", model, env, cb.wall_offset + time.perf_counter() - cb.t0)

        callback = TrueRewardLogger(progress, checkpoint, cfg.checkpoint_every, t0=t0, wall_offset=wall_offset)

    remaining = cfg.steps - done_steps
    if remaining > 0:
        model.learn(total_timesteps=remaining, callback=callback, progress_bar=_progress_bar_available(),
                    reset_num_timesteps=not resume, tb_log_name="ppo")
    if learned and store is not None and store.judgments(since_id=callback.last_judgment_id):
        callback.retrain(task.prefs.reward_epochs)  # judgments that arrived after the last rollout count too
    wall = wall_offset + time.perf_counter() - t0
    if learned:
        ensemble.save(run_dir / "reward_model.pt", extra={"timesteps": model.num_timesteps})
    save_agent(run_dir / "agent.pt", model, env, wall)
    ep_true = [ep["r"] for ep in (model.ep_info_buffer or [])]  # None when a resume had no steps left
    summary = {
        "task": task.name,
        "reward": cfg.reward,
        "oracle": cfg.oracle if learned else None,
        "seed": cfg.seed,
        "timesteps": int(model.num_timesteps),
        "labels": store.count_judgments() if store is not None else 0,
        "true_return_mean": float(np.mean(ep_true)) if ep_true else None,
        "wall_s": round(wall, 2),
    }
    if store is not None:
        store.set_meta("status", "finished")
        store.cancel_pending()
        store.close()
    env.close()
    if cfg.eval_episodes > 0:
        from prefrl.rl.evaluate import evaluate_run

        ev = evaluate_run(run_dir, episodes=cfg.eval_episodes, video=cfg.video)
        summary["eval_return_mean"] = ev["return_mean"]
        if ev.get("video"):
            summary["video"] = ev["video"]
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _initial_labels(cfg: RunConfig, store: PreferenceStore, schedule: LabelSchedule, oracle, length: int,
                    rng: np.random.Generator) -> None:
    """Label random-policy clips up front (Christiano: 25% of the budget), topping up after a crash."""
    have = store.count_judgments() + (store.count_pending() if oracle is None else 0)
    need = schedule.initial - have
    if need > 0:
        n_clips = max(need, 10)  # each clip appears in ~2 random pairs: half the random-policy steps
        clips = collect_random_clips(cfg, n_clips, length, cfg.seed).clips()
        pairs = random_pairs(len(clips), need, rng)
        if oracle is not None:
            oracle.calibrate(float(np.mean(clips.true_returns())))
            label_pairs(store, oracle, clips, pairs, cfg.keep_frames)
        else:
            enqueue_pairs(store, clips, pairs)
    if oracle is None and schedule.initial > 0:
        _wait_for_labels(store, schedule.initial, cfg.initial_wait_s)


def _progress_bar_available() -> bool:
    try:
        import rich  # noqa: F401
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True
