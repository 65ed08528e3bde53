"""One training run: PPO on a learned (or the true) reward, written to a run directory.

The run directory's layout is ``prefrl.core.rundir.RunDir``'s. The preference loop itself
is the core ``LabelingEngine``; here it is wired to an SB3 PPO agent and a gymnasium env
stack (``PreferenceCallback`` hands it the clips between rollouts).
"""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np

from prefrl.control.agent import (build_ppo, load_agent_checkpoint, restore_agent, save_agent, saved_monitor_state,
                                  wrap_normalize)
from prefrl.control.callbacks import PROGRESS_FIELDS, PreferenceCallback, ProgressBar, ProgressCallback, WallClock, rollout_total
from prefrl.control.config import RunConfig, clip_length
from prefrl.control.envs import env_dt, make_vec_env
from prefrl.control.evaluate import finish_arm
from prefrl.control.monitor import MONITOR_FIELDS, MonitorCallback
from prefrl.control.reward_wrapper import ClipCollector, LearnedRewardVecEnv
from prefrl.control.sac import run_sac_arm
from prefrl.control.tasks import TaskConfig
from prefrl.core.engine import LabelingEngine
from prefrl.core.ensemble import RewardEnsemble
from prefrl.core.nets import InputSpec
from prefrl.core.oracles import open_oracle
from prefrl.core.rundir import Meta, ProgressLog, RunDir
from prefrl.core.store import PreferenceStore
from prefrl.core.trainer import RewardTrainer
from prefrl.core.types import PrefrlError
from prefrl.core.utils import seed_everything, set_torch_threads, tune_malloc


def input_spec_for(venv, termination_input: bool = False) -> InputSpec:
    """What the reward model reads from ``venv``'s steps (with ``termination_input``: the flattened
    observation and the termination flag, ``reward_wrapper.with_termination_flag``)."""
    import gymnasium as gym

    obs_space, act_space = venv.observation_space, venv.action_space
    act_n = int(act_space.n) if isinstance(act_space, gym.spaces.Discrete) else None
    obs_shape = tuple(obs_space.shape)
    if termination_input:
        obs_shape = (int(np.prod(obs_shape)) + 1,)
    return InputSpec(
        obs_shape=obs_shape,
        act_shape=() if act_n is not None else tuple(act_space.shape),
        act_n=act_n,
        obs_dtype=str(obs_space.dtype),
    )


def collect_random_clips(cfg: RunConfig, n_clips: int, length: int, seed: int, venv=None) -> ClipCollector:
    """Clips from a uniformly random policy (Christiano's initial labels): on ``venv`` (the run's own
    env stack, which PPO resets before training), or on a separate env when None."""
    own = venv is None
    if own:
        venv = make_vec_env(cfg.task.env, seed + 10_000, render=cfg.keep_frames)
    collector = ClipCollector(venv.num_envs, length, n_clips, keep_frames=cfg.keep_frames,
                              max_bytes=pool_max_bytes(cfg.task))
    wrapper = LearnedRewardVecEnv(venv, None, collector, termination_input=cfg.task.reward_model.termination_input)
    wrapper.reset()
    venv.action_space.seed(seed)
    while collector.total_clips < collector.capacity:  # the memory cap may keep fewer (pairs then share clips)
        acts = np.stack([venv.action_space.sample() for _ in range(venv.num_envs)])
        wrapper.step(acts)
    if own:
        wrapper.close()
    return collector


def pool_max_bytes(task: TaskConfig) -> int | None:
    """The clip pool's memory cap in bytes (``[prefs] pool_mib``), or None."""
    mib = task.prefs.pool_mib
    return None if mib is None else int(mib * 2**20)


def check_clips_fit(task: TaskConfig, length: int) -> None:
    """Refuse clips longer than the task's episodes (no clip could ever be cut)."""
    limit = task.env.max_episode_steps
    if limit is None and task.env.type != "atari":
        import gymnasium as gym

        try:
            limit = gym.spec(task.env.id).max_episode_steps
        except gym.error.Error:
            limit = None  # an unknown id is reported with close matches when the env is made
    if limit is not None and length > limit:
        raise PrefrlError(f"task `{task.name}`: clips of {length} steps are longer than its {limit}-step episodes, "
                          "so no clip could ever be cut; set [prefs] clip_length (or clip_seconds) shorter")


def prepare_run_dir(cfg: RunConfig, resume: bool) -> RunDir:
    rd = cfg.dir
    if rd.config.exists() and not resume:
        raise PrefrlError(f"{rd.path}: a run already exists here; pass `--resume` to continue it or choose another `--run-dir`")
    rd.mkdir()
    if not resume or not rd.config.exists():
        rd.write_config(cfg.to_dict())
    return rd


