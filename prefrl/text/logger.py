"""Metrics of text runs: ``progress.csv`` (the core ``ProgressLog``) and optional TensorBoard."""

from __future__ import annotations

import math
from pathlib import Path

from prefrl.core.rundir import ProgressLog, RunDir


class RunLogger:
    """Writes slash-path metrics to the run directory's ``progress.csv`` and ``tb/`` (TensorBoard).

    The CSV is the core ``ProgressLog`` (columns: ``step``, then every key logged so far). A
    text run starts afresh: an older ``progress.csv`` in the directory is replaced.

    Args:
        run_dir: the run directory (created if missing).
        tensorboard: also write TensorBoard scalars to ``run_dir/tb``.
    """

    def __init__(self, run_dir: str | Path, tensorboard: bool = True):
        self.run = RunDir(run_dir)
        self.run.mkdir()
        self.run.progress.unlink(missing_ok=True)
        self.progress = ProgressLog(self.run.progress, ["step"])
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.run.tb))
            except ImportError:  # tensorboard is a core dependency; tolerate its absence anyway
                self.writer = None

    @property
    def path(self) -> Path:
        return self.run.progress

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        self.log(step, metrics)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.progress.write({"step": step, **{k: float(v) for k, v in metrics.items()}})
        if self.writer is not None:
            for k, v in metrics.items():
                if not math.isnan(float(v)):
                    self.writer.add_scalar(k, float(v), step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None
