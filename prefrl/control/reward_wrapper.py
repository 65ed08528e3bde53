"""Learned reward for SB3: a VecEnvWrapper that scores every step, and the clip collector.

``LearnedRewardVecEnv`` keeps the actions in ``step_async``; in ``step_wait`` it scores
(previous obs, action) for all envs in one batched forward pass, replaces the env
reward by the prediction and keeps the true reward in ``info["true_reward"]``
(imitation: rewards/reward_wrapper.py does the same). It also cuts the stream into
clips of ``clip_length`` steps for the preference loop.

With ``defer`` on (PPO without reward normalisation: ``PreferenceCallback`` turns it on),
``step_wait`` returns 0 and keeps the (obs, action) pairs; ``settle()`` scores the whole
rollout in large batches at its end, and the callback adds those rewards to PPO's rollout
buffer before advantages are recomputed. PPO reads rewards only after the rollout, so the
result is the same reward from the same model, at half the cost for a CNN reward model
(a forward pass over 8 frames costs ~2x per frame what one over 256 does on CPU). With an
ensemble's ``StepReward``, ``settle()`` also hands each step's member rewards to the collector,
so the clips of the rollout come with their member returns (``ClipCollector.scored_returns``)
and query selection does not score them again.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from prefrl.core.ensemble import StepReward
from prefrl.core.types import Clips

RewardFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(obs (B, *obs_shape), acts (B, *act_shape)) -> rewards (B,) float32."""


def with_termination_flag(obs: np.ndarray, terminated: np.ndarray) -> np.ndarray:
    """The reward model's observation with a termination input: (B, *obs_shape) -> (B, D + 1)
    float32, the flattened observation followed by 1.0 where the step's termination was hidden."""
    obs = np.asarray(obs, np.float32).reshape(len(obs), -1)
    return np.concatenate([obs, np.asarray(terminated, np.float32).reshape(-1, 1)], axis=1)


def hidden_terminations(infos: list[dict]) -> np.ndarray:
    """(B,) bool: the steps whose termination a wrapper hid (``info["terminated_hidden"]``)."""
    return np.array([bool(info.get("terminated_hidden", False)) for info in infos])