def run_training(cfg: RunConfig, resume: bool = False) -> dict:
    """Train one agent (and its baseline if asked); returns summary.json's content."""
    summary = _run_arm(cfg, resume)
    rd = cfg.dir
    if cfg.baseline and cfg.reward == "learned":
        base = dataclasses.replace(cfg, reward="true", baseline=False, reward_model=None,
                                   run_dir=str(rd.baseline.path), video=False)
        brd = base.dir
        status = brd.status()
        if status != "finished" and brd.path.exists() and not (resume and status == "interrupted"):
            shutil.rmtree(brd.path)  # an interrupted baseline that never checkpointed: start it over
        if status == "finished":
            summary["baseline"] = brd.read_summary()
        else:
            summary["baseline"] = _run_arm(base, resume and status == "interrupted")
        add_ratios(summary)
        rd.write_summary(summary)
    from prefrl.viz import plot_run

    plot_run(rd.path)
    return summary


def add_ratios(summary: dict) -> None:
    """Learned vs true reward: on the final deterministic evaluation (the headline) and on training episodes.

    A ratio is only a fair figure when the true-reward arm's return is positive; otherwise (Pong's
    -21..21, Reacher's negative rewards) it is None: -21 / -17 = 1.24 would read as the learned
    arm doing better. Compare such tasks by gain over a random policy (``scripts/bench_atari.py``).
    """
    base = summary.get("baseline") or {}
    for key, name in (("eval_return_mean", "eval_return_ratio"), ("true_return_mean", "train_return_ratio")):
        summary[name] = return_ratio(summary.get(key), base.get(key))


def return_ratio(learned: float | None, true: float | None) -> float | None:
    """learned / true, or None when either is missing or the true return is not positive."""
    return learned / true if learned is not None and true is not None and true > 0 else None


def _run_arm(cfg: RunConfig, resume: bool) -> dict:
    set_torch_threads()
    tune_malloc()
    rng = seed_everything(cfg.seed)
    task = cfg.task
    learned = cfg.reward == "learned"
    length = clip_length(task)
    if learned:
        check_clips_fit(task, length)
    rd = prepare_run_dir(cfg, resume)
    if resume and rd.status() == "finished":
        print(f"{rd.path}: run already finished")
        return rd.read_summary()
    if task.algo == "sac":  # PEBBLE: SAC's arm lives in control/sac.py; it gets the engine wiring
        return run_sac_arm(cfg, rd, resume, rng, _open_engine)

    venv = make_vec_env(task.env, cfg.seed, render=cfg.keep_frames and learned)
    collector = ClipCollector(venv.num_envs, length, task.prefs.pool_size, cfg.keep_frames,
                              max_bytes=pool_max_bytes(task)) if learned else None
    wrapper = LearnedRewardVecEnv(venv, None, collector)  # its termination input: the reward model's, set below
    env = wrap_normalize(task.env, wrapper, task.ppo.gamma)
    model = build_ppo(task.ppo, env, cfg.seed, str(rd.tb))

    ckpt = load_agent_checkpoint(rd.agent) if resume and rd.agent.exists() else None
    done_steps = 0
    if ckpt is not None:
        restore_agent(model, env, ckpt)
        done_steps = int(ckpt["num_timesteps"])
    progress = ProgressLog(rd.progress, PROGRESS_FIELDS + (MONITOR_FIELDS if learned and task.monitor.enabled else []))
    if resume:
        progress.truncate("timesteps", done_steps)  # rows written after the last checkpoint are redone
    clock = WallClock(ckpt["wall_s"] if ckpt is not None else 0.0)
    name = f"{task.name} {'learned' if learned else 'true'} reward"
    total = rollout_total(cfg.steps, task.ppo.n_steps, venv.num_envs)
    bar = ProgressBar(name, total, done_steps) if done_steps < cfg.steps else None

    store = engine = monitor = None
    if learned:
        store, engine = _open_engine(cfg, rd, venv, rng, resume)
        wrapper.termination_input = engine.ensemble.cfg.termination_input  # the task's, or a --reward-model's own
        # Atari: the random-policy clips come from the run's own envs (not 8 more emulators in memory
        # and their start-up); other tasks keep a separate env stack (cheap, and their results unchanged)
        _initial_labels(cfg, engine, length, venv if task.env.type == "atari" else None)
        if cfg.reward_model is None:
            epochs = task.prefs.reward_epochs if resume and rd.reward_model.exists() else task.prefs.initial_epochs
            engine.refit(epochs)
        wrapper.set_reward_fn(engine.ensemble.step_fn())

        def checkpoint() -> None:
            engine.ensemble.save(rd.reward_model, extra={"timesteps": model.num_timesteps,
                                                         "fit_judgment_id": engine.fit_judgment_id})
            save_agent(rd.agent, model, env, clock(), monitor.state() if monitor is not None else None)

        callback: ProgressCallback = PreferenceCallback(engine, wrapper, progress, clock, checkpoint,
                                                        cfg.checkpoint_every, bar)
        if task.monitor.enabled:  # the reward-hacking monitor measures as each progress row is written
            monitor = MonitorCallback(task.monitor, callback, cfg.seed)
            monitor.load_state(saved_monitor_state(ckpt))  # a resume keeps its alarms and counts
            callback.progress = monitor.progress_log(progress)
    else:
        def checkpoint() -> None:
            save_agent(rd.agent, model, env, clock())

        callback = ProgressCallback(progress, clock, checkpoint, cfg.checkpoint_every, bar)

    remaining = cfg.steps - done_steps
    if remaining > 0:
        callbacks = [callback] if monitor is None else [callback, monitor]
        model.learn(total_timesteps=remaining, callback=callbacks, reset_num_timesteps=not resume, tb_log_name="ppo")
    if bar is not None:
        bar.close()
    if engine is not None:
        engine.finish(ref=callback.pool() if isinstance(callback, PreferenceCallback) else None)
        engine.ensemble.save(rd.reward_model, extra={"timesteps": model.num_timesteps,
                                                     "fit_judgment_id": engine.fit_judgment_id})
    wall = clock()
    save_agent(rd.agent, model, env, wall, monitor.state() if monitor is not None else None)
    return finish_arm(cfg, rd, model, env, engine, store, wall, monitor=monitor.summary() if monitor else None)


