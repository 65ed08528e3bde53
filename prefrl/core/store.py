"""Preference store (SQLite in WAL mode) and preference datasets on disk.

Layout of a store directory (a run directory, usually)::

    prefs.sqlite            one row per item (clip or text), query and judgment
    clips/0000001.npz       obs, acts, true_rew of clip 1 (compressed, no pickle)
    clips/0000001.frames.npz  rendered RGB frames of clip 1, when kept (viewer, videos)

Clip files are zlib-compressed (``numpy.savez_compressed``): a stacked Atari clip's frames
repeat from one step to the next, so a 705.6 KB Pong clip takes ~20x less on disk. Loaded
clips are kept in an in-memory cache of at most ``cache_mib`` MiB (least recently used
clips are evicted; their files stay, and the next read loads them again), so a long run's
memory does not grow with its labels. ``training_data(lazy=True)`` reads clips through that
cache minibatch by minibatch instead of holding every judged clip at once.

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
- ``claims(query_id, annotator, time, viewer)``: which viewer session holds a pending query,
  so no two viewers (two people, or one person in two windows) are shown the same pair. A
  live viewer refreshes its claims every few seconds (``refresh_claims``); a claim not
  refreshed for ``CLAIM_TTL_S`` lapses, so a killed viewer's pairs come back within it.

Schema versions: 1 had no ``text`` column; 2 no ``claims.viewer`` and none of the indexes
the labelling queries use. An older store is migrated in place when opened for writing,
keeping all its data; a version-2 store is readable as it is (``readonly=True``).

Opening never creates a store over an existing file: a missing ``prefs.sqlite`` is created
(built under a temporary name and linked into place, so no process ever sees a half-made
store); an empty file or an SQLite file without prefrl's schema is refused. Opened with
``readonly=True`` the store needs no write access (SQLite ``mode=ro``, ``query_only``).
Every SQLite failure (a damaged page, a full disk, a read-only file, a lock held too long)
surfaces as a ``PrefrlError`` naming the store and the cause.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import reprlib
import sqlite3
import stat
import threading
import time
import urllib.parse
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prefrl.core.dataset import write_dataset, write_jsonl
from prefrl.core.types import Clips, Comparisons, PrefrlError

SCHEMA_VERSION = 3
READABLE_SCHEMA_VERSION = 2
"""The oldest schema a read-only open reads as it is (older ones need one writable open first)."""
STORE_FILE = "prefs.sqlite"
TEXT_PREFERENCES_FILE = "preferences.jsonl"
"""What ``export`` writes for a store of text items: TRL lines (see ``trl_record``)."""
CLAIM_TTL_S = 30.0
"""A claim not refreshed for this long lapses (its viewer was killed or is frozen)."""
CLAIM_HEARTBEAT_S = 5.0
"""How often a live viewer refreshes its claims (well inside ``CLAIM_TTL_S``)."""
CACHE_MIB = 256.0
"""Default byte cap of a store's in-memory clip cache, in MiB."""
STALE_STAGED_S = 3600.0
"""Staged clip files (``clips/.staged-*``) older than this are a crash's leftovers, removed on open."""

_TALLY_INSERT_TRIGGER = """CREATE TRIGGER tally_insert AFTER INSERT ON comparisons WHEN NEW.annotator IS NOT NULL BEGIN
    INSERT OR IGNORE INTO tallies VALUES (NEW.annotator, 0, 0);
    UPDATE tallies SET judgments = judgments + 1, queries = queries + (NEW.query_id IS NOT NULL AND NOT EXISTS
        (SELECT 1 FROM comparisons c WHERE c.annotator = NEW.annotator AND c.query_id = NEW.query_id AND c.id != NEW.id))
    WHERE annotator = NEW.annotator;
END"""
_TALLY_DELETE_TRIGGER = """CREATE TRIGGER tally_delete AFTER DELETE ON comparisons WHEN OLD.annotator IS NOT NULL BEGIN
    UPDATE tallies SET judgments = judgments - 1, queries = queries - (OLD.query_id IS NOT NULL AND NOT EXISTS
        (SELECT 1 FROM comparisons c WHERE c.annotator = OLD.annotator AND c.query_id = OLD.query_id))
    WHERE annotator = OLD.annotator;
END"""
"""``tallies(annotator, judgments, queries)``: each annotator's judgments and distinct judged queries, kept by
these triggers (comparisons rows are only ever inserted and deleted), so the viewer's counts after every key
cost an index lookup instead of a scan of the annotator's judgments."""

_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("ALTER TABLE clips ADD COLUMN text TEXT",),
    2: (
        "DROP TABLE claims",  # claims are transient (a viewer holds them for seconds): remade with a viewer column
        "CREATE TABLE claims (query_id INTEGER NOT NULL REFERENCES queries(id), annotator TEXT NOT NULL,"
        " time REAL NOT NULL, viewer TEXT, PRIMARY KEY (query_id, annotator))",
        "CREATE INDEX claims_viewer ON claims(viewer)",
        "DROP INDEX IF EXISTS queries_status",
        "CREATE INDEX queries_status ON queries(status, score DESC)",
        "CREATE INDEX queries_score ON queries(score DESC)",
        "CREATE INDEX comparisons_annotator_query ON comparisons(annotator, query_id)",
        "CREATE INDEX comparisons_annotator ON comparisons(annotator)",
        "CREATE TABLE tallies (annotator TEXT PRIMARY KEY, judgments INTEGER NOT NULL, queries INTEGER NOT NULL)",
        "INSERT INTO tallies SELECT annotator, COUNT(*), COUNT(DISTINCT query_id) FROM comparisons"
        " WHERE annotator IS NOT NULL GROUP BY annotator",
        _TALLY_INSERT_TRIGGER,
        _TALLY_DELETE_TRIGGER,
    ),
}
"""SQL that takes a store from version v to v + 1."""

