"""Command-line entry points of the human side: ``prefrl label`` and ``prefrl prefs stats``."""

from __future__ import annotations

import getpass
import json
from dataclasses import dataclass, field
from pathlib import Path

import tyro

from prefrl.human.viewer import ViewerConfig
from prefrl.core.store import STORE_FILE, PreferenceStore
from prefrl.core.types import PrefrlError


def _default_annotator() -> str:
    try:
        return getpass.getuser() or "human"
    except Exception:  # no user name in this environment (some containers)
        return "human"


def _one_source(run_dir: Path | None, dataset: Path | None) -> None:
    if (run_dir is None) == (dataset is None):
        raise PrefrlError("give exactly one of `--run-dir D` (a training run) or `--dataset DIR` (an exported dataset)")


def _check_run_dir(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise PrefrlError(f"{run_dir}: no such run directory")
    if not (run_dir / STORE_FILE).is_file():
        raise PrefrlError(
            f"{run_dir}: not a prefrl run directory (no {STORE_FILE}); start one with "
            f"`prefrl train --task T --oracle human --run-dir {run_dir}`"
        )


@dataclass
class LabelCommand:
    """Label pairs of clips or text completions by hand in a pygame window (a run's pending pairs, or a dataset)."""

    run_dir: Path | None = None
    """Run directory of a `prefrl train --oracle human` run (its pending pairs are shown)."""
    dataset: Path | None = None
    """Or: a preference dataset directory to label offline: clips.npz (with `frames`) + comparisons.jsonl, or a
    preference store of text pairs (prefs.sqlite, e.g. where `prefrl text label` wrote)."""
    out: Path | None = None
    """With --dataset: the store the judgments go to (default DIR/labels)."""
    annotator: str | None = None
    """Your name, saved with every judgment (default: the login name)."""
    viewer: tyro.conf.OmitArgPrefixes[ViewerConfig] = field(default_factory=ViewerConfig)

    def run(self) -> dict:
        from prefrl.human.dataset import open_dataset_store
        from prefrl.human.viewer import Viewer

        _one_source(self.run_dir, self.dataset)
        if self.out is not None and self.dataset is None:
            raise PrefrlError("`--out` goes with `--dataset` (a run's judgments go to its own store)")
        annotator = self.annotator if self.annotator is not None else _default_annotator()
        if not annotator.strip() or "\n" in annotator:
            raise PrefrlError(f"`--annotator` must be a non-empty single-line name, got {annotator!r}")
        if self.run_dir is not None:
            _check_run_dir(self.run_dir)
            root, shared = self.run_dir, False
        else:
            root, shared = open_dataset_store(self.dataset, self.out), True  # type: ignore[arg-type]
        viewer = Viewer(root, annotator, shared=shared, cfg=self.viewer)
        try:
            counts = viewer.run()
        finally:
            viewer.close()
        where = f"{root / STORE_FILE}"
        print(f"{annotator}: {counts['mine']} judgments saved in {where} ({counts['open']} pairs left)")
        return counts


@dataclass
class PrefsStats:
    """Per-annotator judgment counts and agreement between annotators on shared pairs."""

    run_dir: Path | None = None
    """Run directory (prefs.sqlite)."""
    dataset: Path | None = None
    """Or: a dataset labeled with `prefrl label --dataset` (reads DIR/labels, or --out)."""
    out: Path | None = None
    """With --dataset: the store its judgments went to (default DIR/labels)."""
    json: bool = False
    """Print the statistics as JSON."""

    def run(self) -> dict:
        from prefrl.core.dataset import COMPARISONS_FILE, load_dataset
        from prefrl.human.dataset import dataset_store_dir, is_text_store
        from prefrl.human.stats import dataset_stats, format_stats, store_stats

        _one_source(self.run_dir, self.dataset)
        note = None
        if self.run_dir is not None:
            _check_run_dir(self.run_dir)
            root = self.run_dir
        else:
            root = dataset_store_dir(self.dataset, self.out)  # type: ignore[arg-type]
            if not (root / STORE_FILE).exists() and is_text_store(self.dataset):  # type: ignore[arg-type]
                if not self.json:
                    print(f"no hand labels yet (`prefrl label --dataset {self.dataset}`): the store in {self.dataset}\n")
                root = self.dataset  # type: ignore[assignment]
            elif not (root / STORE_FILE).exists():  # no hand labels yet: the dataset's own
                _, _, records = load_dataset(self.dataset)  # type: ignore[arg-type]
                stats = dataset_stats(records)
                note = (f"labels in {self.dataset / COMPARISONS_FILE} (no hand labels yet: "  # type: ignore[operator]
                        f"`prefrl label --dataset {self.dataset}`)")
                stats["labels_from"] = str(self.dataset / COMPARISONS_FILE)  # type: ignore[operator]
                print(json.dumps(stats, indent=2) if self.json else f"{note}\n\n{format_stats(stats)}")
                return stats
        with PreferenceStore(root, create=False, readonly=True) as store:  # stats never need write access
            stats = store_stats(store)
        print(json.dumps(stats, indent=2) if self.json else format_stats(stats))
        return stats


COMMANDS: dict[str, type] = {"label": LabelCommand, "prefs stats": PrefsStats}
