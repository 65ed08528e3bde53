"""Labelling an exported preference dataset by hand, without a training run.

``prefrl label --dataset DIR`` keeps its judgments in a store of their own, by default
``DIR/labels/`` (``--out`` elsewhere), so the dataset itself is never modified:

- on first use the dataset's clips (with their frames) are copied into that store, each
  distinct pair of ``comparisons.jsonl`` becomes one query (file order), and the
  dataset's own labels are imported as judgments (annotator: the line's ``annotator``,
  else its ``source``, else ``dataset``), so ``prefrl prefs stats`` can compare people
  with them;
- every annotator is shown every pair once (``shared`` queries): several people can
  label the same dataset, one after another or at once;
- ``prefrl prefs export --run-dir DIR/labels --out NEW`` turns the result back into a
  dataset (store clip ids k+1 are dataset clip index k).

A dataset of text pairs is a directory holding a preference store of text items, e.g. where
``prefrl text label`` (or ``prefrl text judge``) wrote: its judged text items (prompt and
completion, with the oracle's score) are copied the same way, each distinct judged or
pending pair becomes one query, and its judgments are imported under their annotator
(else their source, e.g. ``vader/synthetic`` or ``ai:MODEL``). The viewer shows each pair's
prompt and its two completions; ``prefrl text reward DIR/labels`` trains on the result.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from prefrl.core.dataset import load_dataset
from prefrl.core.store import STORE_FILE, PreferenceStore
from prefrl.core.types import PrefrlError


def dataset_store_dir(dataset: Path, out: Path | None = None) -> Path:
    """Where the judgments on ``dataset`` live: ``out``, else ``dataset/labels``."""
    return Path(out) if out is not None else Path(dataset) / "labels"


def open_dataset_store(dataset: str | Path, out: str | Path | None = None) -> Path:
    """The store directory of hand labels on ``dataset``, importing the dataset on first use.

    Raises:
        PrefrlError: the dataset is invalid, has no frames, or ``out`` holds labels of
            another dataset or an interrupted import.
    """
    dataset = Path(dataset)
    root = dataset_store_dir(dataset, None if out is None else Path(out))
    src = str(dataset.resolve())
    if (root / STORE_FILE).exists():
        with PreferenceStore(root, create=False) as store:
            if store.get_meta("dataset") != src:
                raise PrefrlError(
                    f"{root}: holds labels of `{store.get_meta('dataset')}`, not of `{src}`; pick another `--out`"
                )
            if store.get_meta("dataset_imported") is not True:
                raise PrefrlError(f"{root}: the import of {dataset} was interrupted; delete {root} and run again")
        return root
    if is_text_store(dataset):
        return _import_text_store(dataset, root, src)
    clips, _, records = load_dataset(dataset)
    if clips.frames is None:
        raise PrefrlError(
            f"{dataset / 'clips.npz'}: no `frames` array, so there is nothing to show; export the dataset from a "
            "run whose clips kept their frames (`prefrl train --oracle human`, or `--keep-frames`)"
        )
    with PreferenceStore(root) as store:
        store.set_meta("dataset", src)
        ids = np.array(store.add_clips(clips, keep_frames=True))  # (N,) store id of dataset clip k
        groups: dict[tuple[str, str], list[tuple[int, int, float]]] = defaultdict(list)
        seen: dict[tuple[int, int], tuple[int, int]] = {}
        for rec in records:
            a, b = int(ids[rec["left"]]), int(ids[rec["right"]])
            source = str(rec.get("source") or "dataset")
            groups[(source, str(rec.get("annotator") or source))].append((a, b, float(rec["label"])))
            seen.setdefault((min(a, b), max(a, b)), (a, b))
        for (source, annotator), rows in groups.items():
            arr = np.array(rows)
            store.add_judgments(arr[:, :2].astype(np.int64), arr[:, 2], source=source, annotator=annotator)
        pairs = np.array(list(seen.values()), dtype=np.int64).reshape(-1, 2)
        store.add_queries(pairs, np.zeros(len(pairs)))
        store.set_meta("dataset_clips", len(clips))
        store.set_meta("mode", "dataset")
        store.set_meta("dataset_imported", True)
    return root


def is_text_store(dataset: Path) -> bool:
    """Whether ``dataset`` is a directory holding a preference store (of text pairs) rather than clips.npz."""
    return (Path(dataset) / STORE_FILE).is_file() and not (Path(dataset) / "clips.npz").exists()


def _import_text_store(dataset: Path, root: Path, src: str) -> Path:
    """Copy the text pairs and judgments of the store in ``dataset`` into a new store at ``root``."""
    with PreferenceStore(dataset, create=False, readonly=True) as source:
        kind = source.judged_kind(labeled_only=False)
        if kind not in ("texts", None):
            raise PrefrlError(f"{dataset}: its judgments compare {kind}; a dataset of clips is a directory with clips.npz "
                              "(`prefrl prefs export`)")
        js = source.judgments()
        pairs = [(j.left, j.right) for j in js] + [(q.left, q.right) for q in source.pending_queries()]
        ids = sorted({i for lr in pairs for i in lr})
        if not ids:
            raise PrefrlError(f"{dataset / STORE_FILE}: holds no text pairs to label (label some with `prefrl text label`)")
        texts = source.load_texts(ids)
        scores = source.text_scores(ids)
    with PreferenceStore(root) as store:
        store.set_meta("dataset", src)
        new = dict(zip(ids, store.add_texts([p for p, _ in texts], [c for _, c in texts], scores)))
        groups: dict[tuple[str, str], list[tuple[int, int, float]]] = defaultdict(list)
        for j in js:
            groups[(j.source, j.annotator or j.source)].append((new[j.left], new[j.right], np.nan if j.label is None else j.label))
        for (source_name, annotator), rows in groups.items():
            arr = np.array(rows)
            store.add_judgments(arr[:, :2].astype(np.int64), arr[:, 2], source=source_name, annotator=annotator)
        seen: dict[tuple[int, int], tuple[int, int]] = {}
        for a, b in pairs:
            seen.setdefault((min(a, b), max(a, b)), (new[a], new[b]))
        queries = np.array(list(seen.values()), dtype=np.int64).reshape(-1, 2)
        store.add_queries(queries, np.zeros(len(queries)))
        store.set_meta("dataset_clips", len(ids))
        store.set_meta("dataset_kind", "texts")
        store.set_meta("mode", "dataset")
        store.set_meta("dataset_imported", True)
    return root
