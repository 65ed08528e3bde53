"""Task presets: one TOML file per task (env id, wrappers, PPO, clips, labels, reward model).

The presets ship inside the package (``prefrl/control/presets/NAME.toml``); a path to any
other .toml file works wherever a preset name does. A preset has the sections ``[env]``
(``EnvConfig``), ``[ppo]`` (``PPOConfig``), ``[prefs]`` (the labeling engine's
``PrefsConfig``), ``[reward_model]`` (the core's ``RewardModelConfig``) and
``[reward_train]`` (the core's ``RewardTrainConfig``), ``[sac]`` (``SACConfig``, used when
top-level ``algo = "sac"``), and top-level ``name``, ``description``, ``steps``, ``algo``. Each section is the component's own config dataclass, used
as it is by the CLI and sweeps. Every field has a default, so a preset only states what
differs. Unknown keys are refused with the close matches, and every value is checked
against its field's type before anything runs.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
from dataclasses import dataclass, field
from pathlib import Path

from prefrl.core.engine import PrefsConfig
from prefrl.core.monitor import MonitorConfig
from prefrl.core.nets import RewardModelConfig
from prefrl.core.trainer import RewardTrainConfig
from prefrl.core.types import PrefrlError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESETS_DIR = Path(__file__).resolve().parent / "presets"


@dataclass
class EnvConfig:
    """How the environment is built."""

    id: str = "InvertedPendulum-v5"
    """Gymnasium env id."""
    type: str = "mujoco"
    """Env family: `mujoco` / `classic` (vector observations) or `atari` (frames)."""
    n_envs: int = 1
    """Parallel environments (SB3 vector env)."""
    episode: str = "fixed"
    """`fixed`: fixed-length episodes, termination replaced by a penalty and a reset (Christiano et al.
    2017, so episode length leaks no reward information); `terminate`: the env's own termination;
    `truncate`: a termination ends the episode as a truncation (PPO bootstraps through it, so the
    agent gets no end signal, while logs keep per-episode returns; the Atari presets: one game)."""
    max_episode_steps: int | None = None
    """Episode length (None = the env's registered limit)."""
    termination_penalty: float = 0.0
    """True reward added at each (hidden) termination in `fixed` mode; negative is a penalty."""
    normalize_obs: bool = True
    """VecNormalize observations for the policy (the reward model sees raw observations)."""
    normalize_reward: bool = False
    """VecNormalize the reward PPO sees (learned or true: same for both arms)."""
    render_size: int = 128
    """Width and height of rendered frames kept for the viewer and videos."""
    make_kwargs: dict = field(default_factory=dict)
    """Extra keyword arguments to gymnasium.make."""
    atari: dict = field(default_factory=dict)
    """Atari options (frame skip, frame stack, score masking), read by the Atari env builder."""

    def __post_init__(self) -> None:
        if self.episode not in ("fixed", "terminate", "truncate"):
            raise PrefrlError(f"[env] episode must be `fixed`, `terminate` or `truncate`, got `{self.episode}`")
        if self.n_envs < 1:
            raise PrefrlError(f"[env] n_envs must be >= 1, got {self.n_envs}")
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise PrefrlError(f"[env] max_episode_steps must be >= 1, got {self.max_episode_steps}")
        if self.render_size < 8:
            raise PrefrlError(f"[env] render_size must be >= 8, got {self.render_size}")


@dataclass
class PPOConfig:
    """Stable-Baselines3 PPO hyperparameters."""

    n_steps: int = 2048
    """Steps per env per rollout."""
    batch_size: int = 64
    """Minibatch size."""
    n_epochs: int = 10
    """Optimisation epochs per rollout."""
    learning_rate: float = 3e-4
    """Adam learning rate."""
    gamma: float = 0.99
    """Discount."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip_range: float = 0.2
    """PPO clip range."""
    ent_coef: float = 0.0
    """Entropy bonus."""
    vf_coef: float = 0.5
    """Value loss weight."""
    max_grad_norm: float = 0.5
    """Gradient clipping."""
    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    """Hidden sizes of the policy and value MLPs."""
    log_std_init: float = 0.0
    """Initial log std of the Gaussian policy (continuous actions)."""
    policy: str = "MlpPolicy"
    """SB3 policy class name (`CnnPolicy` for Atari)."""

    def __post_init__(self) -> None:
        for name, low in (("n_steps", 1), ("batch_size", 2), ("n_epochs", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise PrefrlError(f"[ppo] {name} must be an integer >= {low}, got {v!r}")
        if not self.learning_rate > 0 or not self.clip_range > 0:
            raise PrefrlError("[ppo] learning_rate and clip_range must be > 0")
        if not (0 < self.gamma <= 1 and 0 <= self.gae_lambda <= 1):
            raise PrefrlError(f"[ppo] gamma must be in (0, 1] and gae_lambda in [0, 1], got {self.gamma}, {self.gae_lambda}")
        if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.net_arch):
            raise PrefrlError(f"[ppo] net_arch must be a list of widths >= 1, got {self.net_arch!r}")
        if self.policy not in ("MlpPolicy", "CnnPolicy"):
            raise PrefrlError(f"[ppo] policy must be `MlpPolicy` or `CnnPolicy`, got {self.policy!r}")


# ---- SAC / PEBBLE ----------------------------------------------------------------------------
@dataclass
class SACConfig:
    """Stable-Baselines3 SAC and PEBBLE (Lee, Smith, Abbeel 2021) settings (preset ``[sac]``, ``algo = "sac"``).

    The defaults are rl-zoo's SAC MuJoCo hyperparameters and PEBBLE's pre-training and feedback
    cadence. Env steps run: ``learning_starts`` random actions, then ``unsupervised_steps`` of
    SAC on a state-entropy reward (PEBBLE's unsupervised pre-training), then the up-front labels
    on that experience, a refit, a relabeled replay buffer, and SAC on the learned reward with
    the labeling engine called every ``feedback_every`` steps.
    """

    learning_starts: int = 10_000
    """Random-action steps before SAC starts learning (rl-zoo MuJoCo: 10000; PEBBLE: 1000)."""
    batch_size: int = 256
    """Minibatch size."""
    buffer_size: int = 1_000_000
    """Replay buffer capacity (transitions)."""
    learning_rate: float = 3e-4
    """Adam learning rate of actor, critics and entropy temperature."""
    tau: float = 0.005
    """Polyak coefficient of the target critics."""
    gamma: float = 0.99
    """Discount."""
    train_freq: int = 1
    """Env steps between updates."""
    gradient_steps: int = 1
    """Gradient steps per update."""
    net_arch: list[int] = field(default_factory=lambda: [256, 256])
    """Hidden sizes of the actor and critic MLPs."""
    ent_coef: str | float = "auto"
    """Entropy temperature: `auto` (learned, SB3), `auto_INIT`, or a fixed number > 0."""
    unsupervised_steps: int = 9_000
    """Steps after `learning_starts` of unsupervised pre-training on the state-entropy reward
    (PEBBLE: 9000 after 1000 random steps); 0 = none (the up-front labels come from the random steps)."""
    entropy_k: int = 5
    """k of the k-nearest-neighbour state-entropy estimate (PEBBLE: 5)."""
    entropy_subsample: int = 10_000
    """Buffer observations the kNN distances of each batch are computed against (a random subsample)."""
    reset_critic: bool = True
    """Re-initialise the critics after pre-training (PEBBLE: Q was fit to the intrinsic reward)."""
    reset_updates: int = 100
    """Gradient steps on the relabeled buffer right after the critic reset (PEBBLE: 100)."""
    feedback_every: int = 5_000
    """Env steps between calls of the labeling engine after pre-training (PEBBLE's feedback frequency)."""
    log_every: int = 1_000
    """Env steps between progress rows; a checkpoint every `checkpoint_every` rows."""
    save_buffer: bool = True
    """Checkpoint the replay buffer (replay.npz) so `--resume` continues with it; false: a resume restarts it empty."""

    def __post_init__(self) -> None:
        for name, low in (("learning_starts", 0), ("batch_size", 2), ("buffer_size", 1), ("train_freq", 1),
                          ("gradient_steps", 1), ("unsupervised_steps", 0), ("entropy_k", 1),
                          ("entropy_subsample", 2), ("reset_updates", 0), ("feedback_every", 1), ("log_every", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise PrefrlError(f"[sac] {name} must be an integer >= {low}, got {v!r}")
        if not self.learning_rate > 0 or not 0 < self.tau <= 1 or not 0 < self.gamma <= 1:
            raise PrefrlError("[sac] learning_rate must be > 0, tau and gamma in (0, 1]")
        if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.net_arch):
            raise PrefrlError(f"[sac] net_arch must be a list of widths >= 1, got {self.net_arch!r}")
        ok = isinstance(self.ent_coef, (int, float)) and not isinstance(self.ent_coef, bool) and self.ent_coef > 0
        if isinstance(self.ent_coef, str):
            head, _, init = self.ent_coef.partition("_")
            try:
                ok = head == "auto" and (not init or float(init) > 0)
            except ValueError:
                ok = False
        if not ok:
            raise PrefrlError(f"[sac] ent_coef must be `auto`, `auto_INIT` or a number > 0, got {self.ent_coef!r}")
        for name in ("reset_critic", "save_buffer"):
            if not isinstance(getattr(self, name), bool):
                raise PrefrlError(f"[sac] {name} must be true or false, got {getattr(self, name)!r}")


ALGOS = ("ppo", "sac")
# ---- end SAC / PEBBLE ------------------------------------------------------------------------


@dataclass
class TaskConfig:
    """A task preset (prefrl/control/presets/NAME.toml, or any .toml file)."""

    name: str = "custom"
    description: str = ""
    steps: int = 100_000
    """Default env steps of `prefrl train`."""
    env: EnvConfig = field(default_factory=EnvConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    prefs: PrefsConfig = field(default_factory=PrefsConfig)
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)
    reward_train: RewardTrainConfig = field(default_factory=RewardTrainConfig)
    algo: str = "ppo"
    """Learner: `ppo` (Christiano et al. 2017) or `sac` (PEBBLE, Lee et al. 2021; settings in [sac])."""
    sac: SACConfig = field(default_factory=SACConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    """The reward-hacking monitor (learned-reward runs, PPO and PEBBLE; prefrl.core.monitor)."""

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise PrefrlError(f"`steps` must be an integer >= 1, got {self.steps!r}")
        if self.algo not in ALGOS:
            raise PrefrlError(f"`algo` must be one of {', '.join(ALGOS)}, got {self.algo!r}")
        if self.reward_model.termination_input and self.env.episode == "terminate":
            raise PrefrlError("[reward_model] termination_input marks the terminations a wrapper hides; with "
                              '[env] episode = "terminate" none are hidden (use "fixed" or "truncate")')
        if self.reward_train.shift and self.reward_model.kind != "cnn":
            raise PrefrlError(f"[reward_train] shift = {self.reward_train.shift} moves image observations; the "
                              f"`{self.reward_model.kind}` reward net reads vectors (use it with kind = \"cnn\", or shift = 0)")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["reward_model"]["hidden"] = list(self.reward_model.hidden)
        return d

    @staticmethod
    def from_dict(d: dict, where: str = "preset") -> TaskConfig:
        return _build(TaskConfig, d, where)

    def with_overrides(self, overrides: dict, where: str = "overrides") -> TaskConfig:
        """This preset with fields replaced, nested like the TOML (``{"prefs": {"labels": 100}}``),
        validated like a preset file. The CLI's ``--labels`` and sweeps' overrides both come here."""
        return TaskConfig.from_dict(_deep_merge(self.to_dict(), overrides), where=where)


# keys that moved between sections: a preset using the old place gets told where they went
_MOVED = {
    ("prefs", "members"): "reward_model", ("prefs", "target_std"): "reward_model",
    ("prefs", "noise_eps"): "reward_train", ("reward_model", "lr"): "reward_train",
    ("reward_model", "batch_size"): "reward_train",
}
_SECTIONS = {"EnvConfig": EnvConfig, "PPOConfig": PPOConfig, "PrefsConfig": PrefsConfig,
             "RewardModelConfig": RewardModelConfig, "RewardTrainConfig": RewardTrainConfig,
             "SACConfig": SACConfig, "MonitorConfig": MonitorConfig}
_FREE_DICTS = ("make_kwargs", "atari", "options")


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in _FREE_DICTS:
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v  # unknown keys are refused by TaskConfig.from_dict with close matches
    return out


def _check_type(value: object, hint: object, where: str, key: str) -> None:
    """Refuse a value of the wrong type for a field (``int``, ``float``, ``bool``, ``str``, lists, optionals)."""
    import types
    import typing

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                _check_type(value, a, where, key)
                return
            except PrefrlError as e:
                errors.append(e)
        raise errors[0]
    want = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a table"}
    ok = True
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif hint is str:
        ok = isinstance(value, str)
    elif hint is dict or origin is dict:
        ok = isinstance(value, dict)
    elif origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise PrefrlError(f"{where}: `{key}` must be a list, got {value!r}")
        inner = [a for a in typing.get_args(hint) if a is not Ellipsis]
        for v in value:
            if inner:
                _check_type(v, inner[0], where, key)
        return
    if not ok:
        raise PrefrlError(f"{where}: `{key}` must be {want.get(hint, str(hint))}, got {value!r}")


def _build(cls: type, d: dict, where: str) -> object:
    """Build a (nested) config dataclass from a dict: unknown keys refused with close matches,
    every value checked against its field's type, then the dataclass's own checks."""
    import typing

    if not isinstance(d, dict):
        raise PrefrlError(f"{where}: expected a table, got {d!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    section = where.rsplit("[", 1)[-1].rstrip("]") if "[" in where else ""
    kwargs = {}
    for key, value in d.items():
        if key not in fields:
            moved = _MOVED.get((section, key))
            if moved:
                raise PrefrlError(f"{where}: `{key}` belongs in [{moved}] now (moved from [{section}])")
            close = difflib.get_close_matches(key, list(fields), n=3)
            hint = f"; did you mean {', '.join(f'`{c}`' for c in close)}?" if close else ""
            raise PrefrlError(f"{where}: unknown key `{key}`{hint}")
        sub = _SECTIONS.get(getattr(hints[key], "__name__", ""))
        if sub is not None:
            kwargs[key] = _build(sub, value, f"{where} [{key}]")
        else:
            _check_type(value, hints[key], where, key)
            kwargs[key] = value
    try:
        return cls(**kwargs)
    except (PrefrlError, TypeError, ValueError) as e:
        msg = str(e)
        for prefix in ("[env] ", "[prefs] ", "[ppo] ", "[sac] ", "[monitor] "):
            msg = msg.removeprefix(prefix)
        raise PrefrlError(f"{where}: {msg}") from e


def list_tasks(presets_dir: Path = PRESETS_DIR) -> dict[str, Path]:
    """Preset name -> file, for every presets/*.toml."""
    return {p.stem: p for p in sorted(presets_dir.glob("*.toml"))}


def load_task(name_or_path: str, presets_dir: Path = PRESETS_DIR) -> TaskConfig:
    """Load a preset by name (presets/NAME.toml) or by path to a .toml file."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        tasks = list_tasks(presets_dir)
        if name_or_path not in tasks:
            # Accept env ids too (HalfCheetah-v5 -> the preset whose env.id matches; of several,
            # the shortest name: ALE/Pong-v5 -> pong, not pong-quick).
            matches = [stem for stem, p in tasks.items()
                       if _read_toml(p).get("env", {}).get("id", "").lower() == name_or_path.lower()]
            if matches:
                return load_task(min(matches, key=len), presets_dir)
            close = difflib.get_close_matches(name_or_path.lower(), list(tasks), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(f'`{c}`' for c in close)}?" if close else ""
            raise PrefrlError(f"unknown task `{name_or_path}` (see `prefrl tasks`){hint}")
        path = tasks[name_or_path]
    data = _read_toml(path)
    data.setdefault("name", path.stem)
    return TaskConfig.from_dict(data, where=str(path))


def _read_toml(path: Path) -> dict:
    """A preset file's TOML; every way it can be unreadable is a ``PrefrlError`` naming the file."""
    if not path.is_file():
        raise PrefrlError(f"{path}: no such preset file")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise PrefrlError(f"{path}: invalid TOML ({e})") from e
    except UnicodeDecodeError as e:
        line = e.object[: e.start].count(b"\n") + 1 if isinstance(e.object, bytes) else "?"
        raise PrefrlError(f"{path}:{line}: not UTF-8 text (byte 0x{e.object[e.start]:02x}); TOML files are UTF-8") from e
    except RecursionError as e:
        raise PrefrlError(f"{path}: invalid TOML (nested too deeply)") from e
    except ValueError as e:  # e.g. an integer beyond Python's int-string conversion limit
        raise PrefrlError(f"{path}: invalid TOML ({str(e).split(';')[0]})") from e
    except OSError as e:
        raise PrefrlError(f"{path}: cannot read ({e.strerror or e})") from e
