"""Preference-store latency per labelling key, in both viewer modes, as the store grows.

One "key" is what a viewer does for each judgment a person makes, on the real store
(SQLite WAL, ``synchronous=FULL``, so every write waits for the disk):

- ``claim``: the prefetcher claims the next pair (``claim_queries``, with its session and cursor);
- ``judge``: the judgment is written and committed (``add_judgment`` with the query id);
- ``counts``: the header counts are refreshed (``count_judgments`` mine and all, ``count_open``).

Modes: ``run`` (a training run: pending queries shared out between viewer sessions) and
``dataset`` (``shared=True``: every annotator labels every pair). Before timing, the store is
filled with N judgments (bulk inserted in one transaction, as the viewer would have left them):

- run: N judged queries (``done``) plus 400 pending, judgments by four annotators;
- dataset: N + 400 queries; the measured annotator has already judged N/2 of them (the first
  in claim order: the worst case for finding the next open pair) and three others N/2 between them.

Then 200 keys are timed with a fresh store object (a new viewer session). The table gives the
median and 95th percentile of claim + judge + counts per key, and the first key on its own (a new
session's first claim), in milliseconds.

Only the judgment's commit waits for the disk (claims are transient and skip the fsync), so a
key costs one fsync of the file system plus the store's own work; the script measures the
fsync first and prints it. ``--dir /dev/shm`` (no disk) shows the store's work alone.

    python scripts/bench_store.py                       # 1k, 10k, 50k judgments, stores under $TMPDIR
    python scripts/bench_store.py --dir /dev/shm        # the store's own work, without the disk
    python scripts/bench_store.py --sizes 1000 40000 --keys 300
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prefrl.core.store import PreferenceStore  # noqa: E402

OTHERS = ("bob", "carol", "dave")


def fill(root: Path, mode: str, n: int, extra: int) -> None:
    """A store with ``n`` judgments and ``extra`` queries still open for the measured annotator."""
    with PreferenceStore(root) as store:
        n_items = 400
        ids = store.add_texts([f"prompt {i // 2}" for i in range(n_items)], [f" completion {i}" for i in range(n_items)])
        now = time.time()
        n_queries = n + extra
        pairs = [(ids[k % n_items], ids[(k * 7 + 1) % n_items]) for k in range(n_queries)]
        db = store._db  # bulk insert in one transaction: building 50k judgments key by key would take minutes
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO queries (id, left, right, score, created, status) VALUES (?, ?, ?, ?, ?, ?)",
            [(q + 1, a, b, 0.0 if mode == "dataset" else float(q % 97), now,
              "done" if mode == "run" and q < n else "pending") for q, (a, b) in enumerate(pairs)],
        )
        rows = []
        if mode == "run":  # every judged query judged once, by one of four people
            for q in range(n):
                who = ("alice", *OTHERS)[q % 4]
                rows.append((pairs[q][0], pairs[q][1], 1.0, "human", who, now, 1.0, q + 1))
        else:  # alice judged the first n/2 queries; the others n/2 judgments between them
            for q in range(n // 2):
                rows.append((pairs[q][0], pairs[q][1], 1.0, "human", "alice", now, 1.0, q + 1))
            for k in range(n - n // 2):
                q = k % n_queries
                rows.append((pairs[q][0], pairs[q][1], 0.0, "human", OTHERS[k % 3], now, 1.0, q + 1))
        db.executemany(
            "INSERT INTO comparisons (left, right, label, source, annotator, time, response_s, query_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        db.execute("COMMIT")
        store.set_meta("mode", mode)


def time_keys(root: Path, mode: str, keys: int) -> list[tuple[float, float, float]]:
    """(claim, judge, counts) seconds of each key, as a viewer session does them."""
    shared = mode == "dataset"
    out = []
    with PreferenceStore(root, create=False) as store:
        session, cursor = f"alice:bench:{time.time_ns()}", None
        for _ in range(keys):
            t0 = time.perf_counter()
            (q,) = store.claim_queries("alice", 1, shared=shared, viewer=session, after=cursor)
            cursor = (q.score, q.id)
            t1 = time.perf_counter()
            store.add_judgment(q.left, q.right, 1.0, source="human", annotator="alice", response_s=1.0, query_id=q.id)
            t2 = time.perf_counter()
            store.count_judgments(annotator="alice")
            store.count_judgments()
            store.count_open("alice", shared=shared)
            t3 = time.perf_counter()
            out.append((t1 - t0, t2 - t1, t3 - t2))
        store.release_claims("alice", viewer=session)
    return out


def fsync_s(directory: Path, n: int = 40) -> float:
    """Median seconds one 4 KiB write + fsync takes in ``directory`` (what every durable commit waits for)."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    times = []
    try:
        for _ in range(n):
            os.write(fd, b"x" * 4096)
            t0 = time.perf_counter()
            os.fsync(fd)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000], help="judgments in the store")
    ap.add_argument("--keys", type=int, default=200, help="keys timed per mode and size")
    ap.add_argument("--dir", type=Path, default=None, help="where to build the stores (default: a temporary directory)")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench_store-", dir=args.dir))
    ms = lambda x: f"{1000 * x:.2f}"  # noqa: E731
    print(f"stores under {base}; fsync there takes {ms(fsync_s(base))} ms (median); {args.keys} keys per row;")
    print("times in ms per key (claim + judge + counts)\n")
    print("| mode | judgments | median | p95 | claim | judge | counts | first key |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    medians: dict[str, list[float]] = {}
    for mode in ("run", "dataset"):
        for n in args.sizes:
            root = base / f"{mode}-{n}"
            fill(root, mode, n, extra=args.keys + 200)
            t = time_keys(root, mode, args.keys)
            total = sorted(sum(k) for k in t)
            med = statistics.median(total)
            medians.setdefault(mode, []).append(med)
            parts = [statistics.median(k[i] for k in t) for i in range(3)]
            p95 = total[int(0.95 * (len(total) - 1))]
            print(f"| {mode} | {n:,} | {ms(med)} | {ms(p95)} | {ms(parts[0])} | {ms(parts[1])} | {ms(parts[2])} "
                  f"| {ms(sum(t[0]))} |", flush=True)
    shutil.rmtree(base, ignore_errors=True)
    print()
    for mode, m in medians.items():
        print(f"{mode}: median per key grows {max(m) / min(m):.2f}x from {args.sizes[0]:,} to {args.sizes[-1]:,} judgments")


if __name__ == "__main__":
    main()
