"""Faults: a run killed mid-epoch resumes from ``last.ckpt`` and ends with the weights of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from crossres.checkpoint_io import ResumableCheckpoint
from crossres.data.datamodule import FaceDataModule
from crossres.data.options import DegradationOptions, SyntheticOptions
from crossres.methods import Baseline

from .conftest import REPO

BATCHES = 3  # per epoch (limit_train_batches); 24 faces / batch 4 would give 6


def _datamodule(**kwargs: Any) -> FaceDataModule:
    options: dict[str, Any] = {
        "image_size": (32, 32), "synthetic": SyntheticOptions(num_identities=6, images_per_identity=4, pairs=20),
        "protocols": [8], "batch_size": 4, "eval_batch_size": 20, "num_workers": 0,
        # the camera corruptions draw from the degradation's device generator too
        "degradation": DegradationOptions(lr_sizes=[4, 8], blur_prob=0.5),
    }  # fmt: skip
    options.update(kwargs)
    return FaceDataModule(**options)


def _model() -> Baseline:
    pl.seed_everything(0)
    # dropout draws from the global RNG in training_step: the method's checkpoint must carry it.
    kwargs = {"width": 8, "dropout": 0.2}
    return Baseline(num_classes=6, image_size=(32, 32), backbone_kwargs=kwargs, embedding_size=16, lr=0.05)


class _Record(Callback):
    """Remembers what every training step saw: epoch, labels, and checksums of the degraded batch."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, list[int], float, float, list[int]]] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        self.seen.append(
            (
                trainer.current_epoch,
                batch["label"].tolist(),
                float(batch["hr"].double().sum()),
                float(batch["lr"].double().sum()),
                batch["lr_size"][:, 0].tolist(),
            )
        )


def _fit(tmp_path: Path, ckpt_path: Path | None = None, **trainer_kwargs: Any) -> tuple[Baseline, _Record]:
    model, record = _model(), _Record()
    options: dict[str, Any] = {
        "accelerator": "cpu", "max_epochs": 2, "limit_train_batches": BATCHES, "limit_val_batches": 0,
        "logger": False, "enable_progress_bar": False, "enable_model_summary": False, "deterministic": True,
        "default_root_dir": tmp_path,
    }  # fmt: skip
    options.update(trainer_kwargs)
    options["callbacks"] = [record, *options.get("callbacks", [])]
    trainer = pl.Trainer(**options)
    trainer.fit(model, datamodule=_datamodule(), ckpt_path=ckpt_path)
    return model, record


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


# ----------------------------------------------------------------------------------------------- in-process
@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Baseline, _Record, Path]:
    """Two epochs of three batches, a checkpoint after every batch (step=1 ... step=6)."""
    root = tmp_path_factory.mktemp("uninterrupted")
    every_step = ModelCheckpoint(dirpath=root, filename="{step}", every_n_train_steps=1, save_top_k=-1)
    model, record = _fit(root, enable_checkpointing=True, callbacks=[every_step])
    return model, record, root


@pytest.mark.parametrize("step", [2, 3, 4])  # mid-epoch 0; the epoch's last batch; mid-epoch 1
def test_resume_from_a_step_checkpoint_equals_uninterrupted(
    uninterrupted: tuple[Baseline, _Record, Path], tmp_path: Path, step: int
) -> None:
    full, full_record, root = uninterrupted
    checkpoint = torch.load(root / f"step={step}.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["FaceDataModule"]["train_batches"] == step % BATCHES
    assert "crossres_rng" in checkpoint
    resumed, record = _fit(tmp_path, ckpt_path=root / f"step={step}.ckpt", enable_checkpointing=False)
    assert record.seen == full_record.seen[step:]  # the same batches, augmentations and LR sizes
    _assert_same_weights(resumed, full)


def test_datamodule_state_round_trip_gives_the_same_next_batch() -> None:
    dm = _datamodule(num_workers=1)
    dm.setup("fit")
    batches = iter(dm.train_dataloader())
    for _ in range(2):
        dm.on_after_batch_transfer(next(batches), 0)
    state = dm.state_dict()
    assert state == {"train_epoch": 0, "train_batches": 2, "world_size": 1, "batch_size": 4}
    expected = dm.on_after_batch_transfer(next(batches), 0)

    other = _datamodule(num_workers=1)
    other.load_state_dict(state)
    other.setup("fit")
    got = other.on_after_batch_transfer(next(iter(other.train_dataloader())), 0)
    for key in ("label", "hr", "lr", "lr_size"):
        assert torch.equal(got[key], expected[key]), key


def test_last_checkpoint_is_refreshed_every_n_batches(tmp_path: Path) -> None:
    saved: list[int] = []

    class _Steps(Callback):
        def on_save_checkpoint(self, trainer: pl.Trainer, module: pl.LightningModule, ckpt: dict[str, Any]) -> None:
            saved.append(trainer.global_step)

    checkpoint = ResumableCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0, last_every_n_batches=2)
    _fit(tmp_path, max_epochs=1, limit_train_batches=5, enable_checkpointing=True, callbacks=[checkpoint, _Steps()])
    assert saved[:2] == [2, 4]
    assert (tmp_path / "last.ckpt").is_file()
    with pytest.raises(ValueError, match="save_last"):
        ResumableCheckpoint(last_every_n_batches=2)


