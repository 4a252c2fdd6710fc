"""The retention term (``retain_weight``): its loss against a naive reference, and M₀ in the methods that take it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from crossres.cli import main
from crossres.losses import RetentionLoss
from crossres.methods import Baseline, BatchCR, Octuplet, SiameseCR
from crossres.methods.base import load_method

from .conftest import TINY_DATA, TINY_TRAINER


def _naive_retention(reference: nn.Module, images: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """``1/B Σ_i (1 − <M₀(I_i), M(I_i)> / (‖M₀(I_i)‖ ‖M(I_i)‖))``, one face at a time."""
    terms = []
    for image, feature in zip(images, features, strict=True):
        target = reference(image[None])[0].detach()
        terms.append(1 - (target @ feature) / (target.norm() * feature.norm()))
    return torch.stack(terms).mean()


def test_retention_matches_the_naive_reference_and_only_the_features_get_gradients() -> None:
    torch.manual_seed(0)
    network, reference = nn.Sequential(nn.Flatten(), nn.Linear(12, 5)), nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    reference.requires_grad_(False)
    loss = RetentionLoss(reference)
    images = torch.randn(4, 3, 2, 2)
    features = network(images)
    value = loss(images, features)
    assert torch.allclose(value, _naive_retention(reference, images, features), atol=1e-6)
    value.backward()
    assert network[1].weight.grad is not None and reference[1].weight.grad is None

    loss.start_from(network)  # M₀ = M: no distance left, whatever the faces
    assert torch.equal(reference[1].weight, network[1].weight)
    assert loss(images, network(images)).abs().item() < 1e-6


@pytest.mark.parametrize("model_class", [Baseline, BatchCR, SiameseCR, Octuplet])
def test_retain_weight_zero_builds_no_copy_and_negative_is_refused(model_class: type) -> None:
    small = {"backbone": "iresnet18", "backbone_kwargs": {"width": 8}, "embedding_size": 16, "image_size": (32, 32)}
    extra = {"recognizer_weights": None} if model_class is Octuplet else {}
    assert model_class(**small, **extra).retention is None
    assert isinstance(model_class(**small, **extra, retain_weight=1.0).retention, RetentionLoss)
    with pytest.raises(ValueError, match="retain_weight"):
        model_class(**small, **extra, retain_weight=-1.0)


def test_baseline_on_lr_faces_only_refuses_retention() -> None:
    with pytest.raises(ValueError, match="retain_weight.*train_on"):
        Baseline(train_on="lr", retain_weight=1.0, backbone_kwargs={"width": 8}, image_size=(32, 32))


def _fit(tmp_path: Path, name: str, *extra: str) -> Path:
    model = ["--model=SiameseCR", "--model.mode=st", "--model.backbone=iresnet18", "--model.backbone_kwargs={width: 8}",
             "--model.embedding_size=16", "--model.lr=0.05", "--model.retain_weight=10"]  # fmt: skip
    trainer = [a for a in TINY_TRAINER if not a.startswith("--trainer.callbacks")]
    main(["fit", *TINY_DATA, "--data.degradation.lr_sizes=[8]", *trainer, *model, f"--runs_dir={tmp_path}",
          f"--name={name}", "--seed_everything=0", *extra])  # fmt: skip
    return tmp_path / name / "checkpoints" / "last.ckpt"


def test_m0_is_the_recogniser_as_the_fit_started_and_a_resumed_fit_keeps_it(tmp_path: Path) -> None:
    """M₀ holds the backbone's weights of the start of the fit, not the trained ones; resuming for another epoch
    restores that M₀ from the checkpoint instead of copying the trained backbone into it."""
    checkpoint = _fit(tmp_path, "retain")
    model = load_method(checkpoint)
    trained, kept = model.backbone.state_dict(), model.retention.reference.state_dict()
    assert any(not torch.equal(trained[k], kept[k]) for k in trained)  # the backbone moved, M₀ did not follow

    resumed = _fit(tmp_path, "retain", "--trainer.max_epochs=2", f"--ckpt_path={checkpoint}")
    again = load_method(resumed)
    assert all(torch.equal(again.retention.reference.state_dict()[k], kept[k]) for k in kept)
    assert any(not torch.equal(again.backbone.state_dict()[k], trained[k]) for k in trained)


def test_m0_copies_the_starting_weights(tmp_path: Path) -> None:
    import lightning.pytorch as pl

    from crossres.data import FaceDataModule

    dm = FaceDataModule(
        image_size=(32, 32),
        synthetic={"num_identities": 6, "images_per_identity": 4, "pairs": 40},
        protocols=[8],
        degradation={"lr_sizes": [8], "lr_prob": 1.0},
        batch_size=8,
        num_workers=0,
    )
    model = SiameseCR(
        mode="st", backbone="iresnet18", backbone_kwargs={"width": 8}, embedding_size=16, lr=0.05, num_classes=6,
        image_size=(32, 32), retain_weight=10.0,
    )  # fmt: skip
    start = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, datamodule=dm)
    kept = model.retention.reference.state_dict()
    assert all(torch.equal(kept[k], start[k]) for k in start)
    assert any(not torch.equal(model.backbone.state_dict()[k], start[k]) for k in start)


def _batch(model_class: type) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    hr = torch.rand(4, 3, 32, 32, generator=generator)
    lr = torch.rand(4, 3, 32, 32, generator=generator)
    labels = torch.tensor([0, 0, 1, 1])
    if model_class is BatchCR:  # the mixed batch: faces 0 and 2 left at HR
        lr[[0, 2]] = hr[[0, 2]]
        return {"hr": hr, "lr": lr, "label": labels, "lr_size": torch.tensor([[32, 32], [8, 8], [32, 32], [8, 8]])}
    return {"hr": hr, "lr": lr, "label": labels, "lr_size": torch.tensor([[8, 8]] * 4)}


@pytest.mark.parametrize("model_class", [Baseline, BatchCR, SiameseCR, Octuplet])
def test_each_method_adds_the_weighted_retention_of_its_hr_faces(model_class: type) -> None:
    torch.manual_seed(0)
    extra = {"recognizer_weights": None} if model_class is Octuplet else {}
    model = model_class(
        backbone="iresnet18", backbone_kwargs={"width": 8}, embedding_size=16, image_size=(32, 32), num_classes=2,
        retain_weight=2.0, **extra,
    )  # fmt: skip
    model.eval()  # no dropout; the same embeddings in both passes
    batch = _batch(model_class)
    with torch.no_grad():
        with_term = model.training_step(batch, 0)
        retention = model.retention
        model.retention = None
        without = model.training_step(batch, 0)
        model.retention = retention
        hr = batch["hr"][[0, 2]] if model_class is BatchCR else batch["hr"]
        expected = _naive_retention(retention.reference, hr, model.backbone(hr))
    assert expected > 0.01
    assert torch.allclose(with_term - without, 2.0 * expected, atol=1e-5)
