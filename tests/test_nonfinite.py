from __future__ import annotations

import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from crossres.checkpoint_io import ResumableCheckpoint
from crossres.data.datamodule import FaceDataModule
from crossres.data.options import DegradationOptions, SyntheticOptions
from crossres.methods import Baseline, NonFiniteLossError


def _setup(nonfinite: str) -> tuple[Baseline, FaceDataModule]:
    dm = FaceDataModule(
        image_size=(32, 32),
        synthetic=SyntheticOptions(num_identities=4, images_per_identity=4, pairs=20),
        protocols=[8],
        degradation=DegradationOptions(lr_sizes=[8]),
        batch_size=8,
        num_workers=0,
    )
    model = Baseline(
        num_classes=4, image_size=(32, 32), backbone_kwargs={"width": 8}, embedding_size=16, nonfinite=nonfinite
    )  # type: ignore[arg-type]
    original = model.head.forward

    def poisoned(embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        logits = original(embeddings, labels)
        return logits * float("nan") if model.global_step == 1 else logits

    model.head.forward = poisoned  # type: ignore[method-assign]
    return model, dm


def _trainer(tmp_path: Path) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=0,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )


def test_nonfinite_loss_stops_naming_loss_and_step(tmp_path: Path) -> None:
    model, dm = _setup("stop")
    with pytest.raises(NonFiniteLossError, match=r"'cross_entropy'.*global step 1"):
        _trainer(tmp_path).fit(model, dm)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_nonfinite_loss_skip_keeps_weights_finite(tmp_path: Path) -> None:
    model, dm = _setup("skip")
    _trainer(tmp_path).fit(model, dm)
    assert model.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_divergence_stops_before_a_checkpoint_keeps_nonfinite_weights(tmp_path: Path) -> None:
    """lr 1e6: the weights explode and BatchNorm's running variances overflow; no checkpoint may keep them."""
    model, dm = _setup("skip")  # skipping cannot repair statistics the forward pass has already overflowed
    model.hparams["lr"] = 1e6
    model.head.forward = type(model.head).forward.__get__(model.head)  # type: ignore[method-assign]  # not poisoned
    checkpoint = ResumableCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0, last_every_n_batches=1)
    trainer = pl.Trainer(
        max_epochs=3, limit_train_batches=3, limit_val_batches=0, accelerator="cpu", logger=False,
        enable_progress_bar=False, callbacks=[checkpoint], default_root_dir=tmp_path,
    )  # fmt: skip
    with pytest.raises(NonFiniteLossError, match="diverged") as error:
        trainer.fit(model, dm)
    assert "no weights were updated" not in str(error.value)
    for path in tmp_path.glob("*.ckpt"):
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        assert not bad, f"{path.name} keeps non-finite {bad[:3]}"


class _WithFrozenTeacher(Baseline):
    """A Baseline with a frozen, eval-mode network beside it, as RIM's teacher or GuidedCNN's guide."""

    def build(self) -> None:
        super().build()
        self.teacher = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4)).requires_grad_(False)
        self.teacher.eval()

    def train(self, mode: bool = True) -> _WithFrozenTeacher:
        super().train(mode)
        self.teacher.eval()
        return self


def _eval_mode_warnings(model: Baseline, dm: FaceDataModule, tmp_path: Path) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer(tmp_path).fit(model, dm)
    return [str(w.message) for w in caught if "in eval mode at the start of training" in str(w.message)]


def test_eval_mode_warning_is_silenced_only_for_frozen_networks(tmp_path: Path) -> None:
    _, dm = _setup("stop")
    kwargs = {"num_classes": 4, "image_size": (32, 32), "backbone_kwargs": {"width": 8}, "embedding_size": 16}
    assert _eval_mode_warnings(_WithFrozenTeacher(**kwargs), dm, tmp_path) == []
    model = _WithFrozenTeacher(**kwargs)
    model.teacher.requires_grad_(True)  # in eval mode but trained: Lightning's warning must stay
    assert len(_eval_mode_warnings(model, dm, tmp_path)) == 1