def test_last_checkpoint_follows_epochs_whose_metric_does_not_improve(tmp_path: Path) -> None:
    # monitor="epoch", mode="min": only epoch 0 is ever a top-1 checkpoint; Lightning alone would leave last.ckpt there.
    checkpoint = ResumableCheckpoint(dirpath=tmp_path, monitor="epoch", mode="min", save_top_k=1, save_last=True)
    _fit(tmp_path, max_epochs=3, limit_val_batches=1, enable_checkpointing=True, callbacks=[checkpoint])
    last = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (2, 3 * BATCHES)
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["epoch=0-step=3.ckpt", "last.ckpt"]


# ------------------------------------------------------------------------------------------- the real CLI
TINY = [
    "--data.image_size=[32, 32]", "--data.synthetic.num_identities=6", "--data.synthetic.images_per_identity=4",
    "--data.synthetic.pairs=20", "--data.protocols=[8]", "--data.degradation.lr_sizes=[4, 8]", "--data.batch_size=4",
    "--data.eval_batch_size=20", "--data.num_workers=0", "--data.degradation.blur_prob=0.5",
    "--model=Baseline", "--model.backbone_kwargs={width: 8, dropout: 0.2}", "--model.embedding_size=16",
    "--model.lr=0.05", "--trainer.accelerator=cpu", "--trainer.deterministic=true", "--trainer.max_epochs=2",
    "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.logger=false",
    "--trainer.num_sanity_val_steps=0", "--checkpoint.last_every_n_batches=1", "--checkpoint.save_top_k=-1",
]  # fmt: skip
# 6 batches per epoch; validation (20 pairs) after each epoch writes an epoch checkpoint.
KILL_AT = 9  # SIGKILL at the start of the 10th batch: epoch 1, batch 3 of 6, last.ckpt from batch 9


class KillAt(Callback):
    """SIGKILLs its own process at the start of training batch ``batch`` (counted over epochs, from 0)."""

    def __init__(self, batch: int) -> None:
        self.batch = batch

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        if trainer.fit_loop.epoch_loop.total_batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


class BatchLog(Callback):
    """Appends the index (counted over epochs) of every training batch it sees to ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        with open(self.path, "a") as f:
            f.write(f"{trainer.fit_loop.epoch_loop.total_batch_idx}\n")


def _crossres(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crossres", "fit", *TINY, *args],
        capture_output=True, text=True, cwd=REPO, timeout=600, env=os.environ | {"PYTHONHASHSEED": "0"},
    )  # fmt: skip


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    runs = f"--runs_dir={tmp_path}"
    result = _crossres(runs, "--name=full")
    assert result.returncode == 0, result.stderr[-3000:]

    killer = ["--trainer.callbacks+=tests.test_faults.KillAt", f"--trainer.callbacks.batch={KILL_AT}"]
    result = _crossres(runs, "--name=killed", *killer)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    checkpoints = tmp_path / "killed" / "checkpoints"
    earlier = sorted(p.name for p in checkpoints.glob("*.ckpt"))
    assert "last.ckpt" in earlier and any(name.startswith("epoch000") for name in earlier), earlier
    for path in checkpoints.glob("*.ckpt"):  # nothing truncated, everything loads
        torch.load(path, map_location="cpu", weights_only=True)
    last = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)
    assert (last["epoch"], last["FaceDataModule"]["train_batches"]) == (1, KILL_AT - 6)  # mid-epoch

    log = tmp_path / "resumed_batches.txt"
    result = _crossres(
        runs, "--name=killed", "--ckpt_path=last", "--trainer.callbacks+=tests.test_faults.BatchLog",
        f"--trainer.callbacks.path={log}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert log.read_text().split() == [str(i) for i in range(KILL_AT, 12)]  # resumed, not started afresh
    assert set(earlier) <= {p.name for p in checkpoints.glob("*.ckpt")}  # the resumed run kept them all
    full, resumed = _weights(tmp_path / "full" / "checkpoints" / "last.ckpt"), _weights(checkpoints / "last.ckpt")
    assert full.keys() == resumed.keys()
    for key in full:
        assert torch.equal(full[key], resumed[key]), key


# ---------------------------------------------------------------------------------------- a full disk
def test_full_disk_names_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from crossres.cli import main

    def full_disk(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:  # torch.save's C++ writer, disk full
        f.write(b"PK")
        raise RuntimeError(
            "[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file data/0: file write "
            "failed"
        )

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *TINY, f"--runs_dir={tmp_path}", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err[-3000:]
    last = tmp_path / "baseline" / "checkpoints" / "last.ckpt"
    assert f"crossres fit: error: cannot write checkpoint {last}: No space left on device" in err
    assert not list(last.parent.glob(".*.tmp"))  # the half-written temporary file is gone