class ClipCollector:
    """Cuts per-env step streams into non-overlapping clips kept in a ring-buffer pool.

    A clip never spans an episode boundary. The pool keeps the ``pool_size`` most
    recent clips in preallocated ring arrays; memory is bounded by ``pool_size`` x bytes
    per clip, and by ``max_bytes`` when given: the first clip fixes ``clip_nbytes`` and
    the pool then keeps ``capacity = min(pool_size, max_bytes // clip_nbytes)`` clips (at
    least 2). ``clips()`` copies the pool (its peak is then twice that); ``clips(copy=False)``
    gives views, valid until the next ``add``. Each clip has a serial number (``keys()``),
    so a learner can cache predictions of clips it has already scored. Member rewards of the
    steps, scored after they were added (``attach_scores``, by a deferred rollout scoring), stay
    beside the clips: ``scored_returns`` gives the member returns of the clips one model scored whole.

    Args:
        n_envs: number of parallel envs.
        clip_length: steps per clip (T).
        pool_size: clips kept.
        keep_frames: keep ``info["frame"]`` with each step.
        max_bytes: memory cap of the pool (obs, actions, rewards and frames), or None.
    """

    def __init__(self, n_envs: int, clip_length: int, pool_size: int, keep_frames: bool = False,
                 max_bytes: int | None = None):
        self.n_envs = n_envs
        self.clip_length = clip_length
        self.pool_size = pool_size
        self.keep_frames = keep_frames
        self.max_bytes = max_bytes
        self.capacity = pool_size
        """Clips the pool keeps: ``pool_size``, lowered by ``max_bytes`` once ``clip_nbytes`` is known."""
        self.clip_nbytes: int | None = None
        self._cur: list[list[tuple]] = [[] for _ in range(n_envs)]
        self._ring: list[np.ndarray | None] = []  # obs, acts, true rews, frames: (capacity, T, ...) each
        self._keys: list[int] = []  # serial number of the clip in each ring slot
        self._next = 0  # ring-buffer write position
        self.total_clips = 0
        # member rewards of the steps, attached after the fact (``attach_scores``): the run's steps
        # since the last attach, as (token of the clip being cut, position) per env; the clip tokens
        # of each env's clip in progress and of each ring slot; (T, M) rewards and (T,) revisions
        self._log: list[list[tuple[int, int]]] = []
        self._tokens = 0
        self._cur_token = [self._new_token() for _ in range(n_envs)]
        self._cur_scores: list[dict[int, tuple[np.ndarray, int]]] = [{} for _ in range(n_envs)]
        self._slot_token: list[int] = []
        self._token_slot: dict[int, int] = {}
        self._scores: np.ndarray | None = None  # (capacity, T, M) float32
        self._revisions: np.ndarray | None = None  # (capacity, T) int64, -1: not scored
        self._n_members = 0

    def _new_token(self) -> int:
        self._tokens += 1
        return self._tokens

    def _restart(self, i: int) -> None:
        self._cur[i] = []
        self._cur_token[i] = self._new_token()
        self._cur_scores[i] = {}

    def reset_env(self, i: int) -> None:
        self._restart(i)
        self._log = []  # steps before a reset are never scored here

    def add(self, obs: np.ndarray, acts: np.ndarray, rews: np.ndarray, dones: np.ndarray, infos: list[dict],
            scored_later: bool = False) -> None:
        """One vector step: obs (B, ...) before the action, acts (B, ...), true rews (B,), dones (B,).
        ``scored_later``: ``attach_scores`` will give this step's member rewards (it is logged till then)."""
        where = []
        for i in range(self.n_envs):
            frame = infos[i].get("frame") if self.keep_frames else None
            if scored_later:
                where.append((self._cur_token[i], len(self._cur[i])))
            self._cur[i].append((obs[i], acts[i], float(rews[i]), frame))
            if len(self._cur[i]) == self.clip_length:
                self._emit(self._cur[i], self._cur_token[i], self._cur_scores[i])
                self._restart(i)
            if dones[i]:
                self._restart(i)  # a clip never crosses an episode boundary
        if scored_later:
            self._log.append(where)

    def attach_scores(self, raw: np.ndarray, revision: int) -> None:
        """The member rewards of the last ``len(raw)`` vector steps added: (steps, n_envs, M), by the
        model of ``revision``. A clip whose steps all carry the same revision has its member returns
        without scoring (``scored_returns``). Steps of clips cut away since are dropped."""
        raw = np.asarray(raw, np.float32)
        log, self._log = self._log[len(self._log) - len(raw):] if len(raw) <= len(self._log) else [], []
        if not log:
            return
        self._n_members = raw.shape[-1]
        self._alloc_scores()
        for k, where in enumerate(log):
            for i, (token, pos) in enumerate(where):
                if token == self._cur_token[i]:
                    self._cur_scores[i][pos] = (raw[k, i], revision)
                elif token in self._token_slot and self._scores is not None:
                    slot = self._token_slot[token]
                    self._scores[slot, pos] = raw[k, i]
                    self._revisions[slot, pos] = revision  # type: ignore[index]

    def _alloc_scores(self) -> None:
        """The score ring beside the clip ring, once both the members and the capacity are known."""
        if self._scores is None and self._n_members and self._ring:
            self._scores = np.zeros((self.capacity, self.clip_length, self._n_members), np.float32)
            self._revisions = np.full((self.capacity, self.clip_length), -1, np.int64)

    def scored_returns(self, revision: int) -> dict[int, np.ndarray]:
        """{serial number: (M,) raw member returns} of the pool's clips whose every step was scored
        by the model of ``revision`` (``attach_scores``)."""
        if self._scores is None or self._revisions is None:
            return {}
        n = len(self._keys)
        whole = (self._revisions[:n] == revision).all(axis=1)
        sums = self._scores[:n].sum(axis=1)
        return {self._keys[s]: sums[s] for s in np.flatnonzero(whole)}

    def _emit(self, steps: list[tuple], token: int = 0, scores: dict[int, tuple[np.ndarray, int]] | None = None) -> None:
        clip = (
            np.stack([s[0] for s in steps]),
            np.stack([s[1] for s in steps]),
            np.array([s[2] for s in steps], np.float32),
            np.stack([s[3] for s in steps]) if self.keep_frames and steps[0][3] is not None else None,
        )
        if self.clip_nbytes is None:
            self.clip_nbytes = sum(a.nbytes for a in clip if a is not None)
            if self.max_bytes is not None:
                self.capacity = max(2, min(self.pool_size, self.max_bytes // self.clip_nbytes))
            self._ring = [None if a is None else np.empty((self.capacity, *a.shape), a.dtype) for a in clip]
        for ring, a in zip(self._ring, clip):
            if ring is not None and a is not None:
                ring[self._next] = a
        if len(self._keys) < self.capacity:
            self._keys.append(self.total_clips)
            self._slot_token.append(token)
        else:
            self._keys[self._next] = self.total_clips
            self._token_slot.pop(self._slot_token[self._next], None)
            self._slot_token[self._next] = token
        self._token_slot[token] = self._next
        self._alloc_scores()
        if self._scores is not None and self._revisions is not None:
            self._revisions[self._next] = -1
            for pos, (r, rev) in (scores or {}).items():
                self._scores[self._next, pos] = r
                self._revisions[self._next, pos] = rev
        self._next = (self._next + 1) % self.capacity
        self.total_clips += 1

    def __len__(self) -> int:
        return len(self._keys)

    def keys(self) -> list[int]:
        """Serial numbers of the pool's clips, in the order of ``clips()`` (a clip's number never changes)."""
        return list(self._keys)

    def clips(self, copy: bool = True) -> Clips:
        """All clips in the pool as one ``Clips`` batch (ring order); ``copy=False``: views of the ring,
        overwritten by later clips, for a caller done with them before the next ``add``."""
        if not self._keys:
            raise ValueError("no clips collected yet")
        n = len(self._keys)
        obs, acts, rew, frames = (None if a is None else (a[:n].copy() if copy else a[:n]) for a in self._ring)
        return Clips(obs=obs, acts=acts, true_rew=rew, frames=frames)


class LearnedRewardVecEnv(VecEnvWrapper):
    """Replace the env reward by a reward model's prediction, batched over envs.

    Args:
        venv: the vector env (with ``Monitor`` beneath, so episode stats stay true).
        reward_fn: batched reward callable; None keeps the true reward (the baseline arm,
            same code path).
        collector: where steps are cut into clips, or None.

        termination_input: the reward model's observation (what it is scored on, and what the
            collector's clips hold) is the flattened observation plus a 0/1 feature that is 1 at steps
            whose termination was hidden (``RewardModelConfig.termination_input``).

    Note:
        ``info["true_reward"]`` holds the env reward of every step; ``info["learned_reward"]``
        the prediction. The reward model sees the observation the action was taken in.
    """

    def __init__(self, venv: VecEnv, reward_fn: RewardFn | None, collector: ClipCollector | None = None,
                 defer: bool = False, termination_input: bool = False):
        super().__init__(venv)
        self.reward_fn = reward_fn
        self.defer = defer
        self.termination_input = termination_input
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (obs, acts, dones) of unscored steps
        self.collector = collector
        self._last_obs: np.ndarray | None = None
        self._actions: np.ndarray | None = None
        self.learned_return_sum = np.zeros(self.num_envs)
        self.learned_episode_returns: list[float] = []

    def set_reward_fn(self, reward_fn: RewardFn | None) -> None:
        self.reward_fn = reward_fn

    def reset(self) -> np.ndarray:
        obs = self.venv.reset()
        self._last_obs = obs
        self._pending = []
        if self.collector is not None:
            for i in range(self.num_envs):
                self.collector.reset_env(i)
        self.learned_return_sum[:] = 0
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)
        self.venv.step_async(actions)

    def step_wait(self):
        obs, true_rews, dones, infos = self.venv.step_wait()
        prev = self._last_obs
        assert prev is not None and self._actions is not None, "step before reset"
        if self.termination_input:
            prev = with_termination_flag(prev, hidden_terminations(infos))
        deferred = self.defer and self.reward_fn is not None
        if self.reward_fn is None:
            rews = np.asarray(true_rews, np.float32)
        elif deferred:
            rews = np.zeros(self.num_envs, np.float32)  # scored by settle() at the rollout's end
            self._pending.append((prev, self._actions, np.asarray(dones, bool).copy()))
        else:
            rews = np.asarray(self.reward_fn(prev, self._actions), np.float32)
        for i, info in enumerate(infos):
            info["true_reward"] = float(true_rews[i])
            if not deferred:
                info["learned_reward"] = float(rews[i])
        if self.collector is not None:  # settle() gives a StepReward's member rewards of deferred steps
            self.collector.add(prev, self._actions, true_rews, dones, infos,
                               scored_later=deferred and isinstance(self.reward_fn, StepReward))
        if not deferred:
            self._account(rews, dones)
        self._last_obs = obs
        return obs, rews, dones, infos

    def _account(self, rews: np.ndarray, dones: np.ndarray) -> None:
        self.learned_return_sum += rews
        for i in np.flatnonzero(dones):
            self.learned_episode_returns.append(float(self.learned_return_sum[i]))
            self.learned_return_sum[i] = 0

    def settle(self, chunk: int = 128) -> np.ndarray:
        """Score the steps taken since the last call (deferred mode): (steps, n_envs) float32 rewards.

        The steps go through the reward model ``chunk`` at a time (x n_envs frames per pass). With a
        ``StepReward``, the members' raw rewards go to the collector (``attach_scores``) as well.
        """
        pending, self._pending = self._pending, []
        if not pending or self.reward_fn is None:
            return np.zeros((len(pending), self.num_envs), np.float32)
        n, b = len(pending), self.num_envs
        out = np.empty((n, b), np.float32)
        fn = self.reward_fn
        keep = isinstance(fn, StepReward) and self.collector is not None  # the members' rewards, for the pool
        raw = np.empty((n, b, 0), np.float32)
        for s in range(0, n, chunk):
            part = pending[s : s + chunk]
            obs = np.concatenate([p[0] for p in part])
            acts = np.concatenate([np.asarray(p[1]).reshape(b, *np.shape(p[1])[1:]) for p in part])
            if keep:
                members = fn.members(obs, acts)  # (len(part) * b, M)
                if s == 0:
                    raw = np.empty((n, b, members.shape[-1]), np.float32)
                raw[s : s + len(part)] = members.reshape(len(part), b, -1)
                out[s : s + len(part)] = fn.combine(members).reshape(len(part), b)
            else:
                out[s : s + len(part)] = np.asarray(fn(obs, acts), np.float32).reshape(len(part), b)
        if keep:
            self.collector.attach_scores(raw, fn.revision)  # type: ignore[union-attr]
        for k, (_, _, dones) in enumerate(pending):
            self._account(out[k], dones)
        return out
