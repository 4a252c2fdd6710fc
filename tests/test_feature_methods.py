"""BatchCR (BT-r, BT-M) and SiameseCR (ST, ST-M1, ST-M2) of Knoche et al. (004) through the real CLI."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from crossres.cli import main
from crossres.losses.distance import cosine_distance_loss
from crossres.methods.batch_cr import BatchCR
from crossres.methods.siamese_cr import SiameseCR

BACKBONE = ["--model.backbone=iresnet18", "--model.backbone_kwargs={width: 8}", "--model.embedding_size=32"]
BATCH_CR = ["--model=crossres.methods.batch_cr.BatchCR", *BACKBONE, "--model.lr=0.05"]
SIAMESE_CR = ["--model=crossres.methods.siamese_cr.SiameseCR", *BACKBONE, "--model.lr=0.05"]
TINY = {"backbone_kwargs": {"width": 8}, "embedding_size": 16, "image_size": (32, 32), "num_classes": 5}


def _runs(tiny_args: list[str]) -> Path:
    return Path(tiny_args[0].split("=", 1)[1])


def test_batch_cr_bt_m_fit_then_test(tiny_args: list[str]) -> None:
    # BT-M on 32 px faces: half of each batch degraded to a size drawn from {4, 8, 16, 32}.
    data = [
        "--data.degradation.lr_prob=0.5",
        "--data.degradation.lr_policy=choice",
        "--data.degradation.lr_sizes=[4, 8, 16, 32]",
    ]
    cli = main(["fit", *tiny_args, *BATCH_CR, *data, "--name=btm"])
    metrics = cli.trainer.callback_metrics
    assert {"train_loss", "train_loss_ce_hr", "train_loss_ce_lr", "train_lr_share"} <= set(metrics)
    ckpt = _runs(tiny_args) / "btm" / "checkpoints" / "last.ckpt"
    main(["test", *tiny_args, *BATCH_CR, *data, "--name=btm", f"--ckpt_path={ckpt}"])
    assert len(list((_runs(tiny_args) / "btm").glob("test-*/results_test.csv"))) == 1
    model = BatchCR.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    assert model.hparams["head"] == "arcface"


@pytest.mark.parametrize(
    "bad, match",
    [("--data.degradation.lr_prob=1.0", "lr_prob"), ("--data.degradation.lr_per=batch", "lr_per")],
)
def test_batch_cr_refuses_batches_that_do_not_mix(
    tiny_args: list[str], bad: str, match: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *tiny_args, *BATCH_CR, "--data.degradation.lr_prob=0.5", bad, "--name=nomix"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"data.degradation.{match}" in error and "BatchCR" in error


def test_batch_cr_loss_is_the_mixed_batch_cross_entropy() -> None:
    torch.manual_seed(0)
    model = BatchCR(**TINY)
    model.train()
    batch = {
        "hr": torch.rand(4, 3, 32, 32),
        "lr": torch.rand(4, 3, 32, 32),
        "lr_size": torch.tensor([[32, 32], [8, 8], [32, 32], [4, 4]]),
        "label": torch.tensor([0, 1, 2, 3]),
    }
    loss = model.training_step(batch, 0)
    with torch.no_grad():
        expected = F.cross_entropy(model.head(model.backbone(batch["lr"]), batch["label"]), batch["label"])
    assert loss is not None and torch.allclose(loss, expected, atol=1e-6)


@pytest.mark.parametrize(
    "mode, data",
    [
        ("st", ["--data.degradation.lr_policy=fixed", "--data.degradation.lr_sizes=[8]"]),
        ("st_m1", ["--data.degradation.lr_policy=choice", "--data.degradation.lr_sizes=[4, 8, 16]"]),
    ],
)
def test_siamese_cr_fit_then_test(tiny_args: list[str], mode: str, data: list[str]) -> None:
    args = [*SIAMESE_CR, f"--model.mode={mode}", *data, f"--name={mode}"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the paper's data settings: no warning from the fit-start check
        warnings.filterwarnings("ignore", module="lightning")
        warnings.filterwarnings("ignore", module="torch")
        cli = main(["fit", *tiny_args, *args])
    assert {"train_loss", "train_loss_ce_hr", "train_loss_ce_lr", "train_loss_dist"} <= set(
        cli.trainer.callback_metrics
    )
    assert cli.model.distance_weight == 25.0
    if mode == "st":
        ckpt = _runs(tiny_args) / mode / "checkpoints" / "last.ckpt"
        main(["test", *tiny_args, *args, f"--ckpt_path={ckpt}"])
        assert len(list((_runs(tiny_args) / mode).glob("test-*/results_test.csv"))) == 1


def test_siamese_cr_st_m2_five_branches(tiny_args: list[str]) -> None:
    args = [*SIAMESE_CR, "--model.mode=st_m2", "--data.degradation.lr_views=[4, 8, 12, 16]", "--name=st_m2"]
    cli = main(["fit", *tiny_args, *args])
    metrics = set(cli.trainer.callback_metrics)
    branches = ["hr", "4px", "8px", "12px", "16px"]
    assert {f"train_loss_ce_{b}" for b in branches} <= metrics  # five cross-entropy terms
    assert {f"train_loss_dist_{b}" for b in branches[1:]} <= metrics  # HR vs each LR branch
    assert "train_loss_dist_hr" not in metrics
    assert cli.model.distance_weight == 3.0
    assert "val_acc_synthetic_hr_lr_8px" in metrics


def test_siamese_cr_st_m2_needs_lr_views(tiny_args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *tiny_args, *SIAMESE_CR, "--model.mode=st_m2", "--name=noviews"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and "data.degradation.lr_views" in error and "SiameseCR" in error


def _siamese_batch(views: bool) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(1)
    batch: dict[str, Any] = {
        "hr": torch.rand(4, 3, 32, 32, generator=generator),
        "lr": torch.rand(4, 3, 32, 32, generator=generator),
        "label": torch.tensor([0, 1, 2, 3]),
    }
    if views:
        batch["lr_views"] = {f"{s}px": torch.rand(4, 3, 32, 32, generator=generator) for s in (4, 8, 12, 16)}
    return batch


def test_siamese_cr_loss_is_eq7() -> None:
    torch.manual_seed(0)
    model = SiameseCR(**TINY)
    model.train()
    batch = _siamese_batch(views=False)
    loss = model.training_step(batch, 0)
    with torch.no_grad():
        f_hr, f_lr = model.backbone(batch["hr"]), model.backbone(batch["lr"])
        y = batch["label"]
        # Eq. (7): L = L_ce^HR + L_ce^LR + 25 · L_dist
        expected = (
            F.cross_entropy(model.head(f_hr, y), y)
            + F.cross_entropy(model.head(f_lr, y), y)
            + 25 * cosine_distance_loss(f_hr, f_lr)
        )
    assert loss is not None and torch.allclose(loss, expected, atol=1e-5)


def test_siamese_cr_st_m2_loss_sums_five_branches() -> None:
    torch.manual_seed(0)
    model = SiameseCR(mode="st_m2", **TINY)
    model.train()
    batch = _siamese_batch(views=True)
    loss = model.training_step(batch, 0)
    y = batch["label"]
    with torch.no_grad():
        f_hr = model.backbone(batch["hr"])
        expected = F.cross_entropy(model.head(f_hr, y), y)
        for view in batch["lr_views"].values():
            f_lr = model.backbone(view)
            expected = expected + F.cross_entropy(model.head(f_lr, y), y) + 3 * cosine_distance_loss(f_hr, f_lr)
    assert loss is not None and torch.allclose(loss, expected, atol=1e-5)
    with pytest.raises(KeyError, match="lr_views"):
        model.training_step(_siamese_batch(views=False), 0)


@pytest.mark.parametrize("kwargs, match", [({"mode": "st_m3"}, "mode"), ({"distance_weight": -1.0}, "distance_weight")])
def test_siamese_cr_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SiameseCR(**TINY, **kwargs)


def test_shared_weights_one_network_for_hr_and_lr() -> None:
    for model in (BatchCR(**TINY), SiameseCR(**TINY)):
        model.eval()
        x = torch.rand(2, 3, 32, 32)
        with torch.no_grad():
            assert torch.equal(model.embed_hr(x), model.embed_lr(x, torch.tensor([[8, 8], [8, 8]])))
