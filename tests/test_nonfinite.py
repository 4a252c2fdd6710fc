from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from crossres.data.datamodule import FaceDataModule
from crossres.methods import Baseline, NonFiniteLossError


def _setup(nonfinite: str) -> tuple[Baseline, FaceDataModule]:
    dm = FaceDataModule(
        image_size=(32, 32),
        num_identities=4,
        images_per_identity=4,
        synthetic_pairs=20,
        protocols=[8],
        lr_sizes=[8],
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
