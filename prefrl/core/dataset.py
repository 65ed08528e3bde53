"""Preference datasets on disk: ``clips.npz`` + ``comparisons.jsonl`` (the import/export format).

``clips.npz`` holds arrays ``obs`` (N, T, ...), ``acts`` (N, T, ...) and optionally
``true_rew`` (N, T) and ``frames`` (N, T, H, W, 3); ``comparisons.jsonl`` one object per line
with integer clip indices ``left`` and ``right``, ``label`` = P(left preferred) in [0, 1], and
optional ``source``, ``annotator``, ``time``. Reading validates every line and names the file
and line of the first problem; writing goes through temporary names renamed into place, so an
interrupted export never leaves a truncated file under the real name.
"""

from __future__ import annotations

import contextlib
import json
import os
import reprlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from prefrl.core.types import Clips, Comparisons, PrefrlError

CLIPS_FILE = "clips.npz"
COMPARISONS_FILE = "comparisons.jsonl"


_short = reprlib.Repr()
_short.maxstring = _short.maxother = 40
_short.maxlevel = 2


def short_repr(value: object) -> str:
    """A bounded repr for error messages: at most ~40 characters and 2 levels, whatever the value's size or depth."""
    return _short.repr(value)


def write_dataset(out: str | Path, clips: Clips, records: list[dict]) -> None:
    """Write ``clips.npz`` and ``comparisons.jsonl`` under ``out``, each atomically.

    Each file is written under a temporary name, flushed to disk and renamed into place, so
    a full disk or a crash never leaves a cut file under a real name. An existing
    ``comparisons.jsonl`` is removed before the new ``clips.npz`` takes its place and the
    new one is renamed in last, so a crash between the two renames leaves a dataset that
    refuses to load ("missing comparisons.jsonl"), never old comparisons over new clips.

    Raises:
        PrefrlError: ``out`` is a file, or a file cannot be written (temporary files removed).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PrefrlError(f"{out}: exists and is not a directory")
    tmp_npz = out / f".{CLIPS_FILE}.tmp.npz"
    tmp_jsonl = out / f".{COMPARISONS_FILE}.tmp"
    try:
        out.mkdir(parents=True, exist_ok=True)
        with open(tmp_npz, "wb") as f:
            clips.save_npz(f)
            f.flush()
            os.fsync(f.fileno())
        with open(tmp_jsonl, "w", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())
        (out / COMPARISONS_FILE).unlink(missing_ok=True)
        os.replace(tmp_npz, out / CLIPS_FILE)
        os.replace(tmp_jsonl, out / COMPARISONS_FILE)
        _fsync_dir(out)
    except OSError as e:
        for t in (tmp_npz, tmp_jsonl):
            with contextlib.suppress(OSError):
                t.unlink(missing_ok=True)
        raise PrefrlError(f"{out}: could not write the dataset ({e.strerror or e}); nothing was written") from e


def _fsync_dir(path: Path) -> None:
    """Make renames in ``path`` durable (best effort: not every file system can sync a directory)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def jsonl_records(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, parsed JSON value) of each non-blank line of a JSONL file.

    Every way a line can be unreadable (not UTF-8, not JSON, an integer too long for Python's
    int-string limit, nesting too deep for the parser) is a ``PrefrlError`` naming file and
    line; a file that cannot be opened names the file.
    """
    try:
        f = open(path, "rb")
    except OSError as e:
        raise PrefrlError(f"{path}: cannot read ({e.strerror or e})") from e
    with f:
        lineno = 0
        while True:
            try:
                raw = f.readline()
            except OSError as e:
                raise PrefrlError(f"{path}: cannot read ({e.strerror or e})") from e
            if not raw:
                return
            lineno += 1
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise PrefrlError(
                    f"{where}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); JSONL files are UTF-8"
                ) from e
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line.rstrip("\r\n"))  # so the column points into this line
            except json.JSONDecodeError as e:
                raise PrefrlError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from e
            except RecursionError as e:
                raise PrefrlError(f"{where}: not valid JSON (nested too deeply)") from e
            except ValueError as e:  # e.g. an integer beyond Python's int-string conversion limit
                raise PrefrlError(f"{where}: not valid JSON ({str(e).split(';')[0]})") from e


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
    clips = Clips.load_npz(root / CLIPS_FILE)
    n = len(clips)
    path = root / COMPARISONS_FILE
    if not path.is_file():
        raise PrefrlError(f"{path}: missing (a dataset needs clips.npz and comparisons.jsonl)")
    left, right, label, records = [], [], [], []
    for lineno, rec in jsonl_records(path):
        where = f"{path}:{lineno}"
        if not isinstance(rec, dict):
            raise PrefrlError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        for key in ("left", "right", "label"):
            if key not in rec:
                raise PrefrlError(f"{where}: missing field `{key}` (need left, right, label)")
        for key in ("left", "right"):
            v = rec[key]
            if not isinstance(v, int) or isinstance(v, bool):
                raise PrefrlError(f"{where}: `{key}` must be an integer clip index, got {short_repr(v)}")
            if not 0 <= v < n:
                raise PrefrlError(f"{where}: `{key}` = {v} is out of range: clips.npz holds {n} clips (0..{n - 1})")
        lab = rec["label"]
        if isinstance(lab, bool) or not isinstance(lab, (int, float)) or not 0.0 <= lab <= 1.0:
            raise PrefrlError(f"{where}: `label` must be a probability in [0, 1], got {short_repr(lab)}")
        if rec["left"] == rec["right"]:
            raise PrefrlError(f"{where}: `left` and `right` are the same clip ({rec['left']})")
        left.append(rec["left"])
        right.append(rec["right"])
        label.append(float(lab))
        records.append(rec)
    if not records:
        raise PrefrlError(f"{path}: no comparisons (the file is empty)")
    return clips, Comparisons(np.array(left), np.array(right), np.array(label)), records


def write_jsonl(path: Path | str, rows: list[dict]) -> None:
    """Write rows as JSON lines (parent directories created), atomically: a temporary file renamed into place.

    Raises:
        PrefrlError: the file cannot be written (a full disk, no permission); nothing is left behind.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise PrefrlError(f"{path}: cannot write ({e.strerror or e})") from e
