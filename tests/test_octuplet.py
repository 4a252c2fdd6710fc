"""Octuplet (Knoche et al. 2023): the training step is L_oct, the data contract, the CLI, checkpoint round trip."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from crossres.cli import main
from crossres.losses.octuplet import octuplet_loss
from crossres.methods import load_method
from crossres.methods.base import HR_MODEL_COMMAND
from crossres.methods.octuplet import Octuplet
from crossres.nn.backbones import build_backbone

from .conftest import REPO

RECOGNISER = {"backbone": "iresnet18", "backbone_kwargs": {"width": 8}, "embedding_size": 32}
TINY_OCTUPLET = [
    "-c",
    str(REPO / "experiments" / "octuplet.yaml"),  # the shipped config, shrunk by the tiny settings below
    "--model.backbone_kwargs={width: 8}",
    "--model.embedding_size=32",
    "--model.channels_last=false",
    "--data.images_per_class=2",  # 4 identities x 2 images per batch of 8
]


def _teacher(tmp_path: Path) -> Path:
    """A pretrained recogniser stand-in: an insightface-style ``backbone.pth`` of the tiny architecture."""
    torch.manual_seed(1)
    backbone = build_backbone("iresnet18", embedding_size=32, image_size=(32, 32), width=8)
    path = tmp_path / "backbone.pth"
    torch.save(backbone.state_dict(), path)
    return path


def test_fit_test_and_reload_through_the_cli(tiny_args: list[str], tmp_path: Path) -> None:
    teacher = _teacher(tmp_path)
    args = [*TINY_OCTUPLET, *tiny_args, f"--model.recognizer_weights={teacher}", "--name=octuplet"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the shipped data settings pass the fit-start check silently
        warnings.filterwarnings("ignore", module="lightning")
        warnings.filterwarnings("ignore", module="torch")
        cli = main(["fit", *args])
    metrics = cli.trainer.callback_metrics
    terms = {f"train_loss_{t}" for t in ("hr_hr", "hr_lr", "lr_hr", "lr_lr")}
    assert {"train_loss", "train_anchor_share", "val_acc_synthetic_hr_lr_8px"} | terms <= set(metrics)
    assert metrics["train_anchor_share"].item() == 1.0  # identity-balanced: every anchor has a triplet

    ckpt = tmp_path / "runs" / "octuplet" / "checkpoints" / "last.ckpt"
    main(["test", *args, f"--ckpt_path={ckpt}"])
    assert len(list((tmp_path / "runs" / "octuplet").glob("test-*/results_test.csv"))) == 1

    model = Octuplet.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).eval()
    loaded = load_method(ckpt)
    assert type(loaded) is Octuplet
    trained = cli.model.cpu().eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.embed(x), loaded.embed(x))
        assert torch.equal(model.embed(x), trained.embed(x))


def test_fit_starts_from_the_recogniser(tiny_args: list[str], tmp_path: Path) -> None:
    teacher = _teacher(tmp_path)
    args = [*TINY_OCTUPLET, *tiny_args, f"--model.recognizer_weights={teacher}", "--model.lr=0", "--name=frozen"]
    args += ["--trainer.limit_train_batches=1", "--trainer.limit_val_batches=0"]
    cli = main(["fit", *args])  # lr 0: the weights stay the recogniser's
    state = torch.load(teacher, map_location="cpu", weights_only=True)
    for key in ("conv1.weight", "fc.weight"):
        assert torch.equal(cli.model.backbone.state_dict()[key].cpu(), state[key]), key


def test_missing_recognizer_names_the_command(
    tiny_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *TINY_OCTUPLET, *tiny_args, f"--model.recognizer_weights={tmp_path / 'none.ckpt'}"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert HR_MODEL_COMMAND in error and "model.recognizer_weights" in error


@pytest.mark.parametrize(
    "bad", [["--data.train_sampler=random"], ["--data.images_per_class=1"]], ids=["random", "one per identity"]
)
def test_refuses_batches_without_positives(
    tiny_args: list[str], tmp_path: Path, bad: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*TINY_OCTUPLET, *tiny_args, f"--model.recognizer_weights={_teacher(tmp_path)}", *bad]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args])
    assert exit_info.value.code == 2 and "identity_balanced" in capsys.readouterr().err


def test_training_step_is_the_octuplet_loss_of_one_forward_pass() -> None:
    torch.manual_seed(0)
    model = Octuplet(num_classes=4, image_size=(32, 32), recognizer_weights=None, margin=0.3, **RECOGNISER)
    model.train()
    batch = {
        "hr": torch.rand(6, 3, 32, 32),
        "lr": torch.rand(6, 3, 32, 32),
        "label": torch.tensor([0, 0, 1, 1, 2, 2]),
    }
    loss = model.training_step(batch, 0)
    with torch.no_grad():
        embeddings = model.backbone(torch.cat([batch["hr"], batch["lr"]]))
        expected = octuplet_loss(embeddings[:6], embeddings[6:], batch["label"], margin=0.3)
    assert loss is not None and loss.item() > 0 and torch.allclose(loss, expected, atol=1e-6)


def test_one_network_for_hr_and_lr() -> None:
    model = Octuplet(num_classes=4, image_size=(32, 32), recognizer_weights=None, **RECOGNISER).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.embed_hr(x), model.embed_lr(x, torch.tensor([[8, 8], [8, 8]])))
    assert not hasattr(model, "head")  # the octuplet loss alone: no classification layer


@pytest.mark.parametrize("kwargs", [{"margin": -1.0}, {"terms": ["hr_xx"]}, {"distance": "l1"}])
def test_bad_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Octuplet(num_classes=4, image_size=(32, 32), recognizer_weights=None, **RECOGNISER, **kwargs)  # type: ignore[arg-type]
