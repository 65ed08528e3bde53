"""Metrics of text runs: ``progress.csv`` (one row per step) and optional TensorBoard."""

from __future__ import annotations

import csv
import math
from pathlib import Path


class RunLogger:
    """Writes slash-path metrics to ``run_dir/progress.csv`` and ``run_dir/tb`` (TensorBoard).

    Columns are the union of all keys logged so far (the file is rewritten when a new key appears).
    """

    def __init__(self, run_dir: str | Path, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "progress.csv"
        self.rows: list[dict] = []
        self.keys: list[str] = ["step"]
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.run_dir / "tb"))
            except ImportError:  # tensorboard is a core dependency; tolerate its absence anyway
                self.writer = None

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        self.log(step, metrics)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        new = [k for k in row if k not in self.keys]
        self.rows.append(row)
        if new or len(self.rows) == 1:
            self.keys += new
            with open(self.path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=self.keys)
                w.writeheader()
                w.writerows(self.rows)
        else:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.keys).writerow(row)
        if self.writer is not None:
            for k, v in metrics.items():
                if not math.isnan(float(v)):
                    self.writer.add_scalar(k, float(v), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None
