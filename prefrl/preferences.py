"""Preference store (SQLite in WAL mode) and preference datasets on disk.

Layout of a store directory (a run directory, usually)::

    prefs.sqlite            one row per clip, query and judgment
    clips/0000001.npz       obs, acts, true_rew of clip 1 (no pickle)
    clips/0000001.frames.npz  rendered RGB frames of clip 1, when kept (viewer, videos)

Every judgment is committed the moment it is made (``synchronous=FULL``), so a
crash or SIGKILL loses none; WAL mode lets a labelling process and a training
process use one store at once. Clip files are written to a temporary name and
renamed before their row is inserted, so a row never points at a partial file.

Tables:

- ``clips(id, length, true_return, has_frames, created)``
- ``queries(id, left, right, score, created, status)``: pairs the trainer wants judged
  (status ``pending`` → ``done``), read by ``prefrl label``.
- ``comparisons(id, left, right, label, source, annotator, time, response_s, query_id)``:
  ``label`` is P(left preferred); NULL is a skip ("can't tell": recorded, never trained on).
  Ids are AUTOINCREMENT: an undone (deleted) judgment's id is never reused, so a reader
  polling ``judgments(since_id)`` never misses a later one.
- ``claims(query_id, annotator, time)``: which annotator's viewer holds a pending query, so
  two people labelling one run are not shown the same pair (claims lapse after a TTL).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prefrl.types import Clips, Comparisons, PrefrlError

SCHEMA_VERSION = 1
STORE_FILE = "prefs.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS clips (
    id INTEGER PRIMARY KEY,
    length INTEGER NOT NULL,
    true_return REAL,
    has_frames INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS queries (
    id INTEGER PRIMARY KEY,
    left INTEGER NOT NULL REFERENCES clips(id),
    right INTEGER NOT NULL REFERENCES clips(id),
    score REAL NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending'
);
CREATE INDEX IF NOT EXISTS queries_status ON queries(status, score);
CREATE TABLE IF NOT EXISTS comparisons (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    left INTEGER NOT NULL REFERENCES clips(id),
    right INTEGER NOT NULL REFERENCES clips(id),
    label REAL,
    source TEXT NOT NULL,
    annotator TEXT,
    time REAL NOT NULL,
    response_s REAL,
    query_id INTEGER REFERENCES queries(id)
);
CREATE TABLE IF NOT EXISTS claims (
    query_id INTEGER PRIMARY KEY REFERENCES queries(id),
    annotator TEXT NOT NULL,
    time REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Judgment:
    """One stored row of ``comparisons``."""

    id: int
    left: int
    right: int
    label: float | None
    source: str
    annotator: str | None
    time: float
    response_s: float | None
    query_id: int | None


@dataclass(frozen=True)
class Query:
    """A pair the trainer wants judged."""

    id: int
    left: int
    right: int
    score: float


class PreferenceStore:
    """Clips, pending queries and judgments of one run, safe across processes.

    Args:
        root: the directory holding ``prefs.sqlite`` and ``clips/`` (created if missing
            and ``create`` is true).
        create: create a new store when none exists; otherwise raise.

    Example:
        >>> store = PreferenceStore(tmp_path)                               # doctest: +SKIP
        >>> ids = store.add_clips(clips)                                    # doctest: +SKIP
        >>> store.add_judgment(ids[0], ids[1], 1.0, source="synthetic")     # doctest: +SKIP
    """

    def __init__(self, root: str | Path, create: bool = True):
        self.root = Path(root)
        self.path = self.root / STORE_FILE
        if not self.path.exists() and not create:
            raise PrefrlError(f"{self.root}: not a prefrl run directory (no {STORE_FILE})")
        self.clip_dir = self.root / "clips"
        self.clip_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.DatabaseError as e:
            raise PrefrlError(f"{self.path}: not a readable preference store ({e})") from e
        if row is None:
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            raise PrefrlError(f"{self.path}: store schema version {row[0]}, this prefrl reads {SCHEMA_VERSION}")
        self._cache: dict[int, Clips] = {}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> PreferenceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _exec(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    # ---- meta --------------------------------------------------------------------------
    def set_meta(self, key: str, value: object) -> None:
        self._exec("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str, default: object = None) -> object:
        row = self._exec("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    # ---- clips -------------------------------------------------------------------------
    def _clip_path(self, clip_id: int, frames: bool = False) -> Path:
        return self.clip_dir / (f"{clip_id:07d}.frames.npz" if frames else f"{clip_id:07d}.npz")

    def add_clips(self, clips: Clips, keep_frames: bool = True) -> list[int]:
        """Store clips (arrays on disk, a row each) in one transaction; returns their ids.

        The arrays are written to temporary files first, outside the database lock;
        inside the transaction each row is inserted and its files renamed into place
        (a rename is instant), so a labeler's judgment never waits for clip I/O. The
        rows become visible only after every file is in place; a crash midway leaves
        only orphan temporary files.
        """
        rets = clips.true_returns() if clips.true_rew is not None else [None] * len(clips)
        has_frames = keep_frames and clips.frames is not None
        staged = []
        for k in range(len(clips)):
            arrays = {"obs": clips.obs[k], "acts": clips.acts[k]}
            if clips.true_rew is not None:
                arrays["true_rew"] = clips.true_rew[k]
            files = [_stage_savez(self.clip_dir, arrays)]
            if has_frames:
                files.append(_stage_savez(self.clip_dir, {"frames": clips.frames[k]}))
            staged.append(files)
        ids = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for k, files in enumerate(staged):
                    cur = self._db.execute(
                        "INSERT INTO clips (length, true_return, has_frames, created) VALUES (?, ?, ?, ?)",
                        (clips.length, None if rets[k] is None else float(rets[k]), int(has_frames), time.time()),
                    )
                    cid = int(cur.lastrowid)
                    os.replace(files[0], self._clip_path(cid))
                    if has_frames:
                        os.replace(files[1], self._clip_path(cid, frames=True))
                    ids.append(cid)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                for files in staged:
                    for f in files:
                        Path(f).unlink(missing_ok=True)
                raise
        return ids

    def clip_ids(self) -> list[int]:
        return [r[0] for r in self._exec("SELECT id FROM clips ORDER BY id")]

    def load_clips(self, ids: Iterable[int], frames: bool = False) -> Clips:
        """Clips by id, in the order given (arrays cached in memory; frames read on demand)."""
        parts = []
        for cid in ids:
            cid = int(cid)
            clip = self._cache.get(cid)
            if clip is None:
                path = self._clip_path(cid)
                if not path.exists():
                    raise PrefrlError(f"{path}: clip {cid} is missing from the store")
                with np.load(path, allow_pickle=False) as z:
                    clip = Clips(z["obs"][None], z["acts"][None], z["true_rew"][None] if "true_rew" in z.files else None)
                self._cache[cid] = clip
            if frames:
                fpath = self._clip_path(cid, frames=True)
                if not fpath.exists():
                    raise PrefrlError(f"clip {cid} has no rendered frames (train with frames kept to label by hand)")
                with np.load(fpath, allow_pickle=False) as z:
                    clip = Clips(clip.obs, clip.acts, clip.true_rew, z["frames"][None])
            parts.append(clip)
        return Clips.concat(parts)

    # ---- queries -----------------------------------------------------------------------
    def add_queries(self, pairs: np.ndarray, scores: np.ndarray | None = None) -> list[int]:
        """Enqueue pairs (clip ids) for a labeller; higher score is asked first."""
        scores = np.zeros(len(pairs)) if scores is None else scores
        now = time.time()
        ids = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for (a, b), s in zip(np.asarray(pairs).tolist(), np.asarray(scores).tolist()):
                    cur = self._db.execute(
                        "INSERT INTO queries (left, right, score, created) VALUES (?, ?, ?, ?)", (a, b, s, now)
                    )
                    ids.append(int(cur.lastrowid))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return ids

    def pending_queries(self, limit: int | None = None) -> list[Query]:
        sql = "SELECT id, left, right, score FROM queries WHERE status='pending' ORDER BY score DESC, id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [Query(*r) for r in self._exec(sql)]

    def claim_queries(
        self,
        annotator: str,
        limit: int = 1,
        exclude: Iterable[int] = (),
        shared: bool = False,
        ttl_s: float = 600.0,
    ) -> list[Query]:
        """Take the next queries for ``annotator``'s viewer, best score first, atomically.

        Args:
            annotator: who will judge them.
            limit: how many queries to take.
            exclude: query ids not to return (those the viewer already holds).
            shared: False (a run): pending queries not claimed by another annotator in the
                last ``ttl_s`` seconds; they are claimed for ``annotator``. True (several
                annotators label the same pairs, e.g. a dataset): every query not cancelled
                that ``annotator`` has not judged yet; nothing is claimed.
            ttl_s: age after which another annotator's claim lapses.
        """
        excl = ",".join(str(int(q)) for q in exclude) or "-1"
        with self._lock:
            if shared:
                sql = (
                    "SELECT id, left, right, score FROM queries q WHERE status != 'cancelled'"
                    f" AND id NOT IN ({excl}) AND NOT EXISTS (SELECT 1 FROM comparisons c"
                    " WHERE c.query_id = q.id AND c.annotator IS ?) ORDER BY score DESC, id LIMIT ?"
                )
                return [Query(*r) for r in self._db.execute(sql, (annotator, int(limit)))]
            self._db.execute("BEGIN IMMEDIATE")
            try:
                now = time.time()
                sql = (
                    "SELECT id, left, right, score FROM queries q WHERE status = 'pending'"
                    f" AND id NOT IN ({excl}) AND NOT EXISTS (SELECT 1 FROM claims k WHERE k.query_id = q.id"
                    " AND k.annotator != ? AND k.time > ?) ORDER BY score DESC, id LIMIT ?"
                )
                rows = [Query(*r) for r in self._db.execute(sql, (annotator, now - ttl_s, int(limit)))]
                for q in rows:
                    self._db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?)", (q.id, annotator, now))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return rows

    def release_claims(self, annotator: str, query_ids: Iterable[int] | None = None) -> None:
        """Give back ``annotator``'s claims (all, or those of ``query_ids``), e.g. when a viewer quits."""
        if query_ids is None:
            self._exec("DELETE FROM claims WHERE annotator=?", (annotator,))
        else:
            ids = ",".join(str(int(q)) for q in query_ids) or "-1"
            self._exec(f"DELETE FROM claims WHERE annotator=? AND query_id IN ({ids})", (annotator,))

    def query_status(self, query_id: int) -> str | None:
        """``pending``, ``done``, ``cancelled``, or None for an unknown id."""
        row = self._exec("SELECT status FROM queries WHERE id=?", (int(query_id),)).fetchone()
        return None if row is None else str(row[0])

    def count_open(self, annotator: str, shared: bool = False) -> int:
        """How many queries ``annotator`` could still be shown (see ``claim_queries``), claims ignored."""
        if shared:
            sql = (
                "SELECT COUNT(*) FROM queries q WHERE status != 'cancelled' AND NOT EXISTS"
                " (SELECT 1 FROM comparisons c WHERE c.query_id = q.id AND c.annotator IS ?)"
            )
            return int(self._exec(sql, (annotator,)).fetchone()[0])
        return self.count_pending()

    def count_pending(self) -> int:
        return int(self._exec("SELECT COUNT(*) FROM queries WHERE status='pending'").fetchone()[0])

    def cancel_pending(self) -> None:
        self._exec("UPDATE queries SET status='cancelled' WHERE status='pending'")

    # ---- judgments ---------------------------------------------------------------------
    def add_judgment(
        self,
        left: int,
        right: int,
        label: float | None,
        source: str,
        annotator: str | None = None,
        response_s: float | None = None,
        query_id: int | None = None,
    ) -> int:
        """Write one judgment, committed before returning. ``label`` None (or NaN) is a skip."""
        if label is not None and np.isnan(label):
            label = None
        if label is not None and not 0.0 <= label <= 1.0:
            raise PrefrlError(f"label must be a probability in [0, 1] or a skip, got {label}")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "INSERT INTO comparisons (left, right, label, source, annotator, time, response_s, query_id)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (int(left), int(right), label, source, annotator, time.time(), response_s, query_id),
                )
                if query_id is not None:
                    self._db.execute("UPDATE queries SET status='done' WHERE id=?", (query_id,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return int(cur.lastrowid)

    def add_judgments(self, pairs: np.ndarray, labels: np.ndarray, source: str, annotator: str | None = None) -> None:
        """Write many judgments in one transaction (oracles label in batches)."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for (a, b), lab in zip(np.asarray(pairs).tolist(), np.asarray(labels, np.float64).tolist()):
                    self._db.execute(
                        "INSERT INTO comparisons (left, right, label, source, annotator, time) VALUES (?, ?, ?, ?, ?, ?)",
                        (a, b, None if np.isnan(lab) else lab, source, annotator, now),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def undo_last(self, annotator: str | None = None) -> Judgment | None:
        """Delete the most recent judgment (of ``annotator`` if given); its query becomes pending again."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                sql = "SELECT * FROM comparisons"
                args: tuple = ()
                if annotator is not None:
                    sql += " WHERE annotator=?"
                    args = (annotator,)
                row = self._db.execute(sql + " ORDER BY id DESC LIMIT 1", args).fetchone()
                if row is None:
                    self._db.execute("COMMIT")
                    return None
                j = Judgment(*row)
                self._db.execute("DELETE FROM comparisons WHERE id=?", (j.id,))
                if j.query_id is not None:
                    self._db.execute("UPDATE queries SET status='pending' WHERE id=?", (j.query_id,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return j

    def judgments(self, since_id: int = 0) -> list[Judgment]:
        return [Judgment(*r) for r in self._exec("SELECT * FROM comparisons WHERE id > ? ORDER BY id", (since_id,))]

    def count_judgments(self, include_skips: bool = True, annotator: str | None = None) -> int:
        """Judgments in the store (of ``annotator`` only, if given)."""
        where = ([] if include_skips else ["label IS NOT NULL"]) + ([] if annotator is None else ["annotator = ?"])
        sql = "SELECT COUNT(*) FROM comparisons" + (" WHERE " + " AND ".join(where) if where else "")
        return int(self._exec(sql, () if annotator is None else (annotator,)).fetchone()[0])

    def asked_pairs(self) -> set[tuple[int, int]]:
        """Unordered clip-id pairs already judged or queued (so they are not asked twice)."""
        rows = self._exec(
            "SELECT left, right FROM comparisons UNION SELECT left, right FROM queries WHERE status='pending'"
        )
        return {(min(a, b), max(a, b)) for a, b in rows}

    def training_data(self) -> tuple[Clips, Comparisons, list[int]]:
        """All judged clips and comparisons, re-indexed 0..N-1 (skips kept as NaN).

        Returns:
            clips, comparisons over those clips, and the store ids of the clips.
        """
        js = self.judgments()
        ids = sorted({j.left for j in js} | {j.right for j in js})
        pos = {cid: i for i, cid in enumerate(ids)}
        comps = Comparisons(
            np.array([pos[j.left] for j in js]),
            np.array([pos[j.right] for j in js]),
            np.array([np.nan if j.label is None else j.label for j in js]),
        )
        clips = self.load_clips(ids) if ids else None
        return clips, comps, ids  # type: ignore[return-value]

    # ---- export ------------------------------------------------------------------------
    def export(self, out: str | Path) -> tuple[int, int]:
        """Write a preference dataset (clips.npz + comparisons.jsonl); returns (clips, comparisons).

        Skips are not exported: a dataset line's label must be a probability.
        """
        out = Path(out)
        js = [j for j in self.judgments() if j.label is not None]
        if not js:
            raise PrefrlError(f"{self.path}: no labeled comparisons to export")
        ids = sorted({j.left for j in js} | {j.right for j in js})
        pos = {cid: i for i, cid in enumerate(ids)}
        with_frames = all(r[0] for r in self._exec(
            f"SELECT has_frames FROM clips WHERE id IN ({','.join(map(str, ids))})"))
        clips = self.load_clips(ids, frames=with_frames)
        out.mkdir(parents=True, exist_ok=True)
        clips.save_npz(out / "clips.npz")
        with open(out / "comparisons.jsonl", "w") as f:
            for j in js:
                rec = {"left": pos[j.left], "right": pos[j.right], "label": j.label, "source": j.source, "time": j.time}
                if j.annotator:
                    rec["annotator"] = j.annotator
                f.write(json.dumps(rec) + "\n")
        return len(ids), len(js)


def _stage_savez(directory: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write arrays to a uniquely named temporary .npz in ``directory``; the caller renames it."""
    import uuid

    tmp = directory / f".staged-{uuid.uuid4().hex}.npz"
    np.savez(tmp, **arrays)
    return tmp


def load_dataset(root: str | Path) -> tuple[Clips, Comparisons, list[dict]]:
    """Read a preference dataset directory, validating every line.

    Args:
        root: directory with ``clips.npz`` and ``comparisons.jsonl`` (shared/DESIGN.md).

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
