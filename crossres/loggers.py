"""A CSV logger that keeps a resumed run's history instead of deleting its ``metrics.csv``."""

from __future__ import annotations

import csv
from typing import Any

from lightning.fabric.loggers.csv_logs import _ExperimentWriter
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

__all__ = ["RunCSVLogger"]


class _KeepingWriter(ExperimentWriter):
    """Lightning's CSV writer that keeps the rows of ``metrics.csv`` logged before ``keep_before_step``."""

    def __init__(self, log_dir: str, keep_before_step: int | None) -> None:
        self.keep_before_step = keep_before_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        if self.keep_before_step is None or not self._fs.isfile(self.metrics_file_path):
            super()._check_log_dir_exists()  # a new run: Lightning's behaviour (deletes a stray metrics.csv)
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            reader = csv.DictReader(file)
            keys = list(reader.fieldnames or [])
            # Rows logged after the checkpoint are logged again by the resumed run: drop them.
            rows = [row for row in reader if _step(row) < self.keep_before_step]
        with self._fs.open(self.metrics_file_path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = sorted(keys)


def _step(row: dict[str, Any]) -> float:
    try:
        return float(row.get("step") or 0)
    except ValueError:
        return 0.0


class RunCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger`` that continues ``metrics.csv`` when a run is resumed, and flushes at checkpoints.

    Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts, so a run resumed with
    ``--ckpt_path last`` would lose every step before the interruption. Here, when :meth:`keep_history` was called
    (the CLI does so when it resumes), the rows logged before the checkpoint's step are kept and the new rows are
    appended. Rows are also written out whenever a checkpoint is saved, so the file on disk covers every step that
    ``last.ckpt`` holds even after a ``kill -9``.

    Args:
        save_dir: directory that holds the runs.
        name: run name (a sub-directory of ``save_dir``).
        version: sub-directory of the run (``""``: the run directory itself).
        **kwargs: other arguments of :class:`lightning.pytorch.loggers.CSVLogger`.
    """

    def __init__(self, save_dir: str, name: str = "lightning_logs", version: str | int | None = None, **kwargs: Any):
        super().__init__(save_dir, name=name, version=version, **kwargs)
        self._keep_before_step: int | None = None

    def keep_history(self, before_step: int) -> None:
        """Keep the existing ``metrics.csv`` rows whose step is below ``before_step`` (call before logging)."""
        self._keep_before_step = before_step

    @property
    @rank_zero_experiment
    def experiment(self) -> _ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(self.log_dir, self._keep_before_step)
        return self._experiment

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        if self._experiment is not None:
            self.save()
