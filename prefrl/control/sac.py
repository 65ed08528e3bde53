"""PEBBLE (Lee, Smith, Abbeel 2021) on the labeling engine: SB3 SAC with a relabeled replay buffer.

One SAC run (``algo = "sac"``, settings in the preset's ``[sac]``, ``tasks.SACConfig``)::

    steps [0, learning_starts)                      random actions (SB3's warm-up)
    steps [learning_starts, t0)                     unsupervised pre-training: SAC maximises a
                                                    state-entropy reward (kNN particle estimate)
    t0 = learning_starts + unsupervised_steps       the engine's up-front labels, on clips of
                                                    that experience; refit; relabel the buffer;
                                                    re-initialise the critics (PEBBLE)
    every feedback_every steps after t0             engine.step(t, pool); after a refit the
                                                    buffer is relabeled with the new model

The reward SAC sees online comes from ``LearnedRewardVecEnv`` as in PPO (zero before t0: the
true reward never reaches the agent). The replay buffer (``PebbleReplayBuffer``) keeps the
true reward of every stored step beside the learned one, for logs and oracles; ``relabel``
replaces every stored reward with the current model's prediction in one chunked pass of the
ensemble's numpy step function over (observation, action in env units).

The true-reward arm (``--reward true``, ``--baseline``) is plain SAC with the same
hyperparameters, steps and seed, without pre-training (PEBBLE's SAC baseline).

Checkpoints: ``agent.pt`` (format ``prefrl.sac_agent/1``: actor, critic, target critic,
their optimisers, the entropy temperature and its optimiser, step count, VecNormalize
statistics, PEBBLE's phase; ``torch.load(weights_only=True)``) and, with ``[sac]
save_buffer`` (default), ``replay.npz`` (the filled part of the buffer, plain arrays), so
``--resume`` continues with the same buffer. Without it a resume starts an empty buffer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.running_mean_std import RunningMeanStd

from prefrl.control.agent import (
    build_sac,
    load_sac_checkpoint,
    restore_sac_agent,
    save_sac_agent,
    saved_monitor_state,
    wrap_normalize,
)
from prefrl.control.evaluate import finish_arm
from prefrl.control.callbacks import PROGRESS_FIELDS, PreferenceCallback, ProgressBar, ProgressCallback, WallClock, rollout_total
from prefrl.control.monitor import MONITOR_FIELDS, MonitorCallback
from prefrl.control.config import RunConfig, clip_length
from prefrl.control.envs import make_vec_env
from prefrl.control.reward_wrapper import (ClipCollector, LearnedRewardVecEnv, RewardFn, hidden_terminations,
                                           with_termination_flag)
from prefrl.control.tasks import SACConfig
from prefrl.core.engine import EngineReport, LabelingEngine
from prefrl.core.rundir import ProgressLog, RunDir
from prefrl.core.store import PreferenceStore
from prefrl.core.types import PrefrlError

REPLAY_FILE = "replay.npz"
REPLAY_FORMAT = "prefrl.replay/1"
RELABEL_CHUNK = 65_536
"""Buffer rows per call of the reward model's step function during a relabel."""