_SCHEMA_TEMPLATE = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE clips (
    id INTEGER PRIMARY KEY,
    length INTEGER NOT NULL,
    true_return REAL,
    has_frames INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    text TEXT
);
CREATE TABLE queries (
    id INTEGER PRIMARY KEY,
    left INTEGER NOT NULL REFERENCES clips(id),
    right INTEGER NOT NULL REFERENCES clips(id),
    score REAL NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending'
);
CREATE INDEX queries_status ON queries(status, score DESC);
CREATE INDEX queries_score ON queries(score DESC);
CREATE TABLE comparisons (
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
CREATE INDEX comparisons_annotator_query ON comparisons(annotator, query_id);
CREATE INDEX comparisons_annotator ON comparisons(annotator);
CREATE TABLE claims (
    query_id INTEGER NOT NULL REFERENCES queries(id),
    annotator TEXT NOT NULL,
    time REAL NOT NULL,
    viewer TEXT,
    PRIMARY KEY (query_id, annotator)
);
CREATE INDEX claims_viewer ON claims(viewer);
CREATE TABLE tallies (annotator TEXT PRIMARY KEY, judgments INTEGER NOT NULL, queries INTEGER NOT NULL);
{insert_trigger};
{delete_trigger};
"""

_SCHEMA = _SCHEMA_TEMPLATE.format(insert_trigger=_TALLY_INSERT_TRIGGER, delete_trigger=_TALLY_DELETE_TRIGGER)

_DB_ERRORS = (sqlite3.Error, UnicodeDecodeError)
"""What a damaged store can raise from any SQLite call (a message or a text value that is not UTF-8 included)."""

_JUDGMENT_COLUMNS = "id, left, right, label, source, annotator, time, response_s, query_id"

_short = reprlib.Repr()
_short.maxstring = _short.maxother = 40
_short.maxlevel = 2


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


def _guarded(fn):
    """Turn an SQLite failure inside a store method into a ``PrefrlError`` naming the store and the cause."""

    @functools.wraps(fn)
    def wrapper(self: PreferenceStore, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except _DB_ERRORS as e:
            raise self._sqlite_error(e, fn.__name__.lstrip("_")) from e

    return wrapper


class PreferenceStore:
    """Items (clips or texts), pending queries and judgments of one run, safe across processes.

    Args:
        root: the directory holding ``prefs.sqlite`` and ``clips/`` (created if missing
            and ``create`` is true; ``clips/`` only once a clip is stored).
        create: create a new store when no ``prefs.sqlite`` exists; otherwise raise. An
            existing file is never overwritten: an empty one, or one without prefrl's
            schema, is an error either way.
        readonly: only read (stats, export, training data): the store is opened with
            SQLite's ``mode=ro`` and ``query_only``, nothing is created, migrated or
            cleaned, and the directory need not be writable. Implies ``create=False``.
        cache_mib: byte cap of the in-memory clip cache in MiB (least recently used clips
            evicted; ``set_cache_mib`` changes it); None: unbounded.

    Attributes:
        session: this object's id. Claims are held by viewer sessions (``claim_queries``):
            by default this id and the annotator's name; a viewer window passes its own id.
            Every other session's live claims (another person, or the same person in a
            second window) keep their pairs away from it.

    Raises:
        PrefrlError: no store (and ``create`` false), an empty or foreign file, a damaged
            or unreadable database, or a schema from a newer prefrl.

    Example:
        >>> store = PreferenceStore(tmp_path)                               # doctest: +SKIP
        >>> ids = store.add_clips(clips)                                    # doctest: +SKIP
        >>> store.add_judgment(ids[0], ids[1], 1.0, source="synthetic")     # doctest: +SKIP
    """

    def __init__(self, root: str | Path, create: bool = True, readonly: bool = False,
                 cache_mib: float | None = CACHE_MIB):
        self.root = Path(root)
        self.path = self.root / STORE_FILE
        self.clip_dir = self.root / "clips"
        self.readonly = readonly
        self.session = uuid.uuid4().hex
        self._lock = threading.RLock()
        self._cache: OrderedDict[int, _CachedClip] = OrderedDict()  # least recently used first
        self.cache_nbytes = 0
        """Bytes of clip arrays held in the cache now (never above ``cache_bytes``)."""
        self.cache_bytes: int | None = None
        self.cache_loads = 0
        """Clip files read from disk (a cache miss each): how often evicted clips came back."""
        self.set_cache_mib(cache_mib)
        if not self._existing_file(create and not readonly):
            self._create()
        self._db = self._connect()
        try:
            self._check_schema()
        except BaseException:
            self._db.close()
            raise
        try:
            self._tallies = self._db.execute("SELECT 1 FROM sqlite_master WHERE name='tallies'").fetchone() is not None
        except _DB_ERRORS as e:
            self._db.close()
            raise PrefrlError(f"{self.path}: not a readable preference store ({_cause(e)})") from e
        if not readonly:
            self._remove_stale_staged()

    # ---- opening -----------------------------------------------------------------------
    def _existing_file(self, create: bool) -> bool:
        """Whether ``prefs.sqlite`` exists (and is a non-empty file); raises when it may not be created."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if not self.root.exists():
                if create:
                    return False
                raise PrefrlError(f"{self.root}: not a prefrl run directory (no such directory)") from None
            if not self.root.is_dir():
                raise PrefrlError(f"{self.root}: is a file, not a run directory (a directory holding {STORE_FILE})") from None
            if create:
                return False
            raise PrefrlError(f"{self.root}: not a prefrl run directory (no {STORE_FILE})") from None
        except NotADirectoryError:
            what = "is a file" if self.root.is_file() else "lies under a file"
            raise PrefrlError(f"{self.root}: {what}, not a run directory (a directory holding {STORE_FILE})") from None
        except OSError as e:
            raise PrefrlError(f"{self.path}: cannot read the store ({e.strerror or e})") from e
        if not stat.S_ISREG(st.st_mode):
            raise PrefrlError(f"{self.path}: not a file")
        if st.st_size == 0:
            raise PrefrlError(
                f"{self.path}: an empty file (0 bytes), not a preference store; restore it from a backup, "
                "or delete it to start a new store"
            )
        return True

    def _create(self) -> None:
        """Build a new store under a temporary name and link it into place (never over an existing file)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PrefrlError(f"{self.root}: cannot create the store directory ({e.strerror or e})") from e
        tmp = self.root / f".{STORE_FILE}.{uuid.uuid4().hex}.tmp"
        try:
            db = sqlite3.connect(tmp, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
                db.executescript(f"BEGIN; {_SCHEMA} INSERT INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}'); COMMIT;")
            finally:
                db.close()  # checkpoints: the file alone is the whole store
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass  # another process created the store first: open theirs
            except OSError:  # no hard links on this file system
                if not self.path.exists():
                    os.replace(tmp, self.path)
        except (OSError, *_DB_ERRORS) as e:
            raise PrefrlError(f"{self.path}: cannot create the store ({_cause(e)})") from e
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{tmp}{suffix}").unlink(missing_ok=True)
        if not self._existing_file(create=False):  # pragma: no cover - _existing_file raises instead
            raise PrefrlError(f"{self.path}: could not be created")

    def _connect(self) -> sqlite3.Connection:
        try:
            if self.readonly:
                uri = "file:" + urllib.parse.quote(str(self.path.absolute()))
                db = sqlite3.connect(uri + "?mode=ro", uri=True, timeout=60.0, isolation_level=None, check_same_thread=False)
                try:
                    db.execute("PRAGMA query_only=1")
                    db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
                except sqlite3.OperationalError as e:
                    if "unable to open" not in str(e):
                        raise
                    # A WAL store in a directory this user cannot write, closed cleanly: SQLite cannot
                    # make its shared-memory file; nobody can be writing it without one, so read it as
                    # immutable.
                    db.close()
                    db = sqlite3.connect(uri + "?mode=ro&immutable=1", uri=True, isolation_level=None, check_same_thread=False)
                    db.execute("PRAGMA query_only=1")
                return db
            db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA synchronous=FULL")
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":  # stores are made in WAL mode
                db.execute("PRAGMA journal_mode=WAL")
            return db
        except _DB_ERRORS as e:
            raise PrefrlError(f"{self.path}: not a readable preference store ({_cause(e)})") from e

    def _check_schema(self) -> None:
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except _DB_ERRORS as e:
            if "no such table" in str(e):
                raise PrefrlError(
                    f"{self.path}: not a prefrl preference store (an SQLite database without prefrl's tables)"
                ) from e
            raise PrefrlError(f"{self.path}: not a readable preference store ({_cause(e)})") from e
        if row is None:
            raise PrefrlError(f"{self.path}: not a prefrl preference store (its meta table has no schema_version)")
        v = _version(row[0], self.path)
        if v > SCHEMA_VERSION:
            raise PrefrlError(
                f"{self.path}: store schema version {v} was written by a newer prefrl; this one reads up to {SCHEMA_VERSION}"
            )
        if v < 1:
            raise PrefrlError(f"{self.path}: unreadable store schema version {_short.repr(row[0])}")
        if v < SCHEMA_VERSION:
            if not self.readonly:
                self._migrate()
            elif v < READABLE_SCHEMA_VERSION:
                raise PrefrlError(
                    f"{self.path}: store schema version {v} is too old to read without upgrading it; open it once "
                    "with write access (e.g. `prefrl label` or `prefrl train --resume`) to migrate it in place"
                )

    def _migrate(self) -> None:
        """Bring an older store up to ``SCHEMA_VERSION`` in place, in one transaction.

        The version is read again inside the transaction, so two processes opening one old
        store at once migrate it once.
        """
        v0 = "older"
        try:
            with self._tx():
                v0 = v = _version(self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0], self.path)
                while v < SCHEMA_VERSION:
                    for sql in _MIGRATIONS[v]:
                        self._db.execute(sql)
                    v += 1
                self._db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(v),))
        except _DB_ERRORS as e:
            raise PrefrlError(
                f"{self.path}: cannot migrate the store from schema version {v0} to {SCHEMA_VERSION} ({_cause(e)})"
            ) from e

    def _remove_stale_staged(self) -> None:
        """Delete staged clip files a crashed writer left (older than ``STALE_STAGED_S``; a live one renames its own in seconds)."""
        cutoff = time.time() - STALE_STAGED_S
        try:
            leftovers = list(self.clip_dir.glob(".staged-*")) + list(self.root.glob(f".{STORE_FILE}.*.tmp*"))
            for f in leftovers:
                with contextlib.suppress(OSError):
                    if f.stat().st_mtime < cutoff:
                        f.unlink()
        except OSError:  # cleaning is a courtesy: never fail an open over it
            pass
        with contextlib.suppress(*_DB_ERRORS):  # claims of viewers killed long ago (their queries were judged since)
            self._db.execute("DELETE FROM claims WHERE time < ?", (cutoff,))

    def _sqlite_error(self, e: Exception, doing: str) -> PrefrlError:
        return PrefrlError(f"{self.path}: {_cause(e)} (in {doing})")

    @contextlib.contextmanager
    def _tx(self, durable: bool = True) -> Iterator[None]:
        """One write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``) under the object's lock.

        On an error it rolls back only while a transaction is still open: SQLite rolls back by
        itself on a full disk, and a second ROLLBACK would hide the real cause behind "cannot
        rollback - no transaction is active".

        Args:
            durable: wait for the disk at the commit (``synchronous=FULL``). False for claims,
                which are transient: their commit skips the fsync (a process crash keeps them, a
                power cut may forget one; the next durable commit syncs them anyway).
        """
        with self._lock:
            if not durable:
                self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        with contextlib.suppress(*_DB_ERRORS):
                            self._db.execute("ROLLBACK")
                    raise
            finally:
                if not durable:
                    self._db.execute("PRAGMA synchronous=FULL")

    @property
    def schema_version(self) -> int:
        return self._schema_version()

    @_guarded
    def _schema_version(self) -> int:
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
    @_guarded
    def set_meta(self, key: str, value: object) -> None:
        self._exec("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    @_guarded
    def get_meta(self, key: str, default: object = None) -> object:
        row = self._exec("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        if row is None:
            return default
        try:
            return json.loads(row[0])
        except (TypeError, ValueError, RecursionError) as e:
            raise PrefrlError(f"{self.path}: meta `{key}` is unreadable ({_short.repr(row[0])}): the store is damaged") from e

    # ---- clip cache --------------------------------------------------------------------
    def set_cache_mib(self, mib: float | None) -> None:
        """Cap the in-memory clip cache at ``mib`` MiB (None: unbounded), evicting at once if needed."""
        if mib is not None and (isinstance(mib, bool) or not isinstance(mib, (int, float)) or not mib >= 0):
            raise PrefrlError(f"clip cache size must be a number of MiB >= 0 or None, got {mib!r}")
        with self._lock:
            self.cache_bytes = None if mib is None else int(mib * 2**20)
            self._evict(0)

    def _evict(self, room: int) -> None:
        """Drop least recently used clips until ``room`` more bytes fit under the cap."""
        if self.cache_bytes is None:
            return
        while self._cache and self.cache_nbytes + room > self.cache_bytes:
            _, old = self._cache.popitem(last=False)
            self.cache_nbytes -= old.nbytes

    def _cache_put(self, cid: int, clip: Clips) -> None:
        self._cache_put_packed(cid, _CachedClip.pack(clip))

    def _cache_put_packed(self, cid: int, packed: _CachedClip) -> None:
        if self.cache_bytes is not None and packed.nbytes > self.cache_bytes:
            return  # larger than the whole cache: read from disk each time
        with self._lock:
            if cid in self._cache:
                return
            self._evict(packed.nbytes)
            self._cache[cid] = packed
            self.cache_nbytes += packed.nbytes

    def _cache_get(self, cid: int) -> Clips | None:
        packed = self._cache_get_packed(cid)
        return None if packed is None else packed.unpack()

    def _cache_get_packed(self, cid: int) -> _CachedClip | None:
        with self._lock:
            packed = self._cache.get(cid)
            if packed is None:
                return None
            self._cache.move_to_end(cid)
        return packed

    # ---- clips -------------------------------------------------------------------------
    def _clip_path(self, clip_id: int, frames: bool = False) -> Path:
        return self.clip_dir / (f"{clip_id:07d}.frames.npz" if frames else f"{clip_id:07d}.npz")

    def _writable(self) -> None:
        if self.readonly:
            raise PrefrlError(f"{self.path}: opened read-only")

    @_guarded
    def add_clips(self, clips: Clips, keep_frames: bool = True) -> list[int]:
        """Store clips (arrays on disk, a row each) in one transaction; returns their ids.

        The arrays are written to temporary files first, outside the database lock;
        inside the transaction each row is inserted and its files renamed into place
        (a rename is instant), so a labeler's judgment never waits for clip I/O. The
        rows become visible only after every file is in place; a failure midway (a full
        disk) removes the staged files, and a crash leaves only staged files, removed by
        the next writer that opens the store once they are an hour old.
        """
        self._writable()
        rets = clips.true_returns() if clips.true_rew is not None else [None] * len(clips)
        has_frames = keep_frames and clips.frames is not None
        staged: list[list[Path]] = []
        try:
            self.clip_dir.mkdir(parents=True, exist_ok=True)
            for k in range(len(clips)):
                arrays = {"obs": clips.obs[k], "acts": clips.acts[k]}
                if clips.true_rew is not None:
                    arrays["true_rew"] = clips.true_rew[k]
                files: list[Path] = []
                staged.append(files)
                _stage_savez(self.clip_dir, arrays, files)
                if has_frames:
                    _stage_savez(self.clip_dir, {"frames": clips.frames[k]}, files)
        except OSError as e:
            _unlink_all(staged)
            raise PrefrlError(f"{self.clip_dir}: cannot write clip files ({e.strerror or e}); nothing was stored") from e
        except BaseException:
            _unlink_all(staged)
            raise
        ids: list[int] = []
        moved: list[Path] = []  # files renamed into place for rows a failed commit takes back
        try:
            with self._tx():
                for k, files in enumerate(staged):
                    cur = self._db.execute(
                        "INSERT INTO clips (length, true_return, has_frames, created) VALUES (?, ?, ?, ?)",
                        (clips.length, None if rets[k] is None else float(rets[k]), int(has_frames), time.time()),
                    )
                    cid = int(cur.lastrowid)
                    targets = [self._clip_path(cid)] + ([self._clip_path(cid, frames=True)] if has_frames else [])
                    for src, dst in zip(files, targets):
                        os.replace(src, dst)
                        moved.append(dst)
                    ids.append(cid)
        except OSError as e:
            _unlink_all([*staged, moved])
            raise PrefrlError(f"{self.clip_dir}: cannot move clip files into place ({e.strerror or e}); nothing was stored") from e
        except BaseException:
            _unlink_all([*staged, moved])
            raise
        for k, cid in enumerate(ids):  # what was just asked is what the next refit reads: keep a copy (not a view)
            self._cache_put(cid, Clips(clips.obs[k : k + 1].copy(), clips.acts[k : k + 1].copy(),
                                       None if clips.true_rew is None else clips.true_rew[k : k + 1].copy()))
        return ids

    @_guarded
    def clip_ids(self) -> list[int]:
        """Ids of the stored clips (text items excluded), ascending."""
        return [r[0] for r in self._exec("SELECT id FROM clips WHERE text IS NULL ORDER BY id")]

    def _read_clip(self, cid: int) -> tuple[Clips, _CachedClip]:
        """Clip ``cid`` from its file (a cache miss), as read and packed; put in the cache."""
        path = self._clip_path(cid)
        if not path.exists():
            if self.is_text(cid):
                raise PrefrlError(f"{self.path}: item {cid} is a text item (prompt + completion), not a clip")
            raise PrefrlError(f"{path}: clip {cid} is missing from the store")
        z = _load_clip_file(path, ("obs", "acts"), ("true_rew",))
        try:
            clip = Clips(z["obs"][None], z["acts"][None], z["true_rew"][None] if "true_rew" in z else None)
        except PrefrlError as e:
            raise PrefrlError(f"{path}: {e}") from e
        self.cache_loads += 1
        packed = _CachedClip.pack(clip)
        self._cache_put_packed(cid, packed)
        return clip, packed

    @_guarded
    def load_clip_array(self, ids: Iterable[int], name: str) -> np.ndarray:
        """One array (``obs``, ``acts`` or ``true_rew``) of clips by id, (N, T, ...) in the order given,
        through the capped cache, built in one output array (what a refit minibatch reads).

        Only the array asked for is built: ``acts`` never unpacks observations. Stacked frames
        kept once in the cache (``_CachedClip``) are written straight into the output with the
        stacking axis innermost in memory: the array has the usual shape (N, T, K, H, W), a view
        of (N, T, H, W, K) memory, the channels-last layout a CPU convolution reads (no second
        copy to reorder them). Equal, element for element, to ``getattr(load_clips(ids), name)``.
        """
        packs = []
        for cid in map(int, ids):
            packed = self._cache_get_packed(cid)
            packs.append(packed if packed is not None else self._read_clip(cid)[1])
        try:
            return _assemble(packs, name)
        except PrefrlError as e:
            raise PrefrlError(f"{self.path}: {e}") from e

    @_guarded
    def load_clips(self, ids: Iterable[int], frames: bool = False) -> Clips:
        """Clips by id, in the order given (arrays through the capped cache; frames read on demand)."""
        parts = []
        for cid in ids:
            cid = int(cid)
            clip = self._cache_get(cid)
            if clip is None:
                clip = self._read_clip(cid)[0]
            if frames:
                fpath = self._clip_path(cid, frames=True)
                if not fpath.exists():
                    raise PrefrlError(f"clip {cid} has no rendered frames (train with frames kept to label by hand)")
                z = _load_clip_file(fpath, ("frames",), ())
                try:
                    clip = Clips(clip.obs, clip.acts, clip.true_rew, z["frames"][None])
                except PrefrlError as e:
                    raise PrefrlError(f"{fpath}: {e}") from e
            parts.append(clip)
        return Clips.concat(parts)

    # ---- text items --------------------------------------------------------------------
    @_guarded
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
                raise PrefrlError(f"add_texts: prompts and completions must be strings, got {type(x).__name__} {_short.repr(x)}")
        rets = [None] * len(prompts) if scores is None else [None if v is None else float(v) for v in scores]
        if len(rets) != len(prompts):
            raise PrefrlError(f"add_texts: {len(prompts)} texts but {len(rets)} scores")
        now = time.time()
        ids = []
        with self._tx():
            for p, c, r in zip(prompts, completions, rets):
                cur = self._db.execute(
                    "INSERT INTO clips (length, true_return, has_frames, created, text) VALUES (1, ?, 0, ?, ?)",
                    (r, now, json.dumps({"prompt": p, "completion": c})),  # ASCII: safe for any str
                )
                ids.append(int(cur.lastrowid))
        return ids

    @_guarded
    def text_ids(self) -> list[int]:
        """Ids of the stored text items, ascending."""
        return [r[0] for r in self._exec("SELECT id FROM clips WHERE text IS NOT NULL ORDER BY id")]

    @_guarded
    def is_text(self, item_id: int) -> bool:
        """Whether ``item_id`` is a text item (False for a clip or an unknown id)."""
        row = self._exec("SELECT text IS NOT NULL FROM clips WHERE id=?", (int(item_id),)).fetchone()
        return bool(row and row[0])

    @_guarded
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
            try:
                d = json.loads(rows[i])  # type: ignore[arg-type]
                prompt, completion = d["prompt"], d["completion"]
                if not isinstance(prompt, str) or not isinstance(completion, str):
                    raise TypeError("not strings")
            except (TypeError, ValueError, KeyError, RecursionError) as e:
                raise PrefrlError(f"{self.path}: text item {i} is unreadable ({_short.repr(rows[i])}): the store is damaged") from e
            out.append((prompt, completion))
        return out

    @_guarded
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

    @_guarded
    def judged_kind(self, labeled_only: bool = True) -> str | None:
        """What the (labeled) judgments compare: ``"clips"``, ``"texts"``, ``"mixed"``, or None when there are none."""
        n_clips, n_texts = self._judged_kinds(labeled_only)
        if n_clips and n_texts:
            return "mixed"
        return "clips" if n_clips else ("texts" if n_texts else None)

    @_guarded
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
    @_guarded
    def add_queries(self, pairs: np.ndarray, scores: np.ndarray | None = None) -> list[int]:
        """Enqueue pairs (clip ids) for a labeller; higher score is asked first."""
        scores = np.zeros(len(pairs)) if scores is None else scores
        now = time.time()
        ids = []
        with self._tx():
            for (a, b), s in zip(np.asarray(pairs).tolist(), np.asarray(scores).tolist()):
                cur = self._db.execute(
                    "INSERT INTO queries (left, right, score, created) VALUES (?, ?, ?, ?)", (a, b, s, now)
                )
                ids.append(int(cur.lastrowid))
        return ids

    @_guarded
    def pending_queries(self, limit: int | None = None) -> list[Query]:
        sql = "SELECT id, left, right, score FROM queries WHERE status='pending' ORDER BY score DESC, id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [Query(*r) for r in self._exec(sql)]

    @_guarded
    def claim_queries(
        self,
        annotator: str,
        limit: int = 1,
        exclude: Iterable[int] = (),
        shared: bool = False,
        ttl_s: float = CLAIM_TTL_S,
        viewer: str | None = None,
        after: tuple[float, int] | None = None,
    ) -> list[Query]:
        """Claim the next queries for a viewer session of ``annotator``, best score first, atomically.

        Every other live viewer session's claims are respected, whoever its annotator: two
        people, or one person in two windows, are never shown the same pair.

        Args:
            annotator: who will judge them.
            limit: how many queries to take.
            exclude: query ids not to return (those the viewer already holds).
            shared: False (a run): pending queries that no other session holds. True (every
                annotator labels every pair, e.g. a dataset): queries not cancelled that
                ``annotator`` has not judged and that no other session of ``annotator`` holds.
            ttl_s: age after which another session's claim lapses (its viewer stopped
                refreshing it with ``refresh_claims``: killed or frozen).
            viewer: the session taking the claims (default: this store object's ``session`` and
                ``annotator``; a viewer window passes its own id to every call).
            after: ``(score, id)`` of the last query this session was handed: the search goes
                on after it in best-first order (a long labelling session never rescans what it
                judged), then starts over from the best. Shared mode, None: after the query of
                the annotator's latest judgment.
        """
        excl = ",".join(str(int(q)) for q in exclude) or "-1"
        viewer = self._viewer(annotator, viewer)
        limit = int(limit)
        if shared:
            where = (
                f"status != 'cancelled' AND id NOT IN ({excl})"
                " AND NOT EXISTS (SELECT 1 FROM comparisons c WHERE c.annotator IS :who AND c.query_id = q.id)"
                " AND NOT EXISTS (SELECT 1 FROM claims k WHERE k.query_id = q.id AND k.annotator = :who"
                " AND k.viewer IS NOT :viewer AND k.time > :fresh)"
            )
        else:
            where = (
                f"status = 'pending' AND id NOT IN ({excl})"
                " AND NOT EXISTS (SELECT 1 FROM claims k WHERE k.query_id = q.id"
                " AND k.viewer IS NOT :viewer AND k.time > :fresh)"
            )
        with self._tx(durable=False):
            now = time.time()
            args = {"who": annotator, "viewer": viewer, "fresh": now - ttl_s}
            if shared and after is None:  # a new session continues where the annotator stopped
                after = self._db.execute(
                    "SELECT q.score, q.id FROM comparisons c JOIN queries q ON q.id = c.query_id"
                    " WHERE c.annotator IS ? AND c.query_id IS NOT NULL ORDER BY c.id DESC LIMIT 1", (annotator,)
                ).fetchone()
            rows = self._next_queries(where, args, limit, after)
            self._db.executemany(
                "INSERT OR REPLACE INTO claims (query_id, annotator, time, viewer) VALUES (?, ?, ?, ?)",
                [(q.id, annotator, now, viewer) for q in rows],
            )
        return rows

    def _next_queries(self, where: str, args: dict, limit: int, after: tuple[float, int] | None) -> list[Query]:
        """Up to ``limit`` queries matching ``where`` in (score DESC, id) order, starting after ``after``."""
        sql = f"SELECT id, left, right, score FROM queries q WHERE {where}"
        rows: list[Query] = []
        if after is not None:  # two index ranges: the rest of the cursor's score, then the lower scores
            s, i = float(after[0]), int(after[1])
            rows += [Query(*r) for r in self._db.execute(
                f"{sql} AND score = :s AND id > :i ORDER BY score DESC, id LIMIT :n", {**args, "s": s, "i": i, "n": limit})]
            if len(rows) < limit:
                rows += [Query(*r) for r in self._db.execute(
                    f"{sql} AND score < :s ORDER BY score DESC, id LIMIT :n", {**args, "s": s, "n": limit - len(rows)})]
        if len(rows) < limit:
            seen = {q.id for q in rows}
            more = [Query(*r) for r in self._db.execute(f"{sql} ORDER BY score DESC, id LIMIT :n", {**args, "n": limit})]
            rows += [q for q in more if q.id not in seen][: limit - len(rows)]
        return rows

    def _viewer(self, annotator: str, viewer: str | None) -> str:
        """The session id claims are taken under: ``viewer``, else this object's session for ``annotator``."""
        return f"{self.session}:{annotator}" if viewer is None else viewer

    @_guarded
    def release_claims(self, annotator: str, query_ids: Iterable[int] | None = None, viewer: str | None = None) -> None:
        """Give back the claims of ``annotator`` that session ``viewer`` holds (default: see
        ``claim_queries``): all, or those of ``query_ids``; e.g. when a viewer quits."""
        viewer = self._viewer(annotator, viewer)
        with self._tx(durable=False):
            if query_ids is None:
                self._db.execute("DELETE FROM claims WHERE annotator=? AND viewer IS ?", (annotator, viewer))
            else:
                ids = ",".join(str(int(q)) for q in query_ids) or "-1"
                self._db.execute(
                    f"DELETE FROM claims WHERE annotator=? AND viewer IS ? AND query_id IN ({ids})", (annotator, viewer)
                )

    @_guarded
    def refresh_claims(self, viewer: str | None = None) -> int:
        """Heartbeat: mark every claim of session ``viewer`` as fresh (default: every claim this
        object took without naming a viewer); returns how many.

        A live viewer calls it every ``CLAIM_HEARTBEAT_S`` seconds, so its claims never lapse
        while a person looks at a pair; a killed viewer's lapse ``CLAIM_TTL_S`` after its last beat.
        """
        with self._tx(durable=False):
            if viewer is not None:
                return int(self._db.execute("UPDATE claims SET time=? WHERE viewer=?", (time.time(), viewer)).rowcount)
            lo, hi = f"{self.session}:", f"{self.session};"  # ';' follows ':' : the range of this object's sessions
            return int(self._db.execute(
                "UPDATE claims SET time=? WHERE viewer >= ? AND viewer < ?", (time.time(), lo, hi)).rowcount)

    @_guarded
    def query_status(self, query_id: int) -> str | None:
        """``pending``, ``done``, ``cancelled``, or None for an unknown id."""
        row = self._exec("SELECT status FROM queries WHERE id=?", (int(query_id),)).fetchone()
        return None if row is None else str(row[0])

    @_guarded
    def count_open(self, annotator: str, shared: bool = False) -> int:
        """How many queries ``annotator`` could still be shown (see ``claim_queries``), claims ignored."""
        if not shared:
            return self.count_pending()
        with self._lock:  # not cancelled, minus those judged by the annotator (no scan of the judgments)
            total = self._db.execute("SELECT COUNT(*) FROM queries").fetchone()[0]
            cancelled = self._db.execute("SELECT COUNT(*) FROM queries WHERE status='cancelled'").fetchone()[0]
            if self._tallies:
                row = self._db.execute("SELECT queries FROM tallies WHERE annotator=?", (annotator,)).fetchone()
                judged = 0 if row is None else row[0]
            else:  # a version-2 store read as it is
                judged = self._db.execute(
                    "SELECT COUNT(DISTINCT query_id) FROM comparisons WHERE annotator IS ? AND query_id IS NOT NULL",
                    (annotator,),
                ).fetchone()[0]
            judged_cancelled = self._db.execute(
                "SELECT COUNT(DISTINCT c.query_id) FROM queries q CROSS JOIN comparisons c ON c.query_id = q.id"
                " WHERE q.status = 'cancelled' AND c.annotator IS ?", (annotator,)
            ).fetchone()[0]
        return max(0, int(total - cancelled - (judged - judged_cancelled)))

    @_guarded
    def count_pending(self) -> int:
        return int(self._exec("SELECT COUNT(*) FROM queries WHERE status='pending'").fetchone()[0])

    @_guarded
    def cancel_pending(self) -> None:
        self._exec("UPDATE queries SET status='cancelled' WHERE status='pending'")

    # ---- judgments ---------------------------------------------------------------------
    @_guarded
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
        """Write one judgment, committed before returning. ``label`` None (or NaN) is a skip.

        A judgment of a query marks it ``done`` and drops its claim in the same transaction.
        """
        if label is not None and np.isnan(label):
            label = None
        if label is not None and not 0.0 <= label <= 1.0:
            raise PrefrlError(f"label must be a probability in [0, 1] or a skip, got {label}")
        with self._tx():
            cur = self._db.execute(
                "INSERT INTO comparisons (left, right, label, source, annotator, time, response_s, query_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (int(left), int(right), label, source, annotator, time.time(), response_s, query_id),
            )
            if query_id is not None:
                self._db.execute("UPDATE queries SET status='done' WHERE id=?", (query_id,))
                self._db.execute("DELETE FROM claims WHERE query_id=? AND annotator IS ?", (query_id, annotator))
        return int(cur.lastrowid)

    @_guarded
    def add_judgments(
        self, pairs: np.ndarray, labels: np.ndarray, source: str, annotator: str | None = None
    ) -> list[int]:
        """Write many judgments in one transaction (oracles label in batches); returns their ids.

        ``labels`` are P(left preferred) in [0, 1], NaN for a skip; any other value is refused
        before anything is written.
        """
        labels = np.asarray(labels, np.float64)
        bad = ~np.isnan(labels) & ~((labels >= 0.0) & (labels <= 1.0))
        if bad.any():
            raise PrefrlError(f"label must be a probability in [0, 1] or a skip, got {labels[bad][0]}")
        now = time.time()
        ids = []
        with self._tx():
            for (a, b), lab in zip(np.asarray(pairs).tolist(), np.asarray(labels, np.float64).tolist()):
                cur = self._db.execute(
                    "INSERT INTO comparisons (left, right, label, source, annotator, time) VALUES (?, ?, ?, ?, ?, ?)",
                    (a, b, None if np.isnan(lab) else lab, source, annotator, now),
                )
                ids.append(int(cur.lastrowid))
        return ids

    @_guarded
    def undo_last(self, annotator: str | None = None, viewer: str | None = None) -> Judgment | None:
        """Delete the most recent judgment (of ``annotator`` if given); its query becomes pending again.

        With ``viewer`` (a session id), that session claims the query again in the same
        transaction, so no other viewer takes the pair while it is shown again.
        """
        with self._tx():
            sql = f"SELECT {_JUDGMENT_COLUMNS} FROM comparisons"
            args: tuple = ()
            if annotator is not None:
                sql += " WHERE annotator=?"
                args = (annotator,)
            row = self._db.execute(sql + " ORDER BY id DESC LIMIT 1", args).fetchone()
            if row is None:
                return None
            j = self._judgment(row)
            self._db.execute("DELETE FROM comparisons WHERE id=?", (j.id,))
            if j.query_id is not None:
                self._db.execute("UPDATE queries SET status='pending' WHERE id=? AND status='done'", (j.query_id,))
                if viewer is not None:
                    self._db.execute(
                        "INSERT OR REPLACE INTO claims (query_id, annotator, time, viewer) VALUES (?, ?, ?, ?)",
                        (j.query_id, j.annotator or "", time.time(), viewer),
                    )
        return j

    def _judgment(self, row: tuple) -> Judgment:
        """A ``comparisons`` row as a Judgment, refusing values no prefrl wrote (a damaged store)."""
        j = Judgment(*row)
        num = (int, float)
        ok = (
            all(isinstance(v, int) for v in (j.id, j.left, j.right))
            and (j.label is None or (isinstance(j.label, num) and 0.0 <= j.label <= 1.0))
            and isinstance(j.source, str)
            and (j.annotator is None or isinstance(j.annotator, str))
            and isinstance(j.time, num)
            and (j.response_s is None or isinstance(j.response_s, num))
            and (j.query_id is None or isinstance(j.query_id, int))
        )
        if not ok:
            raise PrefrlError(f"{self.path}: judgment row {_short.repr(row)} is unreadable: the store is damaged")
        return j

    @_guarded
    def judgments(self, since_id: int = 0) -> list[Judgment]:
        rows = self._exec(f"SELECT {_JUDGMENT_COLUMNS} FROM comparisons WHERE id > ? ORDER BY id", (since_id,))
        return [self._judgment(r) for r in rows]

    @_guarded
    def last_judgment_id(self) -> int:
        """The newest judgment's id (0 when there is none)."""
        return int(self._exec("SELECT COALESCE(MAX(id), 0) FROM comparisons").fetchone()[0])

    @_guarded
    def count_judgments(self, include_skips: bool = True, annotator: str | None = None) -> int:
        """Judgments in the store (of ``annotator`` only, if given)."""
        if annotator is not None and include_skips and self._tallies:
            row = self._exec("SELECT judgments FROM tallies WHERE annotator=?", (annotator,)).fetchone()
            return 0 if row is None else int(row[0])
        where = ([] if include_skips else ["label IS NOT NULL"]) + ([] if annotator is None else ["annotator = ?"])
        sql = "SELECT COUNT(*) FROM comparisons" + (" WHERE " + " AND ".join(where) if where else "")
        return int(self._exec(sql, () if annotator is None else (annotator,)).fetchone()[0])

    @_guarded
    def asked_pairs(self) -> set[tuple[int, int]]:
        """Unordered clip-id pairs already judged or queued (so they are not asked twice)."""
        rows = self._exec(
            "SELECT left, right FROM comparisons UNION SELECT left, right FROM queries WHERE status='pending'"
        )
        return {(min(a, b), max(a, b)) for a, b in rows}

    @_guarded
    def training_data(self, max_labels: int | None = None,
                      lazy: bool = False) -> tuple[Clips | StoredClips, Comparisons, list[int]]:
        """Judged clips and comparisons, re-indexed 0..N-1 (skips kept as NaN), in judgment order.

        Args:
            max_labels: keep only the newest judgments holding this many labels (skips among
                them kept as NaN); None keeps all (Christiano et al. refit on the last 3,000).
            lazy: return ``StoredClips``, whose arrays load clips through the capped cache when
                indexed, instead of every judged clip in memory at once.

        Returns:
            clips, comparisons over those clips, and the store ids of the clips (clips None
            when nothing is judged).

        Raises:
            PrefrlError: the judgments compare text items (use ``text_training_data``).
        """
        js = self.judgments()
        if max_labels is not None:
            labeled = [k for k, j in enumerate(js) if j.label is not None]
            if len(labeled) > max_labels:
                js = js[labeled[len(labeled) - max_labels]:] if max_labels > 0 else []
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
        if not ids:
            return None, comps, ids  # type: ignore[return-value]
        clips = StoredClips(self, ids) if lazy else self.load_clips(ids)
        return clips, comps, ids

    # ---- export ------------------------------------------------------------------------
    @_guarded
    def export(self, out: str | Path) -> tuple[int, int]:
        """Write the judgments as a preference dataset; returns (items, comparisons) written.

        Clips: ``out/clips.npz`` + ``out/comparisons.jsonl`` (``prefrl.core.dataset``). Text
        items: ``out/preferences.jsonl``, one TRL line per judgment (``trl_record``), which
        ``prefrl text reward`` reads. Skips are not exported: a dataset line's label must be a
        probability. A store whose judgments compare both kinds is refused. Files are written
        under temporary names and renamed into place (a full disk leaves the old files, or
        none, never a cut one). Existing files in ``out`` are replaced (``prefrl prefs
        export`` asks for ``--force`` first).
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
        write_jsonl(out / TEXT_PREFERENCES_FILE, records)
        return len(ids), len(js)


class StoredClipArray:
    """One array of stored clips, ``obs`` or ``acts`` of shape (N, T, ...), loaded when indexed.

    Indexing (an int, a slice or an index array) reads those clips through the store's
    capped cache and returns a numpy array; ``np.asarray`` loads them all.
    """

    def __init__(self, store: PreferenceStore, ids: np.ndarray, name: str, first: np.ndarray):
        self.store, self.ids, self.name = store, ids, name
        self.shape = (len(ids), *first.shape[1:])
        self.dtype = first.dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, idx) -> np.ndarray:
        sel = self.ids[idx]
        if np.ndim(sel) == 0:
            return self.store.load_clip_array([int(sel)], self.name)[0]
        if len(sel) == 0:
            return np.zeros((0, *self.shape[1:]), self.dtype)
        return self.store.load_clip_array(sel.tolist(), self.name)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[np.arange(len(self))]
        return out if dtype is None else out.astype(dtype)


class StoredClips:
    """Judged clips of a store, held as ids: ``model_inputs()`` maps ``obs`` and ``acts`` to
    ``StoredClipArray`` columns, so a refit reads each minibatch through the capped clip
    cache and memory stays bounded however many clips were judged."""

    def __init__(self, store: PreferenceStore, ids: list[int]):
        self.ids = np.asarray(ids, np.int64)
        first = store.load_clips(self.ids[:1].tolist())
        self.obs = StoredClipArray(store, self.ids, "obs", first.obs)
        self.acts = StoredClipArray(store, self.ids, "acts", first.acts)

    def __len__(self) -> int:
        return len(self.ids)

    def model_inputs(self) -> dict[str, StoredClipArray]:
        return {"obs": self.obs, "acts": self.acts}


@dataclass(frozen=True)
class _CachedClip:
    """One clip as the cache holds it. Stacked frames (step t+1's stack is step t's shifted by one
    frame, as Atari's ``FrameStackObservation`` makes them) are kept once: T + K - 1 frames instead
    of T x K (3.6x less for 25 steps of 4 frames); any other observation is kept as it is."""

    obs: np.ndarray
    """(1, T, ...) observations, or (T + K - 1, ...) distinct frames when ``stack`` = K > 0."""
    stack: int
    acts: np.ndarray
    true_rew: np.ndarray | None

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.obs, self.acts, self.true_rew) if a is not None)

    @property
    def obs_shape(self) -> tuple[int, ...]:
        """(T, ...) of the clip's observations, unpacked."""
        if not self.stack:
            return tuple(self.obs.shape[1:])
        return (len(self.obs) - self.stack + 1, self.stack, *self.obs.shape[1:])

    @staticmethod
    def pack(clip: Clips) -> _CachedClip:
        obs = clip.obs[0]  # (T, ...)
        if obs.ndim >= 3 and len(obs) > 1 and obs.shape[1] > 1 and np.array_equal(obs[1:, :-1], obs[:-1, 1:]):
            frames = np.concatenate([obs[0], obs[1:, -1]])  # (K + T - 1, ...)
            return _CachedClip(frames, obs.shape[1], clip.acts, clip.true_rew)
        return _CachedClip(clip.obs, 0, clip.acts, clip.true_rew)

    def unpack(self) -> Clips:
        if not self.stack:
            return Clips(self.obs, self.acts, self.true_rew)
        windows = np.lib.stride_tricks.sliding_window_view(self.obs, self.stack, axis=0)  # (T, ..., K)
        obs = np.ascontiguousarray(np.moveaxis(windows, -1, 1))  # (T, K, ...)
        return Clips(obs[None], self.acts, self.true_rew)


def _assemble(packs: list[_CachedClip], name: str) -> np.ndarray:
    """One array (``obs``, ``acts`` or ``true_rew``), (N, T, ...), of packed clips, built in one output
    array; stacked observations with the stacking axis innermost in memory (``load_clip_array``)."""
    if name != "obs":
        parts = [getattr(p, name) for p in packs]
        if any(a is None for a in parts):
            raise PrefrlError(f"some clips have no `{name}`")
        return np.concatenate(parts)
    first = packs[0].obs_shape
    if any(p.obs_shape != first for p in packs):
        raise PrefrlError(f"clips of different shapes ({first} and others) cannot be read together")
    if not any(p.stack for p in packs):
        return np.concatenate([p.obs for p in packs])
    t, k = first[:2]
    mem = np.empty((len(packs), t, *first[2:], k), packs[0].obs.dtype)  # (N, T, ..., K) in memory
    out = np.moveaxis(mem, -1, 2)  # (N, T, K, ...) view
    for j, p in enumerate(packs):
        if p.stack:
            for i in range(k):  # step s's frame i is distinct frame s + i
                mem[j, ..., i] = p.obs[i : i + t]
        else:
            out[j] = p.obs[0]
    return out


class PackedClips:
    """Clips held packed (``_CachedClip``: a frame stack's distinct frames once, 3.6x less memory for
    Atari's 25 steps of 4 frames) until they are needed: ``clips()`` gives them back, equal element
    for element (observations channels-last in memory, as ``load_clip_array`` builds them)."""

    def __init__(self, clips: Clips):
        self.packs = [_CachedClip.pack(clips[[k]]) for k in range(len(clips))]
        self.frames = clips.frames

    def __len__(self) -> int:
        return len(self.packs)

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.packs) + (0 if self.frames is None else self.frames.nbytes)

    @property
    def true_rew(self) -> np.ndarray | None:
        """(N, T) true rewards, or None when some clip has none."""
        return _assemble(self.packs, "true_rew") if all(p.true_rew is not None for p in self.packs) else None

    def true_returns(self) -> np.ndarray:
        """(N,) sum of the true reward over each clip (as ``Clips.true_returns``)."""
        rew = self.true_rew
        if rew is None:
            raise PrefrlError("these clips carry no `true_rew`")
        return rew.sum(axis=1)

    def clips(self) -> Clips:
        has_rew = all(p.true_rew is not None for p in self.packs)
        return Clips(_assemble(self.packs, "obs"), _assemble(self.packs, "acts"),
                     _assemble(self.packs, "true_rew") if has_rew else None, self.frames)


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
    except (TypeError, ValueError, OverflowError) as e:
        raise PrefrlError(f"{path}: unreadable store schema version {_short.repr(value)}") from e