def _open_engine(cfg: RunConfig, rd: RunDir, venv, rng: np.random.Generator,
                 resume: bool) -> tuple[PreferenceStore, LabelingEngine]:
    """The run's store, oracle, reward model and trainer, wired into a labeling engine."""
    task = cfg.task
    if cfg.reward_model is not None:
        ensemble = RewardEnsemble.load(cfg.reward_model)
        spec = input_spec_for(venv, ensemble.cfg.termination_input)
        if tuple(ensemble.spec.obs_shape) != spec.obs_shape:
            raise PrefrlError(f"{cfg.reward_model}: reward model reads observations of shape {ensemble.spec.obs_shape}, "
                              f"task `{task.name}` has {spec.obs_shape}")
    else:
        ensemble = RewardEnsemble(input_spec_for(venv, task.reward_model.termination_input), task.reward_model)
    if resume and rd.reward_model.exists():
        ensemble.load_state_dict(RewardEnsemble.load(rd.reward_model).state_dict())
    prefs = dataclasses.replace(task.prefs, labels=0) if cfg.reward_model is not None else task.prefs
    store = PreferenceStore(rd.path)
    store.set_meta(Meta.STATUS.value, "running")
    store.set_meta(Meta.TASK.value, task.name)
    dt = env_dt(task.env)
    if dt:
        store.set_meta(Meta.RENDER_FPS.value, round(1.0 / dt, 2))  # the viewer plays clips in real time
    oracle = open_oracle(cfg.oracle, store, rng, since_id=store.last_judgment_id())
    engine = LabelingEngine(store, oracle, RewardTrainer(ensemble, task.reward_train, rng), prefs.schedule(cfg.steps),
                            prefs, rng, keep_frames=cfg.keep_frames)
    return store, engine


def _initial_labels(cfg: RunConfig, engine: LabelingEngine, length: int, venv=None) -> None:
    """Label random-policy clips up front (Christiano: 25% of the budget), topping up after a crash."""
    need = engine.initial_due()
    if need > 0:
        n_clips = max(need, 10)  # each clip appears in ~2 random pairs: half the random-policy steps
        engine.ask_initial(collect_random_clips(cfg, n_clips, length, cfg.seed, venv).clips(copy=False))
    if engine.oracle.name == "human" and engine.schedule.initial > 0:
        engine.wait_for_initial(cfg.initial_wait_s, on_wait=lambda have, need: print(
            f"waiting for human labels: {have}/{need} (run `prefrl label --run-dir {engine.store.root}` in another terminal)",
            flush=True))