# ---- state-entropy reward (unsupervised pre-training) ---------------------------------------
def knn_state_entropy(query: torch.Tensor, ref: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Particle estimate of state entropy: ``log(1 + ||s - s_kNN||)`` per query row.

    Args:
        query: (B, D) states.
        ref: (M, D) states the neighbours are drawn from (M >= k).
        k: which neighbour (1 = the nearest; count the query itself when it is in ``ref``).
        chunk: query rows per distance matrix (memory: chunk x M floats).

    Returns:
        (B,) float32.
    """
    query, ref = query.reshape(len(query), -1).float(), ref.reshape(len(ref), -1).float()
    k = min(k, len(ref))
    ref_sq = (ref * ref).sum(dim=1)
    out = []
    for s in range(0, len(query), chunk):
        q = query[s : s + chunk]
        # squared distances by one matmul, the k smallest by topk: ~4x faster than cdist + kthvalue here
        d2 = torch.addmm(ref_sq, q, ref.T, alpha=-2).add_((q * q).sum(dim=1, keepdim=True)).clamp_min_(0)
        out.append(torch.topk(d2, k, dim=1, largest=False).values[:, -1].sqrt())
    return torch.log1p(torch.cat(out)) if out else torch.zeros(0)


class StateEntropyReward:
    """PEBBLE's intrinsic reward for a sampled batch: kNN state entropy over the replay buffer,
    divided by a running standard deviation.

    The neighbours come from the whole filled buffer while it holds at most ``subsample``
    observations (the query itself is then among them, so the (k+1)-th nearest is used, as
    PEBBLE does), and from a fresh random subsample of ``subsample`` observations after that
    (k-th nearest), which keeps the cost per batch fixed as the buffer grows.

    Args:
        k: neighbour rank (PEBBLE: 5).
        subsample: reference observations per batch.
        rng: randomness of the subsample.
    """

    def __init__(self, k: int = 5, subsample: int = 10_000, rng: np.random.Generator | None = None):
        self.k = k
        self.subsample = subsample
        self.rng = rng or np.random.default_rng(0)
        self.rms = RunningMeanStd(shape=())

    def __call__(self, query: torch.Tensor, buffer: ReplayBuffer, env=None) -> torch.Tensor:
        """(B, 1) normalised intrinsic rewards of ``query`` (observations as sampled: normalised if ``env`` is)."""
        flat = buffer.observations[: filled(buffer)].reshape(-1, *buffer.obs_shape)
        if len(flat) > self.subsample:
            ref, k = flat[self.rng.integers(0, len(flat), self.subsample)], self.k
        else:
            ref, k = flat, self.k + 1
        ref_t = torch.as_tensor(buffer._normalize_obs(ref, env), dtype=torch.float32)
        r = knn_state_entropy(query.detach().cpu(), ref_t, k)
        self.rms.update(r.numpy().astype(np.float64))
        r = r / float(np.sqrt(self.rms.var + 1e-8))
        return r.reshape(-1, 1).to(query.device)

    def state(self) -> dict:
        return {"mean": float(self.rms.mean), "var": float(self.rms.var), "count": float(self.rms.count)}

    def load_state(self, d: dict | None) -> None:
        if d:
            self.rms.mean, self.rms.var, self.rms.count = np.float64(d["mean"]), np.float64(d["var"]), d["count"]


# ---- the replay buffer: true reward kept, relabel, intrinsic reward, .npz checkpoint --------
def filled(buffer: ReplayBuffer) -> int:
    """Rows of the buffer that hold transitions."""
    return buffer.buffer_size if buffer.full else buffer.pos


class PebbleReplayBuffer(ReplayBuffer):
    """SB3's replay buffer plus a parallel array of true rewards, a relabel pass and PEBBLE's
    intrinsic reward (set ``intrinsic`` during pre-training: sampled batches then carry the
    state-entropy reward instead of the stored one).

    ``true_rewards[i, e]`` is ``infos[e]["true_reward"]`` of the step stored at row i (the env
    reward when the wrapper gave none); the agent never trains on it. ``terminations[i, e]`` is 1
    where that step's termination was hidden: with ``termination_input`` on, relabeling scores
    the observation with that flag, as the reward model saw the step online.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.true_rewards = np.zeros((self.buffer_size, self.n_envs), dtype=np.float32)
        self.terminations = np.zeros((self.buffer_size, self.n_envs), dtype=np.float32)
        self.termination_input = False
        self.intrinsic: StateEntropyReward | None = None

    def add(self, obs, next_obs, action, reward, done, infos) -> None:  # type: ignore[override]
        self.true_rewards[self.pos] = [float(info.get("true_reward", r)) for info, r in zip(infos, np.ravel(reward))]
        self.terminations[self.pos] = hidden_terminations(infos)
        super().add(obs, next_obs, action, reward, done, infos)

    def _get_samples(self, batch_inds: np.ndarray, env=None):  # type: ignore[override]
        data = super()._get_samples(batch_inds, env)
        if self.intrinsic is None:
            return data
        return data._replace(rewards=self.intrinsic(data.observations, self, env))

    def relabel(self, reward_fn: RewardFn, unscale: Callable[[np.ndarray], np.ndarray] | None = None,
                chunk: int = RELABEL_CHUNK) -> int:
        """Replace every stored reward with ``reward_fn(obs, action)``; returns the transitions relabeled.

        ``unscale`` maps the stored actions (SAC keeps them scaled to [-1, 1]) back to env units,
        the actions the reward model saw online (``policy.unscale_action``).
        """
        n = filled(self)
        obs = self.observations[:n].reshape(n * self.n_envs, *self.obs_shape)
        acts = self.actions[:n].reshape(n * self.n_envs, self.action_dim)
        flags = self.terminations[:n].reshape(n * self.n_envs)
        out = self.rewards[:n].reshape(n * self.n_envs)  # a view: written in place
        for s in range(0, len(obs), chunk):
            a, o = acts[s : s + chunk], obs[s : s + chunk]
            if self.termination_input:
                o = with_termination_flag(o, flags[s : s + chunk])
            out[s : s + chunk] = reward_fn(o, unscale(a) if unscale is not None else a)
        self.rewards[:n] = out.reshape(n, self.n_envs)
        return n * self.n_envs

    # checkpoint
    _ARRAYS = ("observations", "next_observations", "actions", "rewards", "true_rewards", "terminations", "dones",
               "timeouts")

    def save_npz(self, path: Path) -> None:
        """The filled part as plain arrays (no pickles), written atomically."""
        n = filled(self)
        arrays = {name: getattr(self, name)[:n] for name in self._ARRAYS if hasattr(self, name)}
        meta = {"format": REPLAY_FORMAT, "pos": int(self.pos), "full": bool(self.full),
                "buffer_size": int(self.buffer_size), "n_envs": int(self.n_envs)}
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)
        tmp.replace(path)

    def load_npz(self, path: Path) -> None:
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                data = {name: z[name] for name in self._ARRAYS if name in z.files}
        except Exception as e:
            raise PrefrlError(f"{path}: unreadable replay buffer ({type(e).__name__}: {e})") from e
        if meta.get("format") != REPLAY_FORMAT:
            raise PrefrlError(f"{path}: not a prefrl replay buffer (format {meta.get('format')})")
        if meta["buffer_size"] != self.buffer_size or meta["n_envs"] != self.n_envs:
            raise PrefrlError(f"{path}: replay buffer of {meta['buffer_size']} x {meta['n_envs']} envs, "
                              f"the run has {self.buffer_size} x {self.n_envs}")
        for name, arr in data.items():
            dst = getattr(self, name, None)
            if dst is None:
                continue
            if arr.shape[1:] != dst.shape[1:]:
                raise PrefrlError(f"{path}: `{name}` has rows of shape {arr.shape[1:]}, the run's buffer {dst.shape[1:]}")
            dst[: len(arr)] = arr
        self.pos, self.full = int(meta["pos"]), bool(meta["full"])


