"""The run directory: every file name of a run, its progress log and the store's metadata keys.

One run (a control agent, a text policy, a reward model fit) writes one directory::

    config.json         everything needed to rerun (resolved task preset included)
    prefs.sqlite        preference store (+ clips/ with the labeled clips)
    agent.pt            control: PPO policy + optimiser + VecNormalize statistics (weights_only)
    reward_model.pt     reward ensemble (weights_only)
    policy/             text: the trained policy (Hugging Face directory)
    tb/                 TensorBoard scalars
    progress.csv        one row per update (PPO rollout, text step)
    learning_curve.png  true return vs env steps (and the baseline's, when run)
    videos/agent.mp4    the trained agent
    summary.json        final figures
    baseline/           the true-reward run (``--baseline``), same layout

Everything that reads or writes these names goes through ``RunDir`` (control, text, sweeps,
scripts), so the layout is defined once. JSON files are written atomically (a temporary
file renamed into place), so a crash or a full disk never leaves a half-written config.
"""

from __future__ import annotations

import csv
import json
import math
import os
from enum import Enum
from pathlib import Path

from prefrl.core.types import PrefrlError


class Meta(str, Enum):
    """Keys of the preference store's ``meta`` table that a run writes and the viewer reads."""

    LABEL_BUDGET = "label_budget"
    """How many judgments the run will ask for (the viewer's progress bar)."""
    STATUS = "status"
    """`running` while the learner trains, `finished` after (the viewer then says so and stops)."""
    TASK = "task"
    """The task preset's name."""
    RENDER_FPS = "render_fps"
    """Playback speed of clips in the viewer: the env's real-time frame rate."""
    FIT_JUDGMENT_ID = "fit_judgment_id"
    """The newest judgment id the saved reward model was fit on (a resume refits on later ones)."""


class RunDir:
    """Names and atomic I/O of one run directory (see the module docstring for the layout).

    Args:
        path: the directory (not created until something is written).
    """

    CONFIG = "config.json"
    STORE = "prefs.sqlite"
    AGENT = "agent.pt"
    REWARD_MODEL = "reward_model.pt"
    POLICY = "policy"
    TB = "tb"
    PROGRESS = "progress.csv"
    CURVE = "learning_curve.png"
    VIDEOS = "videos"
    SUMMARY = "summary.json"
    BASELINE = "baseline"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # ---- paths ---------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def store(self) -> Path:
        return self.path / self.STORE

    @property
    def agent(self) -> Path:
        return self.path / self.AGENT

    @property
    def reward_model(self) -> Path:
        return self.path / self.REWARD_MODEL

    @property
    def policy(self) -> Path:
        return self.path / self.POLICY

    @property
    def tb(self) -> Path:
        return self.path / self.TB

    @property
    def progress(self) -> Path:
        return self.path / self.PROGRESS

    @property
    def curve(self) -> Path:
        return self.path / self.CURVE

    def video(self, name: str = "agent") -> Path:
        return self.path / self.VIDEOS / f"{name}.mp4"

    @property
    def summary(self) -> Path:
        return self.path / self.SUMMARY

    @property
    def baseline(self) -> RunDir:
        return RunDir(self.path / self.BASELINE)

    # ---- state ---------------------------------------------------------------------------
    def status(self) -> str:
        """`finished` (summary.json), `interrupted` (config.json, no summary) or `new`."""
        if self.summary.is_file():
            return "finished"
        if self.config.is_file():
            return "interrupted"
        return "new"

    def mkdir(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise PrefrlError(f"{self.path}: exists and is not a directory")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PrefrlError(f"{self.path}: cannot create the run directory ({e.strerror or e})") from e

    # ---- JSON files ----------------------------------------------------------------------
    def write_json(self, name: str, obj: object) -> Path:
        """Write ``name`` atomically (temporary file, fsync, rename)."""
        return write_json_atomic(self.path / name, obj)

    def read_json(self, name: str) -> dict:
        return read_json(self.path / name)

    def write_config(self, cfg: dict) -> Path:
        return self.write_json(self.CONFIG, cfg)

    def read_config(self) -> dict:
        if not self.config.is_file():
            raise PrefrlError(f"{self.path}: not a prefrl run directory (no {self.CONFIG})")
        return self.read_json(self.CONFIG)

    def write_summary(self, summary: dict) -> Path:
        return self.write_json(self.SUMMARY, summary)

    def read_summary(self) -> dict:
        return self.read_json(self.SUMMARY)


def write_json_atomic(path: Path, obj: object) -> Path:
    """Write JSON to ``path`` through a temporary name in the same directory and rename it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w") as f:
            f.write(json.dumps(obj, indent=2, default=str))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise PrefrlError(f"{path}: could not write ({e.strerror or e})") from e
    return path


def read_json(path: Path) -> dict:
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise PrefrlError(f"{path}: missing") from e
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise PrefrlError(f"{path}: unreadable JSON ({type(e).__name__}: {str(e)[:200]})") from e
    if not isinstance(obj, dict):
        raise PrefrlError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


class ProgressLog:
    """``progress.csv``: one row per update, written by control and text runs alike.

    The columns are the union of the keys logged so far, in first-seen order; the file is
    rewritten when a new key appears (rare: the first rows), otherwise a row is appended.
    An existing file is continued (a resume), and ``truncate`` drops the rows written
    after a checkpoint so a resumed run does not repeat them.

    Args:
        path: the CSV file.
        fields: columns to start with (their order is kept).
    """

    def __init__(self, path: str | Path, fields: list[str] | None = None):
        self.path = Path(path)
        self.fields: list[str] = list(fields or [])
        self.rows: list[dict] = []
        if self.path.is_file() and self.path.stat().st_size > 0:
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                self.rows = [dict(r) for r in reader]
                for k in reader.fieldnames or []:
                    if k not in self.fields:
                        self.fields.append(k)

    def write(self, row: dict) -> None:
        row = {k: _csv_value(v) for k, v in row.items()}
        new = [k for k in row if k not in self.fields]
        self.rows.append(row)
        if new or len(self.rows) == 1:
            self.fields += new
            self._rewrite()
        else:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore").writerow(row)

    def truncate(self, key: str, last: float) -> int:
        """Drop rows whose ``key`` is above ``last`` (rows written after a checkpoint); returns how many."""
        keep = [r for r in self.rows if not _above(r.get(key), last)]
        dropped = len(self.rows) - len(keep)
        if dropped:
            self.rows = keep
            self._rewrite()
        return dropped

    def _rewrite(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(self.rows)
        os.replace(tmp, self.path)


def _csv_value(v: object) -> object:
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return v


def _above(v: object, last: float) -> bool:
    try:
        return float(v) > last  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
