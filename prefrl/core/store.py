"""Preference store (SQLite in WAL mode) and preference datasets on disk.

Layout of a store directory (a run directory, usually)::

    prefs.sqlite            one row per item (clip or text), query and judgment
    clips/0000001.npz       obs, acts, true_rew of clip 1 (no pickle)
    clips/0000001.frames.npz  rendered RGB frames of clip 1, when kept (viewer, videos)

An item is a clip (arrays in ``clips/``) or a text item: a prompt and one completion
(language-model RLHF), held in its row's ``text`` column, with no file. Queries and judgments
refer to item ids whatever their kind, so queues, claims, undo and polling work the same for
both; ``training_data`` and ``export`` handle one kind at a time.

Every judgment is committed the moment it is made (``synchronous=FULL``), so a
crash or SIGKILL loses none; WAL mode lets a labelling process and a training
process use one store at once. Clip files are written to a temporary name and
renamed before their row is inserted, so a row never points at a partial file.

Tables:

- ``clips(id, length, true_return, has_frames, created, text)``: one row per item. ``text`` is
  NULL for a clip and JSON ``{"prompt", "completion"}`` for a text item (length 1, its
  ``true_return`` the oracle's score when known).
- ``queries(id, left, right, score, created, status)``: pairs the trainer wants judged
  (status ``pending`` → ``done``), read by ``prefrl label``.
- ``comparisons(id, left, right, label, source, annotator, time, response_s, query_id)``:
  ``label`` is P(left preferred); NULL is a skip ("can't tell": recorded, never trained on).
  Ids are AUTOINCREMENT: an undone (deleted) judgment's id is never reused, so a reader
  polling ``judgments(since_id)`` never misses a later one.
- ``claims(query_id, annotator, time)``: which annotator's viewer holds a pending query, so
  two people labelling one run are not shown the same pair (claims lapse after a TTL).

Schema versions: 1 had no ``text`` column; a version-1 store is migrated in place when opened
(``ALTER TABLE clips ADD COLUMN text``), keeping all its data.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prefrl.core.dataset import write_dataset
from prefrl.core.types import Clips, Comparisons, PrefrlError

SCHEMA_VERSION = 2
STORE_FILE = "prefs.sqlite"
TEXT_PREFERENCES_FILE = "preferences.jsonl"
"""What ``export`` writes for a store of text items: TRL lines (see ``trl_record``)."""

_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("ALTER TABLE clips ADD COLUMN text TEXT",),
}
"""SQL that takes a store from version v to v + 1."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS clips (
    id INTEGER PRIMARY KEY,
    length INTEGER NOT NULL,
    true_return REAL,
    has_frames INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    text TEXT
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
    """Items (clips or texts), pending queries and judgments of one run, safe across processes.

    Args:
        root: the directory holding ``prefs.sqlite`` and ``clips/`` (created if missing
            and ``create`` is true; ``clips/`` only once a clip is stored).
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
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PrefrlError(f"{self.root}: cannot create the store directory ({e.strerror or e})") from e
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif _version(row[0], self.path) < SCHEMA_VERSION:
                self._migrate()
        except sqlite3.DatabaseError as e:
            raise PrefrlError(f"{self.path}: not a readable preference store ({e})") from e
        if row is not None and _version(row[0], self.path) > SCHEMA_VERSION:
            self._db.close()
            raise PrefrlError(
                f"{self.path}: store schema version {row[0]} was written by a newer prefrl; this one reads up to {SCHEMA_VERSION}"
            )
        self._cache: dict[int, Clips] = {}

    def _migrate(self) -> None:
        """Bring an older store up to ``SCHEMA_VERSION`` in place, in one transaction.

        The version is read again inside the transaction, so two processes opening one old
        store at once migrate it once.
        """
        v0 = "older"
        try:
            self._db.execute("BEGIN IMMEDIATE")
            v0 = v = _version(self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0], self.path)
            while v < SCHEMA_VERSION:
                for sql in _MIGRATIONS[v]:
                    self._db.execute(sql)
                v += 1
            self._db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(v),))
            self._db.execute("COMMIT")
        except sqlite3.DatabaseError as e:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise PrefrlError(f"{self.path}: cannot migrate the store from schema version {v0} to {SCHEMA_VERSION} ({e})") from e
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    @property
    def schema_version(self) -> int:
        return _version(self._exec("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0], self.path)

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
        self.clip_dir.mkdir(parents=True, exist_ok=True)
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
        """Ids of the stored clips (text items excluded), ascending."""
        return [r[0] for r in self._exec("SELECT id FROM clips WHERE text IS NULL ORDER BY id")]

    def load_clips(self, ids: Iterable[int], frames: bool = False) -> Clips:
        """Clips by id, in the order given (arrays cached in memory; frames read on demand)."""
        parts = []
        for cid in ids:
            cid = int(cid)
            clip = self._cache.get(cid)
            if clip is None:
                path = self._clip_path(cid)
                if not path.exists():
                    if self.is_text(cid):
                        raise PrefrlError(f"{self.path}: item {cid} is a text item (prompt + completion), not a clip")
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

    # ---- text items --------------------------------------------------------------------
    def add_texts(
        self, prompts: list[str], completions: list[str], scores: Iterable[float | None] | None = None
    ) -> list[int]:
        """Store text items (a prompt and one completion each) in one transaction; returns their ids.

        Args:
            prompts: (N,) prompt of each item.
            completions: (N,) its completion.
            scores: (N,) the oracle's score of each completion (kept as the item's true return), or None.
        """
        prompts, completions = list(prompts), list(completions)
        if len(prompts) != len(completions):
            raise PrefrlError(f"add_texts: {len(prompts)} prompts but {len(completions)} completions")
        for x in prompts + completions:
            if not isinstance(x, str):
                raise PrefrlError(f"add_texts: prompts and completions must be strings, got {type(x).__name__} {x!r:.40}")
        rets = [None] * len(prompts) if scores is None else [None if v is None else float(v) for v in scores]
        if len(rets) != len(prompts):
            raise PrefrlError(f"add_texts: {len(prompts)} texts but {len(rets)} scores")
        now = time.time()
        ids = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for p, c, r in zip(prompts, completions, rets):
                    cur = self._db.execute(
                        "INSERT INTO clips (length, true_return, has_frames, created, text) VALUES (1, ?, 0, ?, ?)",
                        (r, now, json.dumps({"prompt": p, "completion": c})),  # ASCII: safe for any str
                    )
                    ids.append(int(cur.lastrowid))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return ids

    def text_ids(self) -> list[int]:
        """Ids of the stored text items, ascending."""
        return [r[0] for r in self._exec("SELECT id FROM clips WHERE text IS NOT NULL ORDER BY id")]

    def is_text(self, item_id: int) -> bool:
        """Whether ``item_id`` is a text item (False for a clip or an unknown id)."""
        row = self._exec("SELECT text IS NOT NULL FROM clips WHERE id=?", (int(item_id),)).fetchone()
        return bool(row and row[0])

    def load_texts(self, ids: Iterable[int]) -> list[tuple[str, str]]:
        """(prompt, completion) of each text item, in the order given."""
        ids = [int(i) for i in ids]
        rows: dict[int, str | None] = {}
        for s in range(0, len(ids), 500):  # SQLite caps the number of bound variables
            chunk = ids[s : s + 500]
            q = ",".join("?" * len(chunk))
            rows.update(self._exec(f"SELECT id, text FROM clips WHERE id IN ({q})", tuple(chunk)).fetchall())
        out = []
        for i in ids:
            if i not in rows:
                raise PrefrlError(f"{self.path}: item {i} is missing from the store")
            if rows[i] is None:
                raise PrefrlError(f"{self.path}: item {i} is a clip, not a text item")
            d = json.loads(rows[i])  # type: ignore[arg-type]
            out.append((d["prompt"], d["completion"]))
        return out

    def text_scores(self, ids: Iterable[int]) -> list[float | None]:
        """The stored oracle score (true return) of each item, None where unknown."""
        ids = [int(i) for i in ids]
        got = dict(self._exec(f"SELECT id, true_return FROM clips WHERE id IN ({','.join(map(str, ids)) or '-1'})").fetchall())
        return [got.get(i) for i in ids]

    def _judged_kinds(self, labeled_only: bool = False) -> tuple[int, int]:
        """(clips, text items) that some judgment (with a label, if ``labeled_only``) compares."""
        where = " WHERE label IS NOT NULL" if labeled_only else ""
        row = self._exec(
            "SELECT SUM(text IS NULL), SUM(text IS NOT NULL) FROM clips WHERE id IN"
            f" (SELECT left FROM comparisons{where} UNION SELECT right FROM comparisons{where})"
        ).fetchone()
        return int(row[0] or 0), int(row[1] or 0)

    def text_training_data(self) -> tuple[list[tuple[str, str]], Comparisons, list[int]]:
        """All judged text items and the judgments over them, re-indexed 0..N-1 (skips kept as NaN).

        Returns:
            (prompt, completion) of each item, comparisons over them (judgment order), and
            the store ids of the items.

        Raises:
            PrefrlError: the store's judgments compare clips (use ``training_data``).
        """
        js = self.judgments()
        ids = sorted({j.left for j in js} | {j.right for j in js})
        if self._judged_kinds()[0]:
            raise PrefrlError(f"{self.path}: judgments compare clips, not text items (read them with training_data)")
        pos = {cid: i for i, cid in enumerate(ids)}
        comps = Comparisons(
            np.array([pos[j.left] for j in js], dtype=np.int64),
            np.array([pos[j.right] for j in js], dtype=np.int64),
            np.array([np.nan if j.label is None else j.label for j in js], dtype=np.float64),
        )
        return self.load_texts(ids), comps, ids

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

    def add_judgments(
        self, pairs: np.ndarray, labels: np.ndarray, source: str, annotator: str | None = None
    ) -> list[int]:
        """Write many judgments in one transaction (oracles label in batches); returns their ids."""
        now = time.time()
        ids = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for (a, b), lab in zip(np.asarray(pairs).tolist(), np.asarray(labels, np.float64).tolist()):
                    cur = self._db.execute(
                        "INSERT INTO comparisons (left, right, label, source, annotator, time) VALUES (?, ?, ?, ?, ?, ?)",
                        (a, b, None if np.isnan(lab) else lab, source, annotator, now),
                    )
                    ids.append(int(cur.lastrowid))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return ids

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

    def last_judgment_id(self) -> int:
        """The newest judgment's id (0 when there is none)."""
        return int(self._exec("SELECT COALESCE(MAX(id), 0) FROM comparisons").fetchone()[0])

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

        Raises:
            PrefrlError: the judgments compare text items (use ``text_training_data``).
        """
        js = self.judgments()
        ids = sorted({j.left for j in js} | {j.right for j in js})
        if self._judged_kinds()[1]:
            raise PrefrlError(
                f"{self.path}: judgments compare text items, not clips (fit them with `prefrl text reward {self.root}`)"
            )
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
        """Write the judgments as a preference dataset; returns (items, comparisons) written.

        Clips: ``out/clips.npz`` + ``out/comparisons.jsonl`` (``prefrl.core.dataset``). Text
        items: ``out/preferences.jsonl``, one TRL line per judgment (``trl_record``), which
        ``prefrl text reward`` reads. Skips are not exported: a dataset line's label must be a
        probability. A store whose judgments compare both kinds is refused.
        """
        out = Path(out)
        js = [j for j in self.judgments() if j.label is not None]
        if not js:
            raise PrefrlError(f"{self.path}: no labeled comparisons to export")
        ids = sorted({j.left for j in js} | {j.right for j in js})
        n_clips, n_texts = self._judged_kinds(labeled_only=True)
        if n_clips and n_texts:
            raise PrefrlError(f"{self.path}: judgments compare both clips and text items; export needs one kind")
        if n_texts:
            return self._export_texts(out, js, ids)
        pos = {cid: i for i, cid in enumerate(ids)}
        with_frames = all(r[0] for r in self._exec(
            f"SELECT has_frames FROM clips WHERE id IN ({','.join(map(str, ids))})"))
        clips = self.load_clips(ids, frames=with_frames)
        records = []
        for j in js:
            rec = {"left": pos[j.left], "right": pos[j.right], "label": j.label, "source": j.source, "time": j.time}
            if j.annotator:
                rec["annotator"] = j.annotator
            records.append(rec)
        write_dataset(out, clips, records)
        return len(ids), len(js)

    def _export_texts(self, out: Path, js: list[Judgment], ids: list[int]) -> tuple[int, int]:
        texts = dict(zip(ids, self.load_texts(ids)))
        records = []
        for j in js:
            (pl, cl), (pr, cr) = texts[j.left], texts[j.right]
            if pl != pr:
                raise PrefrlError(
                    f"{self.path}: judgment {j.id} compares completions of different prompts; a TRL line holds one prompt"
                )
            records.append(trl_record(pl, cl, cr, j.label))
        if out.exists() and not out.is_dir():
            raise PrefrlError(f"{out}: exists and is not a directory")
        path = out / TEXT_PREFERENCES_FILE
        tmp = out / f".{TEXT_PREFERENCES_FILE}.tmp"
        try:
            out.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                for rec in records:
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise PrefrlError(f"{out}: could not write {TEXT_PREFERENCES_FILE} ({e.strerror or e})") from e
        return len(ids), len(js)


def trl_record(prompt: str, left: str, right: str, label: float | None) -> dict:
    """The TRL line of one judgment of completion ``left`` vs ``right`` of ``prompt``.

    ``label`` is P(left preferred), None for a skip. The preferred completion is ``chosen``;
    a line carries ``"label"`` (P(chosen preferred)) only when it is not 1: 0.5 for a tie, a
    soft label, or null for a skip (then ``chosen`` is simply ``left``).

    Example:
        >>> trl_record("The soup", " was bad.", " was great.", 0.0)
        {'prompt': 'The soup', 'chosen': ' was great.', 'rejected': ' was bad.'}
        >>> trl_record("The soup", " was ok.", " was fine.", 0.5)["label"]
        0.5
    """
    if label is not None and math.isnan(label):
        label = None
    if label is not None and label < 0.5:
        left, right, label = right, left, 1.0 - label
    rec: dict = {"prompt": prompt, "chosen": left, "rejected": right}
    if label != 1.0:
        rec["label"] = label
    return rec


def _version(value: object, path: Path) -> int:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError) as e:
        raise PrefrlError(f"{path}: unreadable store schema version {value!r}") from e


def _stage_savez(directory: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write arrays to a uniquely named temporary .npz in ``directory``; the caller renames it."""
    import uuid

    tmp = directory / f".staged-{uuid.uuid4().hex}.npz"
    np.savez(tmp, **arrays)
    return tmp