# ---- SAC -------------------------------------------------------------------------------------
def reset_critic(model) -> None:
    """Re-initialise both critics and the critic optimiser (PEBBLE, after unsupervised pre-training)."""
    for m in model.critic.modules():
        if isinstance(m, torch.nn.Linear):
            m.reset_parameters()
    model.critic_target.load_state_dict(model.critic.state_dict())
    pol = model.policy
    model.critic.optimizer = pol.optimizer_class(model.critic.parameters(), lr=model.lr_schedule(1),
                                                 **pol.optimizer_kwargs)


# ---- callbacks -------------------------------------------------------------------------------
class _RowsEveryNSteps:
    """Progress rows every ``log_every`` env steps: SB3 ends an off-policy 'rollout' every
    ``train_freq`` steps, too often for a row (and a checkpoint every ``checkpoint_every`` rows)."""

    log_every: int
    last_bucket: int

    def _row_due(self) -> bool:
        b = self.num_timesteps // self.log_every  # type: ignore[attr-defined]
        if b > self.last_bucket:
            self.last_bucket = b
            return True
        return False


class SACProgressCallback(_RowsEveryNSteps, ProgressCallback):
    """The true-reward SAC arm: rows, TensorBoard scalars and checkpoints every ``log_every`` steps."""

    def __init__(self, progress: ProgressLog, clock: WallClock, checkpoint_fn: Callable[[], None] | None,
                 checkpoint_every: int, bar: ProgressBar | None, log_every: int, start: int = 0):
        super().__init__(progress, clock, checkpoint_fn, checkpoint_every, bar)
        self.log_every, self.last_bucket = log_every, start // log_every

    def _on_rollout_end(self) -> None:
        if self._row_due():
            ProgressCallback._on_rollout_end(self)


