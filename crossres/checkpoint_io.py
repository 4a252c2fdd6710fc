"""Checkpoints that are never half-written, and a ``last.ckpt`` fresh enough to resume a run killed mid-epoch."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from crossres.errors import InputError

__all__ = ["AtomicCheckpointIO", "ResumableCheckpoint", "unreadable_checkpoint"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write a checkpoint to a temporary file beside it, flush it to disk, then rename it into place.

    A crash, a SIGKILL or a full disk while saving leaves the previous ``last.ckpt`` intact instead of a
    truncated file that ``--ckpt_path last`` would pick up. The temporary file a killed writer left behind
    (``.last.ckpt.<pid>.tmp``) is removed by the next successful save of the same checkpoint once no process of that
    pid runs on this machine. Remote paths (``s3://`` …) fall back to Lightning's writer.

    A full disk ends the run with :class:`~crossres.errors.InputError` naming the checkpoint; a checkpoint that does
    not load (truncated, random bytes) with one naming the file.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with tmp.open("wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except (OSError, RuntimeError) as err:
            if not _write_failed(err):
                raise
            raise InputError(_write_failure(path, err)) from err
        finally:
            tmp.unlink(missing_ok=True)
        _remove_stale_temporaries(path)

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None) -> Any:
        try:
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        except FileNotFoundError:
            raise
        except Exception as err:  # torch.load of a truncated file or random bytes: unpickling / zip errors
            raise InputError(unreadable_checkpoint(path, err)) from err


def unreadable_checkpoint(path: Any, err: BaseException) -> str:
    """The message for a checkpoint file that does not load: it names the file and what to do."""
    text = str(err).strip()
    if "WeightsUnpickler error:" in text:  # torch's advice around it (weights_only=False) does not apply here
        text = text.split("WeightsUnpickler error:", 1)[1].strip()
    reason = text.splitlines()[0][:200] if text else type(err).__name__
    return (
        f"checkpoint {path} does not load ({type(err).__name__}: {reason}); it is truncated or not a checkpoint. "
        "Use another one (a run's checkpoints/last.ckpt is written atomically)"
    )


_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def _write_failed(err: BaseException) -> bool:
    """A full disk as ``torch.save`` reports it: an OSError, or its C++ writer's RuntimeError."""
    if isinstance(err, OSError):
        return err.errno in _WRITE_ERRNOS
    return "PytorchStreamWriter failed writing file" in str(err) or "file write failed" in str(err)


def _write_failure(path: Path, err: BaseException) -> str:
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.0f} MiB free there"
    except OSError:
        free = "free space unknown"
    reason = os.strerror(err.errno) if isinstance(err, OSError) and err.errno else "No space left on device"
    return (
        f"cannot write checkpoint {path}: {reason} ({free}). Free some space, or write runs elsewhere with "
        "--runs_dir; resume with --ckpt_path last"
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove_stale_temporaries(path: Path) -> None:
    prefix = f".{path.name}."
    for stale in path.parent.glob(f"{prefix}*.tmp"):
        pid = stale.name[len(prefix) : -len(".tmp")]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            stale.unlink(missing_ok=True)


class ResumableCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` that also refreshes ``last.ckpt`` every ``last_every_n_batches`` batches.

    The monitored (top-k) checkpoints stay where Lightning puts them (after validation), and ``last.ckpt`` is
    refreshed then too, also when the monitored metric did not improve (Lightning 2.6 skips it then); in between,
    ``last.ckpt`` is rewritten every ``last_every_n_batches`` training batches, so a run killed mid-epoch (SIGKILL,
    a preempted node) loses at most that many batches: ``crossres fit ... --ckpt_path last`` resumes it, with the
    data module's position in the epoch, and on CPU with ``trainer.deterministic: true`` ends with the weights of an
    uninterrupted run. The count is of training batches, not optimizer steps (a minimax method steps several
    optimizers per batch). It needs ``save_last``; the CLI installs it as ``--checkpoint.*``.

    Args:
        last_every_n_batches: refresh ``last.ckpt`` every this many training batches (0: only after validation,
            or at epoch ends without validation).
        **kwargs: arguments of :class:`lightning.pytorch.callbacks.ModelCheckpoint`.

    Raises:
        ValueError: for a negative ``last_every_n_batches``, or a positive one without ``save_last``.
    """

    def __init__(self, last_every_n_batches: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if last_every_n_batches < 0:
            raise ValueError(f"checkpoint.last_every_n_batches must be >= 0, got {last_every_n_batches}")
        if last_every_n_batches and not self.save_last:
            raise ValueError("checkpoint.last_every_n_batches needs checkpoint.save_last: true")
        self.last_every_n_batches = last_every_n_batches

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        n = self.last_every_n_batches
        batches = trainer.fit_loop.epoch_loop.total_batch_idx + 1  # batches trained so far, every epoch
        if n < 1 or batches % n or trainer.sanity_checking or bool(getattr(trainer, "fast_dev_run", False)):
            return
        if self._last_global_step_saved == trainer.global_step:
            return  # Lightning's own save of this step already wrote last.ckpt
        # Keep Lightning's bookkeeping as if this save had not happened: a top-k save at the same step (the epoch's
        # last batch, before validation) must not be skipped because last.ckpt was refreshed here.
        saved_step = self._last_global_step_saved
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        self._last_global_step_saved = saved_step

    # Lightning 2.6 refreshes last.ckpt only when it also saves a top-k checkpoint: after an epoch whose metric does
    # not improve, last.ckpt would still hold an older epoch. Here it is refreshed whenever Lightning checks.
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def _refresh_last(self, trainer: pl.Trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
