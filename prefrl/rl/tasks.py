"""Task presets: one TOML file per task in ``envs/`` (env id, wrappers, PPO, clips, labels).

A preset has the sections ``[env]``, ``[ppo]``, ``[prefs]``, ``[reward_model]`` and
top-level ``name``, ``description``, ``steps``. Every field has a default here, so
a preset only states what differs. Unknown keys are refused with the close matches.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
from dataclasses import dataclass, field
from pathlib import Path

from prefrl.types import PrefrlError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENVS_DIR = Path(__file__).resolve().parents[2] / "envs"


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


@dataclass
class PrefsConfig:
    """Preference collection: clips, label budget and schedule, query selection."""

    labels: int = 700
    """Total label budget (comparisons asked)."""
    clip_seconds: float | None = 1.5
    """Clip length in seconds of play (Christiano et al.: 1.5 s on MuJoCo); uses the env's dt."""
    clip_length: int | None = None
    """Clip length in steps (overrides clip_seconds)."""
    initial_fraction: float = 0.25
    """Share of the budget labeled on random-policy clips before training (Christiano: 25%)."""
    initial_labels: int | None = None
    """Labels on random-policy clips before training; overrides initial_fraction (Christiano, Atari: 500)."""
    rate_horizon: float = 2e6
    """Label rate decays as H / (T + H) with T env steps (Christiano, MuJoCo: H = 2e6)."""
    query: str = "disagreement"
    """Query selection: `disagreement` or `random`."""
    pool_size: int = 500
    """Recent clips kept as query candidates (Christiano: clips of recent trajectories)."""
    pool_mib: float | None = None
    """Memory cap of the clip pool in MiB: it keeps min(pool_size, cap / bytes per clip) clips (None: no cap)."""
    pool_factor: int = 10
    """Candidate pairs drawn per query for disagreement selection."""
    reward_epochs: int = 5
    """Reward-model epochs per retrain during training (warm-started)."""
    retrain_fraction: float = 0.05
    """Retrain once the new labels reach this fraction of those in the last fit (at least 1 new label)."""
    initial_epochs: int = 40
    """Reward-model epochs on the initial labels."""
    members: int = 3
    """Reward ensemble size."""
    target_std: float = 1.0
    """Std of each member's normalised per-step reward."""
    noise_eps: float = 0.1
    """Label noise in the Bradley-Terry model."""
    keep_frames: bool = False
    """Render and keep RGB frames with clips (always on for the human oracle)."""

    def __post_init__(self) -> None:
        if self.labels < 0:
            raise PrefrlError(f"[prefs] labels must be >= 0, got {self.labels}")
        if not 0 <= self.initial_fraction <= 1:
            raise PrefrlError(f"[prefs] initial_fraction must be in [0, 1], got {self.initial_fraction}")
        if self.initial_labels is not None and self.initial_labels < 0:
            raise PrefrlError(f"[prefs] initial_labels must be >= 0, got {self.initial_labels}")
        if self.pool_mib is not None and self.pool_mib <= 0:
            raise PrefrlError(f"[prefs] pool_mib must be > 0, got {self.pool_mib}")

    @property
    def initial_share(self) -> float:
        """Share of the budget labeled up front: ``initial_labels / labels`` (at most 1) when set."""
        if self.initial_labels is None:
            return self.initial_fraction
        return min(1.0, self.initial_labels / self.labels) if self.labels else 0.0


@dataclass
class RewardModelConfig:
    kind: str = "mlp"
    """Reward net kind (`mlp`, `cnn`)."""
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    """Hidden widths."""
    dropout: float = 0.0
    """Dropout after hidden layers."""
    use_actions: bool = True
    """Feed actions to the reward net, r(o, a); false gives r(o) (Christiano's Atari predictor reads frames only)."""
    lr: float = 1e-3
    """Adam learning rate."""
    batch_size: int = 64
    """Comparisons per minibatch."""
    options: dict = field(default_factory=dict)
    """Extra options for the net kind."""


@dataclass
class TaskConfig:
    """A task preset (envs/NAME.toml)."""

    name: str = "custom"
    description: str = ""
    steps: int = 100_000
    """Default env steps of `prefrl train`."""
    env: EnvConfig = field(default_factory=EnvConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    prefs: PrefsConfig = field(default_factory=PrefsConfig)
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict, where: str = "preset") -> TaskConfig:
        return _build(TaskConfig, d, where)


def _build(cls: type, d: dict, where: str) -> object:
    """Build a (nested) dataclass from a dict, refusing unknown keys with close matches."""
    if not isinstance(d, dict):
        raise PrefrlError(f"{where}: expected a table, got {d!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in d.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=3)
            hint = f"; did you mean {', '.join(f'`{c}`' for c in close)}?" if close else ""
            raise PrefrlError(f"{where}: unknown key `{key}`{hint}")
        ftype = fields[key].type
        sub = {"EnvConfig": EnvConfig, "PPOConfig": PPOConfig, "PrefsConfig": PrefsConfig,
               "RewardModelConfig": RewardModelConfig}.get(ftype if isinstance(ftype, str) else getattr(ftype, "__name__", ""))
        kwargs[key] = _build(sub, value, f"{where} [{key}]") if sub else value
    try:
        return cls(**kwargs)
    except PrefrlError as e:
        raise PrefrlError(f"{where}: {e}") from e
    except TypeError as e:
        raise PrefrlError(f"{where}: {e}") from e


def list_tasks(envs_dir: Path = ENVS_DIR) -> dict[str, Path]:
    """Preset name -> file, for every envs/*.toml."""
    return {p.stem: p for p in sorted(envs_dir.glob("*.toml"))}


def load_task(name_or_path: str, envs_dir: Path = ENVS_DIR) -> TaskConfig:
    """Load a preset by name (envs/NAME.toml) or by path to a .toml file."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        tasks = list_tasks(envs_dir)
        if name_or_path not in tasks:
            # Accept env ids too (HalfCheetah-v5 -> the preset whose env.id matches; of several,
            # the shortest name: ALE/Pong-v5 -> pong, not pong-quick).
            matches = [stem for stem, p in tasks.items()
                       if _read_toml(p).get("env", {}).get("id", "").lower() == name_or_path.lower()]
            if matches:
                return load_task(min(matches, key=len), envs_dir)
            close = difflib.get_close_matches(name_or_path.lower(), list(tasks), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(f'`{c}`' for c in close)}?" if close else ""
            raise PrefrlError(f"unknown task `{name_or_path}` (see `prefrl tasks`){hint}")
        path = tasks[name_or_path]
    data = _read_toml(path)
    data.setdefault("name", path.stem)
    return TaskConfig.from_dict(data, where=str(path))


def _read_toml(path: Path) -> dict:
    if not path.is_file():
        raise PrefrlError(f"{path}: no such preset file")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise PrefrlError(f"{path}: invalid TOML ({e})") from e