def _cause(e: BaseException) -> str:
    """What went wrong, in words a user can act on (SQLite's own message kept in brackets)."""
    if isinstance(e, OSError) and not isinstance(e, sqlite3.Error):
        return str(e.strerror or e)
    if isinstance(e, UnicodeDecodeError):
        return f"the store is damaged (text that is not UTF-8: {e.reason} at byte {e.start}); `sqlite3 {STORE_FILE} .recover` may rescue its data"
    msg = str(e)
    low = msg.lower()
    if "disk is full" in low or "disk full" in low:
        return f"the disk is full ({msg}); the write was undone, everything saved before it is intact"
    if "readonly" in low or "read-only" in low:
        return f"cannot write: the store is read-only ({msg})"
    if "malformed" in low or "not a database" in low or "corrupt" in low:
        return f"the store is damaged ({msg}); `sqlite3 {STORE_FILE} .recover` may rescue its data"
    if "locked" in low or "busy" in low:
        return f"another process held the store locked for over 60 s ({msg})"
    if "unable to open" in low:
        return f"cannot open the database file ({msg}): check its permissions and that the directory is reachable"
    return msg


def _unlink_all(staged: list[list[Path]]) -> None:
    for files in staged:
        for f in files:
            with contextlib.suppress(OSError):
                f.unlink(missing_ok=True)


def _stage_savez(directory: Path, arrays: dict[str, np.ndarray], files: list[Path]) -> Path:
    """Write arrays to a uniquely named temporary .npz in ``directory`` (appended to ``files`` first, so a
    failure midway still leaves its name for cleanup); the caller renames it."""
    tmp = directory / f".staged-{uuid.uuid4().hex}.npz"
    files.append(tmp)
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return tmp


def _load_clip_file(path: Path, need: tuple[str, ...], optional: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays of one stored clip file; a damaged file is a ``PrefrlError`` naming it."""
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in (*need, *optional) if k in z.files}
    except Exception as e:  # zipfile.BadZipFile, ValueError, OSError, EOFError ...
        raise PrefrlError(f"{path}: clip file is unreadable ({type(e).__name__}: {e})") from e
    missing = [k for k in need if k not in out]
    if missing:
        raise PrefrlError(f"{path}: clip file has no array `{missing[0]}`")
    return out