class PebbleCallback(_RowsEveryNSteps, PreferenceCallback):
    """The labeling engine for SAC (PEBBLE): the end of pre-training, then feedback every
    ``feedback_every`` env steps; every refit relabels the replay buffer.

    Args:
        engine, wrapper, progress, clock, checkpoint_fn, checkpoint_every, bar: as ``PreferenceCallback``.
        sac: the ``[sac]`` settings (pre-training length, feedback cadence, critic reset).
        initial_epochs: reward-model epochs of the first fit.
        initial_wait_s: how long to wait for people's up-front labels.
        pretrained: pre-training (and the up-front labels) already done (a resume, a given reward model).
        next_feedback: env step of the next engine call (a resume).
        start: env steps done before this ``learn`` (a resume).
    """

    def __init__(self, engine: LabelingEngine, wrapper: LearnedRewardVecEnv, progress: ProgressLog, clock: WallClock,
                 checkpoint_fn: Callable[[], None] | None, checkpoint_every: int, bar: ProgressBar | None,
                 sac: SACConfig, initial_epochs: int, initial_wait_s: float = float("inf"),
                 pretrained: bool = False, next_feedback: int | None = None, start: int = 0):
        super().__init__(engine, wrapper, progress, clock, checkpoint_fn, checkpoint_every, bar)
        self.sac = sac
        self.log_every, self.last_bucket = sac.log_every, start // sac.log_every
        self.t0 = sac.learning_starts + sac.unsupervised_steps
        self.initial_epochs = initial_epochs
        self.initial_wait_s = initial_wait_s
        self.pretrained = pretrained
        self.next_feedback = next_feedback if next_feedback is not None else self.t0 + sac.feedback_every
        self.relabels = 0

    @property
    def buffer(self) -> PebbleReplayBuffer:
        return self.model.replay_buffer  # type: ignore[return-value]

    def relabel(self) -> None:
        """Every stored reward := the current model's prediction; the online reward follows too."""
        fn = self.engine.ensemble.step_fn()
        self.wrapper.set_reward_fn(fn)
        self.buffer.relabel(fn, self.model.policy.unscale_action)
        self.relabels += 1
        self.logger.record("reward/relabels", self.relabels)

    def _on_rollout_end(self) -> None:
        t = self.num_timesteps
        if not self.pretrained:
            if t >= self.t0:
                self._end_pretraining(t)
        elif t >= self.next_feedback:
            self.next_feedback = (t // self.sac.feedback_every + 1) * self.sac.feedback_every
            self.report = self.engine.step(t, self.pool())
            if self.report.refit is not None:
                self.relabel()
            if self.bar is not None:
                self.bar.postfix(labels=self.report.labels, refits=self.engine.n_refits,
                                 waiting=self.report.outstanding or None)
        if self._row_due():
            self._rollout_pool = self.pool(copy=False)  # the row's clips, for the monitor (views of the ring)
            try:
                ProgressCallback._on_rollout_end(self)
            finally:
                self._rollout_pool = None

    def _end_pretraining(self, t: int) -> None:
        """PEBBLE after unsupervised pre-training: up-front labels on its clips, first fit, relabel, critic reset."""
        pool = self.pool()
        if pool is None:
            return  # no two clips yet: try again after the next steps
        engine = self.engine
        engine.ask_initial(pool)
        if engine.oracle.name == "human" and engine.schedule.initial > 0:
            engine.wait_for_initial(self.initial_wait_s, on_wait=lambda have, need: print(
                f"waiting for human labels: {have}/{need} (run `prefrl label --run-dir {engine.store.root}` "
                "in another terminal)", flush=True))
        engine.refit(self.initial_epochs, ref=pool)
        self.buffer.intrinsic = None
        self.relabel()
        if self.sac.reset_critic:
            reset_critic(self.model)
            if self.sac.reset_updates and filled(self.buffer) * self.buffer.n_envs >= self.model.batch_size:
                self.model.train(gradient_steps=self.sac.reset_updates, batch_size=self.model.batch_size)
        self.pretrained = True
        self.next_feedback = max(self.next_feedback, t + 1)
        self.report = EngineReport(timesteps=t, labels=engine.store.count_judgments(),
                                   outstanding=engine.oracle.outstanding(), refit=engine.metrics or None)
        if self.bar is not None:
            self.bar.postfix(labels=self.report.labels, refits=engine.n_refits)

    def phase(self) -> dict:
        """What a resume needs besides the weights and the buffer."""
        ent = self.buffer.intrinsic
        return {"pretrained": self.pretrained, "next_feedback": self.next_feedback,
                "entropy_rms": ent.state() if ent is not None else None}


def _zero_reward(obs: np.ndarray, acts: np.ndarray) -> np.ndarray:
    """The online reward before the first fit (pre-training trains on the intrinsic reward)."""
    return np.zeros(len(obs), np.float32)


# ---- one SAC arm -----------------------------------------------------------------------------
EngineOpener = Callable[[RunConfig, RunDir, object, np.random.Generator, bool], "tuple[PreferenceStore, LabelingEngine]"]


def run_sac_arm(cfg: RunConfig, rd: RunDir, resume: bool, rng: np.random.Generator, open_engine: EngineOpener) -> dict:
    """One SAC run (PEBBLE on a learned reward, or SAC on the true one) into ``rd``; returns summary.json's content.

    Called by ``train._run_arm`` once the run directory is prepared; ``open_engine`` is
    ``train._open_engine`` (the store, oracle, reward model and trainer of the run), handed in
    so this module stays below ``train`` in the import graph.
    """
    import gymnasium as gym

    task, sac = cfg.task, cfg.task.sac
    learned = cfg.reward == "learned"
    length = clip_length(task)
    venv = make_vec_env(task.env, cfg.seed, render=cfg.keep_frames and learned)
    if not isinstance(venv.action_space, gym.spaces.Box):
        venv.close()
        raise PrefrlError(f"task `{task.name}`: SAC needs continuous (Box) actions, the env has {venv.action_space}")
    mib = task.prefs.pool_mib
    collector = ClipCollector(venv.num_envs, length, task.prefs.pool_size, cfg.keep_frames,
                              max_bytes=None if mib is None else int(mib * 2**20)) if learned else None
    wrapper = LearnedRewardVecEnv(venv, None, collector)  # its termination input: the reward model's, set below
    env = wrap_normalize(task.env, wrapper, sac.gamma)
    model = build_sac(sac, env, cfg.seed, str(rd.tb), replay_buffer_class=PebbleReplayBuffer)
    buffer: PebbleReplayBuffer = model.replay_buffer  # type: ignore[assignment]
    replay_path = rd / REPLAY_FILE

    ckpt = load_sac_checkpoint(rd.agent) if resume and rd.agent.exists() else None
    done_steps, phase = 0, {}
    if ckpt is not None:
        phase = restore_sac_agent(model, env, ckpt)
        done_steps = int(ckpt["num_timesteps"])
        if sac.save_buffer and replay_path.exists():
            buffer.load_npz(replay_path)
        else:
            print(f"{rd.path}: resuming with an empty replay buffer ([sac] save_buffer = false or no {REPLAY_FILE})")
    monitored = learned and task.monitor.enabled
    progress = ProgressLog(rd.progress, PROGRESS_FIELDS + (MONITOR_FIELDS if monitored else []))
    if resume:
        progress.truncate("timesteps", done_steps)
    clock = WallClock(ckpt["wall_s"] if ckpt is not None else 0.0)
    name = f"{task.name} SAC {'learned' if learned else 'true'} reward"
    total = rollout_total(cfg.steps, sac.train_freq, venv.num_envs)
    bar = ProgressBar(name, total, done_steps) if done_steps < cfg.steps else None

    store = engine = monitor = None
    callback: ProgressCallback
    if learned:
        store, engine = open_engine(cfg, rd, venv, rng, resume)
        wrapper.termination_input = buffer.termination_input = engine.ensemble.cfg.termination_input
        pretrained = bool(phase.get("pretrained")) or cfg.reward_model is not None
        if pretrained:
            if cfg.reward_model is None:
                engine.refit(task.prefs.reward_epochs)  # a resume: every judgment so far (as PPO does)
            wrapper.set_reward_fn(engine.ensemble.step_fn())
            buffer.relabel(engine.ensemble.step_fn(), model.policy.unscale_action)
        else:
            wrapper.set_reward_fn(_zero_reward)
            if sac.unsupervised_steps > 0:
                buffer.intrinsic = StateEntropyReward(sac.entropy_k, sac.entropy_subsample, np.random.default_rng(cfg.seed))
                buffer.intrinsic.load_state(phase.get("entropy_rms"))
        callback = PebbleCallback(engine, wrapper, progress, clock, None, cfg.checkpoint_every, bar, sac,
                                  task.prefs.initial_epochs, cfg.initial_wait_s, pretrained=pretrained,
                                  next_feedback=phase.get("next_feedback"), start=done_steps)
        callback.report = EngineReport(timesteps=done_steps, labels=engine.store.count_judgments())
        if monitored:  # the reward-hacking monitor measures as each progress row is written (after pre-training)
            monitor = MonitorCallback(task.monitor, callback, cfg.seed)
            monitor.load_state(saved_monitor_state(ckpt))  # a resume keeps its alarms and counts
            callback.progress = monitor.progress_log(progress)

        def checkpoint() -> None:
            if callback.pretrained:  # before the first fit the model is untrained: nothing to keep
                engine.ensemble.save(rd.reward_model, extra={"timesteps": model.num_timesteps,
                                                             "fit_judgment_id": engine.fit_judgment_id})
            if sac.save_buffer:
                buffer.save_npz(replay_path)
            save_sac_agent(rd.agent, model, env, clock(), callback.phase(),  # last: it marks the checkpoint
                           monitor.state() if monitor is not None else None)
    else:
        def checkpoint() -> None:
            if sac.save_buffer:
                buffer.save_npz(replay_path)
            save_sac_agent(rd.agent, model, env, clock())

        callback = SACProgressCallback(progress, clock, None, cfg.checkpoint_every, bar, sac.log_every, done_steps)
    callback.checkpoint_fn = checkpoint

    remaining = cfg.steps - done_steps
    if remaining > 0:
        model.learn(total_timesteps=remaining, callback=[callback] if monitor is None else [callback, monitor],
                    reset_num_timesteps=not resume, tb_log_name="sac")
    if bar is not None:
        bar.close()
    if engine is not None:
        assert isinstance(callback, PebbleCallback)
        if callback.pretrained and engine.finish(ref=callback.pool()) is not None:
            callback.relabel()  # the saved buffer and reward model agree
        engine.ensemble.save(rd.reward_model, extra={"timesteps": model.num_timesteps,
                                                     "fit_judgment_id": engine.fit_judgment_id})
    wall = clock()
    if sac.save_buffer:
        buffer.save_npz(replay_path)
    save_sac_agent(rd.agent, model, env, wall, callback.phase() if isinstance(callback, PebbleCallback) else None,
                   monitor.state() if monitor is not None else None)
    return finish_arm(cfg, rd, model, env, engine, store, wall, algo="sac",
                      monitor=monitor.summary() if monitor is not None else None)
