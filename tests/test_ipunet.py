"""IPUNet (002): U-Net shapes, the identity-preserving loss, gradients through the frozen recogniser, the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from crossres.cli import main
from crossres.losses.identity import IdentityPreservingLoss
from crossres.methods.base import HR_MODEL_COMMAND
from crossres.methods.ipunet import IPUNet
from crossres.nn.unet import UNet

RECOGNISER = ["--model.backbone=iresnet18", "--model.backbone_kwargs={width: 8}", "--model.embedding_size=32"]
BASELINE = ["--model=Baseline", *RECOGNISER, "--model.lr=0.05"]
TINY_IPUNET = [
    "--model=crossres.methods.ipunet.IPUNet",
    *RECOGNISER,
    "--model.sr_size=32",
    "--model.unet_depth=5",
    "--model.unet_width=4",
    "--data.degradation.lr_sizes=[[4, 4], [8, 6], [32, 32]]",
]


def _model(**kwargs: object) -> IPUNet:
    args = {
        "num_classes": 6,
        "image_size": (32, 32),
        "backbone_kwargs": {"width": 8},
        "embedding_size": 32,
        "sr_size": 32,
        "unet_depth": 5,
        "unet_width": 4,
    }
    return IPUNet(**(args | kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [128, 256])
def test_unet_shapes(size: int) -> None:
    unet = UNet(depth=7, width=4)
    assert len(unet.down) == 7 and len(unet.up) + 1 == 7  # 6 up blocks + the output up block
    out = unet(torch.rand(2, 3, size, size))  # train mode: BatchNorm of the 1x1 bottleneck needs 2 samples
    assert out.shape == (2, 3, size, size)
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0


def test_unet_blocks_follow_the_paper() -> None:
    unet = UNet(depth=7, width=4)
    assert isinstance(unet.down[0].norm, torch.nn.Identity)  # no BatchNorm in the first down block
    assert all(isinstance(block.norm, torch.nn.BatchNorm2d) for block in unet.down[1:])
    dropouts = [isinstance(block.dropout, torch.nn.Dropout) for block in unet.up]
    assert dropouts == [True, True, True, False, False, False]


def test_unet_rejects_sizes_it_cannot_halve() -> None:
    with pytest.raises(ValueError, match="multiples of 128"):
        UNet(depth=7, width=2)(torch.rand(1, 3, 112, 112))
    with pytest.raises(ValueError, match="sr_size"):
        _model(sr_size=48)


def test_identity_loss_matches_eq_3_3() -> None:
    generator = torch.Generator().manual_seed(0)
    sr = torch.rand(3, 3, 4, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    hr = torch.rand(3, 3, 4, 4, generator=generator, dtype=torch.float64)
    e_sr = torch.randn(3, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    e_hr = torch.randn(3, 5, generator=generator, dtype=torch.float64)
    for normalize in (False, True):
        terms = IdentityPreservingLoss(beta=5.0, normalize=normalize)(sr, hr, e_sr, e_hr)
        # Eq. 3.1 / 3.2 as mean squared errors, Eq. 3.3 = L_embedding + 5 L_pixel, written out.
        pixel = sum(float((sr[i, c, y, x] - hr[i, c, y, x]) ** 2) for i in range(3) for c in range(3)
                    for y in range(4) for x in range(4)) / (3 * 3 * 4 * 4)  # fmt: skip
        a = [e / e.norm() if normalize else e for e in e_sr.detach()]
        b = [e / e.norm() if normalize else e for e in e_hr]
        embedding = sum(float((a[i][d] - b[i][d]) ** 2) for i in range(3) for d in range(5)) / 15
        assert float(terms["pixel"]) == pytest.approx(pixel, rel=1e-10)
        assert float(terms["embedding"]) == pytest.approx(embedding, rel=1e-10)
        assert float(terms["loss"]) == pytest.approx(embedding + 5.0 * pixel, rel=1e-10)
    # Gradients: d L_pixel / d sr = 2 (sr - hr) / N; un-normalised d L_embedding / d e_sr = 2 (e_sr - e_hr) / N.
    terms = IdentityPreservingLoss(beta=5.0, normalize=False)(sr, hr, e_sr, e_hr)
    terms["loss"].backward()
    assert torch.allclose(sr.grad, 5.0 * 2 * (sr - hr).detach() / sr.numel())
    assert torch.allclose(e_sr.grad, 2 * (e_sr - e_hr).detach() / e_sr.numel())


def test_embedding_loss_reaches_the_unets_first_layer() -> None:
    torch.manual_seed(0)
    model = _model(beta=0.0).train()
    hr = torch.rand(4, 3, 32, 32)
    sr = model.super_resolve(torch.rand(4, 3, 32, 32))
    with torch.no_grad():
        target = model.recognizer(hr)
    terms = model.identity_loss(sr, hr, model.recognizer(sr), target)  # β = 0: the embedding term alone
    terms["loss"].backward()
    grad = model.unet.down[0].conv.weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0
    assert all(p.grad is None for p in model.recognizer.parameters())
    assert not model.recognizer.training  # frozen recogniser stays in eval mode in train mode


def test_embeddings_route_probes_through_the_sr_network() -> None:
    model = _model().eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.embed_hr(x), model.recognizer(x))
        assert torch.allclose(model.embed_lr(x, torch.tensor([[8, 8], [8, 8]])), model.recognizer(model.unet(x)))
        both = _model(concat_bicubic=True).eval().embed_lr(x, torch.tensor([[8, 8], [8, 8]]))
    assert both.shape == (2, 64)


def test_fit_and_test_through_the_cli(tiny_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit) as error:
        main(["fit", *tiny_args, *TINY_IPUNET, f"--model.recognizer_weights={tmp_path / 'none.ckpt'}"])
    err = capsys.readouterr().err
    assert error.value.code == 2 and HR_MODEL_COMMAND in err and "model.recognizer_weights" in err

    main(["fit", *tiny_args, *BASELINE, "--name=teacher"])
    teacher = runs / "teacher" / "checkpoints" / "last.ckpt"
    main(["fit", *tiny_args, *TINY_IPUNET, f"--model.recognizer_weights={teacher}", "--name=ipunet"])
    ckpt = runs / "ipunet" / "checkpoints" / "last.ckpt"
    before = torch.load(teacher, map_location="cpu", weights_only=True)["state_dict"]
    after = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    for key, value in before.items():
        if key.startswith("backbone."):
            assert torch.equal(value, after["recognizer." + key[len("backbone.") :]]), key  # frozen, bit-identical

    main(["test", *tiny_args, *TINY_IPUNET, "--name=ipunet", f"--ckpt_path={ckpt}"])
    results = list((runs / "ipunet").glob("test-*/results_test.csv"))
    assert len(results) == 1 and "HR-LR" in results[0].read_text()
