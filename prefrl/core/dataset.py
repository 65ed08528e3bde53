"""Preference datasets on disk: ``clips.npz`` + ``comparisons.jsonl`` (the import/export format).

``clips.npz`` holds arrays ``obs`` (N, T, ...), ``acts`` (N, T, ...) and optionally
``true_rew`` (N, T) and ``frames`` (N, T, H, W, 3); ``comparisons.jsonl`` one object per line
with integer clip indices ``left`` and ``right``, ``label`` = P(left preferred) in [0, 1], and
optional ``source``, ``annotator``, ``time``. Reading validates every line and names the file
and line of the first problem; writing goes through temporary names renamed into place, so an
interrupted export never leaves a truncated file under the real name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from prefrl.core.types import Clips, Comparisons, PrefrlError

CLIPS_FILE = "clips.npz"
COMPARISONS_FILE = "comparisons.jsonl"


def write_dataset(out: str | Path, clips: Clips, records: list[dict]) -> None:
    """Write ``clips.npz`` and ``comparisons.jsonl`` under ``out`` (each atomically)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PrefrlError(f"{out}: exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp_npz = out / f".{CLIPS_FILE}.tmp.npz"
        clips.save_npz(tmp_npz)
        tmp_jsonl = out / f".{COMPARISONS_FILE}.tmp"
        with open(tmp_jsonl, "w") as f:
            for rec in records:
                f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_npz, out / CLIPS_FILE)
        os.replace(tmp_jsonl, out / COMPARISONS_FILE)
    except OSError as e:
        for t in (out / f".{CLIPS_FILE}.tmp.npz", out / f".{COMPARISONS_FILE}.tmp"):
            t.unlink(missing_ok=True)
        raise PrefrlError(f"{out}: could not write the dataset ({e.strerror or e})") from e


def load_dataset(root: str | Path) -> tuple[Clips, Comparisons, list[dict]]:
    """Read a preference dataset directory, validating every line.

    Args:
        root: directory with ``clips.npz`` and ``comparisons.jsonl`` (see the module docstring).

    Returns:
        clips, comparisons (indices into clips), and the raw JSON records.

    Raises:
        PrefrlError: naming the file (and line) and what is wrong.
    """
    root = Path(root)
    if not root.is_dir():
        raise PrefrlError(f"{root}: no such dataset directory")
    clips = Clips.load_npz(root / "clips.npz")
    n = len(clips)
    path = root / "comparisons.jsonl"
    if not path.is_file():
        raise PrefrlError(f"{path}: missing (a dataset needs clips.npz and comparisons.jsonl)")
    left, right, label, records = [], [], [], []
    with open(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line.rstrip("\r\n"))  # so the column points into this line
            except json.JSONDecodeError as e:
                raise PrefrlError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from e
            if not isinstance(rec, dict):
                raise PrefrlError(f"{where}: expected a JSON object, got {type(rec).__name__}")
            for key in ("left", "right", "label"):
                if key not in rec:
                    raise PrefrlError(f"{where}: missing field `{key}` (need left, right, label)")
            for key in ("left", "right"):
                v = rec[key]
                if not isinstance(v, int) or isinstance(v, bool):
                    raise PrefrlError(f"{where}: `{key}` must be an integer clip index, got {v!r}")
                if not 0 <= v < n:
                    raise PrefrlError(f"{where}: `{key}` = {v} is out of range: clips.npz holds {n} clips (0..{n - 1})")
            lab = rec["label"]
            if isinstance(lab, bool) or not isinstance(lab, (int, float)) or not 0.0 <= lab <= 1.0:
                raise PrefrlError(f"{where}: `label` must be a probability in [0, 1], got {lab!r}")
            if rec["left"] == rec["right"]:
                raise PrefrlError(f"{where}: `left` and `right` are the same clip ({rec['left']})")
            left.append(rec["left"])
            right.append(rec["right"])
            label.append(float(lab))
            records.append(rec)
    if not records:
        raise PrefrlError(f"{path}: no comparisons (the file is empty)")
    return clips, Comparisons(np.array(left), np.array(right), np.array(label)), records
