"""Tests of crossres.nn: insightface-compatible backbones, timm backbones, margin heads, weight loading."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from crossres.nn import (
    BACKBONES,
    HEADS,
    ArcFaceHead,
    CosFaceHead,
    IResNet,
    SoftmaxHead,
    build_backbone,
    build_head,
    embedding_dim,
    extract_state_dict,
    load_backbone_weights,
)

# State-dict keys and shapes of insightface's arcface_torch `iresnet18()` (recognition/arcface_torch/backbones/
# iresnet.py, num_features=512, 112x112 input), written down from that reference; "-" is a scalar buffer.
IRESNET18_KEYS = """
conv1.weight 64,3,3,3
bn1.weight 64
bn1.bias 64
bn1.running_mean 64
bn1.running_var 64
bn1.num_batches_tracked -
prelu.weight 64
layer1.0.bn1.weight 64
layer1.0.bn1.bias 64
layer1.0.bn1.running_mean 64
layer1.0.bn1.running_var 64
layer1.0.bn1.num_batches_tracked -
layer1.0.conv1.weight 64,64,3,3
layer1.0.bn2.weight 64
layer1.0.bn2.bias 64
layer1.0.bn2.running_mean 64
layer1.0.bn2.running_var 64
layer1.0.bn2.num_batches_tracked -
layer1.0.prelu.weight 64
layer1.0.conv2.weight 64,64,3,3
layer1.0.bn3.weight 64
layer1.0.bn3.bias 64
layer1.0.bn3.running_mean 64
layer1.0.bn3.running_var 64
layer1.0.bn3.num_batches_tracked -
layer1.0.downsample.0.weight 64,64,1,1
layer1.0.downsample.1.weight 64
layer1.0.downsample.1.bias 64
layer1.0.downsample.1.running_mean 64
layer1.0.downsample.1.running_var 64
layer1.0.downsample.1.num_batches_tracked -
layer1.1.bn1.weight 64
layer1.1.bn1.bias 64
layer1.1.bn1.running_mean 64
layer1.1.bn1.running_var 64
layer1.1.bn1.num_batches_tracked -
layer1.1.conv1.weight 64,64,3,3
layer1.1.bn2.weight 64
layer1.1.bn2.bias 64
layer1.1.bn2.running_mean 64
layer1.1.bn2.running_var 64
layer1.1.bn2.num_batches_tracked -
layer1.1.prelu.weight 64
layer1.1.conv2.weight 64,64,3,3
layer1.1.bn3.weight 64
layer1.1.bn3.bias 64
layer1.1.bn3.running_mean 64
layer1.1.bn3.running_var 64
layer1.1.bn3.num_batches_tracked -
layer2.0.bn1.weight 64
layer2.0.bn1.bias 64
layer2.0.bn1.running_mean 64
layer2.0.bn1.running_var 64
layer2.0.bn1.num_batches_tracked -
layer2.0.conv1.weight 128,64,3,3
layer2.0.bn2.weight 128
layer2.0.bn2.bias 128
layer2.0.bn2.running_mean 128
layer2.0.bn2.running_var 128
layer2.0.bn2.num_batches_tracked -
layer2.0.prelu.weight 128
layer2.0.conv2.weight 128,128,3,3
layer2.0.bn3.weight 128
layer2.0.bn3.bias 128
layer2.0.bn3.running_mean 128
layer2.0.bn3.running_var 128
layer2.0.bn3.num_batches_tracked -
layer2.0.downsample.0.weight 128,64,1,1
layer2.0.downsample.1.weight 128
layer2.0.downsample.1.bias 128
layer2.0.downsample.1.running_mean 128
layer2.0.downsample.1.running_var 128
layer2.0.downsample.1.num_batches_tracked -
layer2.1.bn1.weight 128
layer2.1.bn1.bias 128
layer2.1.bn1.running_mean 128
layer2.1.bn1.running_var 128
layer2.1.bn1.num_batches_tracked -
layer2.1.conv1.weight 128,128,3,3
layer2.1.bn2.weight 128
layer2.1.bn2.bias 128
layer2.1.bn2.running_mean 128
layer2.1.bn2.running_var 128
layer2.1.bn2.num_batches_tracked -
layer2.1.prelu.weight 128
layer2.1.conv2.weight 128,128,3,3
layer2.1.bn3.weight 128
layer2.1.bn3.bias 128
layer2.1.bn3.running_mean 128
layer2.1.bn3.running_var 128
layer2.1.bn3.num_batches_tracked -
layer3.0.bn1.weight 128
layer3.0.bn1.bias 128
layer3.0.bn1.running_mean 128
layer3.0.bn1.running_var 128
layer3.0.bn1.num_batches_tracked -
layer3.0.conv1.weight 256,128,3,3
layer3.0.bn2.weight 256
layer3.0.bn2.bias 256
layer3.0.bn2.running_mean 256
layer3.0.bn2.running_var 256
layer3.0.bn2.num_batches_tracked -
layer3.0.prelu.weight 256
layer3.0.conv2.weight 256,256,3,3
layer3.0.bn3.weight 256
layer3.0.bn3.bias 256
layer3.0.bn3.running_mean 256
layer3.0.bn3.running_var 256
layer3.0.bn3.num_batches_tracked -
layer3.0.downsample.0.weight 256,128,1,1
layer3.0.downsample.1.weight 256
layer3.0.downsample.1.bias 256
layer3.0.downsample.1.running_mean 256
layer3.0.downsample.1.running_var 256
layer3.0.downsample.1.num_batches_tracked -
layer3.1.bn1.weight 256
layer3.1.bn1.bias 256
layer3.1.bn1.running_mean 256
layer3.1.bn1.running_var 256
layer3.1.bn1.num_batches_tracked -
layer3.1.conv1.weight 256,256,3,3
layer3.1.bn2.weight 256
layer3.1.bn2.bias 256
layer3.1.bn2.running_mean 256
layer3.1.bn2.running_var 256
layer3.1.bn2.num_batches_tracked -
layer3.1.prelu.weight 256
layer3.1.conv2.weight 256,256,3,3
layer3.1.bn3.weight 256
layer3.1.bn3.bias 256
layer3.1.bn3.running_mean 256
layer3.1.bn3.running_var 256
layer3.1.bn3.num_batches_tracked -
layer4.0.bn1.weight 256
layer4.0.bn1.bias 256
layer4.0.bn1.running_mean 256
layer4.0.bn1.running_var 256
layer4.0.bn1.num_batches_tracked -
layer4.0.conv1.weight 512,256,3,3
layer4.0.bn2.weight 512
layer4.0.bn2.bias 512
layer4.0.bn2.running_mean 512
layer4.0.bn2.running_var 512
layer4.0.bn2.num_batches_tracked -
layer4.0.prelu.weight 512
layer4.0.conv2.weight 512,512,3,3
layer4.0.bn3.weight 512
layer4.0.bn3.bias 512
layer4.0.bn3.running_mean 512
layer4.0.bn3.running_var 512
layer4.0.bn3.num_batches_tracked -
layer4.0.downsample.0.weight 512,256,1,1
layer4.0.downsample.1.weight 512
layer4.0.downsample.1.bias 512
layer4.0.downsample.1.running_mean 512
layer4.0.downsample.1.running_var 512
layer4.0.downsample.1.num_batches_tracked -
layer4.1.bn1.weight 512
layer4.1.bn1.bias 512
layer4.1.bn1.running_mean 512
layer4.1.bn1.running_var 512
layer4.1.bn1.num_batches_tracked -
layer4.1.conv1.weight 512,512,3,3
layer4.1.bn2.weight 512
layer4.1.bn2.bias 512
layer4.1.bn2.running_mean 512
layer4.1.bn2.running_var 512
layer4.1.bn2.num_batches_tracked -
layer4.1.prelu.weight 512
layer4.1.conv2.weight 512,512,3,3
layer4.1.bn3.weight 512
layer4.1.bn3.bias 512
layer4.1.bn3.running_mean 512
layer4.1.bn3.running_var 512
layer4.1.bn3.num_batches_tracked -
bn2.weight 512
bn2.bias 512
bn2.running_mean 512
bn2.running_var 512
bn2.num_batches_tracked -
fc.weight 512,25088
fc.bias 512
features.weight 512
features.bias 512
features.running_mean 512
features.running_var 512
features.num_batches_tracked -
"""

# Number of state-dict entries of insightface's iresnet34/50/100 at full width.
IRESNET_KEY_COUNTS = {"iresnet18": 187, "iresnet34": 331, "iresnet50": 475, "iresnet100": 925}


def _expected_keys(width: int = 64) -> dict[str, tuple[int, ...]]:
    """IRESNET18_KEYS as a dict; channel counts scaled to `width` (fc and features stay 512-dimensional)."""
    expected = {}
    for line in IRESNET18_KEYS.strip().splitlines():
        key, shape = line.split()
        dims = [] if shape == "-" else [int(d) for d in shape.split(",")]
        if key == "fc.weight":
            dims[1] = dims[1] * width // 64
        elif not key.startswith(("fc.", "features.")) and dims:
            dims[0] = dims[0] * width // 64  # output channels (or BN / PReLU channels)
            if len(dims) == 4 and key != "conv1.weight":
                dims[1] = dims[1] * width // 64  # input channels; the stem keeps its 3 RGB inputs
        expected[key] = tuple(dims)
    return expected


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


# --------------------------------------------------------------------------------------------------- backbones


def test_iresnet18_state_dict_matches_insightface() -> None:
    model = build_backbone("iresnet18")
    assert isinstance(model, IResNet)
    assert list(_shapes(model).items()) == list(_expected_keys().items())  # same keys, same order, same shapes
    assert model.fc.in_features == 512 * 7 * 7
    assert not model.features.weight.requires_grad and torch.all(model.features.weight == 1)
    assert all(m.eps == 1e-5 for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))


def test_iresnet18_width_scales_shapes_not_keys() -> None:
    model = build_backbone("iresnet18", width=16)
    assert _shapes(model) == _expected_keys(width=16)


@pytest.mark.parametrize("name", BACKBONES)
def test_iresnet_depths_build_and_embed(name: str) -> None:
    model = build_backbone(name, embedding_size=32, width=16).eval()
    assert len(model.state_dict()) == IRESNET_KEY_COUNTS[name]
    assert embedding_dim(model) == 32
    with torch.no_grad():
        assert model(torch.rand(2, 3, 112, 112)).shape == (2, 32)


def test_iresnet_rectangular_input() -> None:
    model = build_backbone("iresnet18", embedding_size=16, image_size=(112, 96), width=8, dropout=0.1)
    assert model.fc.in_features == 8 * 8 * 7 * 6
    assert model(torch.rand(3, 3, 112, 96)).shape == (3, 16)


def test_iresnet_normalises_input_inside() -> None:
    model = build_backbone("iresnet18", width=8).eval()
    seen = []
    model.conv1.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    x = torch.rand(2, 3, 112, 112)
    with torch.no_grad():
        model(x)
    torch.testing.assert_close(seen[0], (x - 0.5) / 0.5)


@pytest.mark.parametrize("image_size", [(112, 100), (100, 112), (8, 8)])
def test_iresnet_bad_image_size(image_size: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match=r"image_size.*iresnet18.*multiples of 16, e.g. 112x112 or 112x96"):
        build_backbone("iresnet18", image_size=image_size)


def test_iresnet_rejects_unknown_kwargs() -> None:
    with pytest.raises(ValueError, match="depth"):
        build_backbone("iresnet18", depth=3)


def test_timm_backbone_by_name() -> None:
    model = build_backbone("test_resnet", embedding_size=24, image_size=(112, 96))
    assert model.training
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0]))  # runs after the normalising hook
    x = torch.rand(2, 3, 112, 96)
    assert model(x).shape == (2, 24)
    torch.testing.assert_close(seen[0], (x - 0.5) / 0.5)
    assert embedding_dim(model) == 24
    assert not any(key.startswith("model.") for key in model.state_dict())  # timm's own keys


def test_timm_bad_image_size() -> None:
    with pytest.raises(ValueError, match=r"image_size=\(100, 100\).*test_vit"):
        build_backbone("test_vit", embedding_size=8, image_size=(100, 100))


def test_unknown_backbone() -> None:
    with pytest.raises(ValueError, match=r"iresnet18.*iresnet100.*timm"):
        build_backbone("no_such_net")


# ------------------------------------------------------------------------------------------------------- heads


def _cos(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (x @ w) / (x.norm() * w.norm())


def naive_arcface(x: torch.Tensor, weight: torch.Tensor, labels: list[int], s: float, m: float) -> torch.Tensor:
    """ArcFace Eq. (3), one logit at a time; insightface's fallback cos(theta) - m sin(m) where theta + m > pi."""
    rows = []
    for i, label in enumerate(labels):
        row = []
        for j in range(weight.shape[0]):
            theta = torch.acos(_cos(x[i], weight[j]))
            if j != label:
                row.append(s * torch.cos(theta))
            elif theta + m <= math.pi:
                row.append(s * torch.cos(theta + m))
            else:
                row.append(s * (torch.cos(theta) - m * math.sin(m)))
        rows.append(torch.stack(row))
    return torch.stack(rows)


def naive_cosface(x: torch.Tensor, weight: torch.Tensor, labels: list[int], s: float, m: float) -> torch.Tensor:
    """CosFace Eq. (4): s (cos(theta_y) - m) for the target, s cos(theta_j) otherwise."""
    rows = []
    for i, label in enumerate(labels):
        rows.append(torch.stack([s * (_cos(x[i], weight[j]) - (m if j == label else 0.0)) for j in range(len(weight))]))
    return torch.stack(rows)


def _inputs(head: nn.Module, labels: list[int]) -> torch.Tensor:
    """Embeddings with samples near, far from, and opposite to their class centre (theta + m > pi)."""
    torch.manual_seed(0)
    centres = F.normalize(head.weight.detach().double(), dim=1)
    x = torch.randn(len(labels), centres.shape[1], dtype=torch.float64)
    x[0] = 3 * centres[labels[0]] + 0.3 * x[0]  # close to its centre
    x[1] = -2 * centres[labels[1]] + 0.2 * x[1]  # opposite its centre: theta > pi - m
    return x


def _compare(head: nn.Module, naive, labels: list[int]) -> None:  # type: ignore[no-untyped-def]
    x = _inputs(head, labels)
    x32 = x.float().requires_grad_()
    logits = head(x32, torch.tensor(labels))
    x64 = x.clone().requires_grad_()
    w64 = head.weight.detach().double().requires_grad_()
    expected = naive(x64, w64, labels, head.scale, head.margin)
    torch.testing.assert_close(logits.double(), expected, rtol=1e-4, atol=1e-3)

    target = torch.tensor([label if label >= 0 else 0 for label in labels])
    F.cross_entropy(logits, target).backward()
    F.cross_entropy(expected, target).backward()
    torch.testing.assert_close(x32.grad.double(), x64.grad, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(head.weight.grad.double(), w64.grad, rtol=1e-3, atol=1e-5)


def test_arcface_matches_naive_reference() -> None:
    head = build_head("arcface", embedding_size=8, num_classes=5)
    assert isinstance(head, ArcFaceHead) and head.margin == 0.5 and head.scale == 64.0
    labels = [2, 4, 0, 1, 3, 2]
    x = _inputs(head, labels)
    theta = torch.acos(F.cosine_similarity(x[1], head.weight[labels[1]].double(), dim=0))
    assert theta + head.margin > math.pi  # the fallback branch is exercised
    _compare(head, naive_arcface, labels)


def test_arcface_custom_margin_and_scale() -> None:
    head = build_head("arcface", embedding_size=6, num_classes=4, scale=30.0, margin=0.3)
    _compare(head, naive_arcface, [1, 3, 0, 2])


def test_cosface_matches_naive_reference() -> None:
    head = build_head("cosface", embedding_size=8, num_classes=5)
    assert isinstance(head, CosFaceHead) and head.margin == 0.35
    _compare(head, naive_cosface, [2, 4, 0, 1, 3, 2])


def test_margin_heads_skip_label_minus_one() -> None:
    head = build_head("arcface", embedding_size=8, num_classes=5)
    x = torch.randn(3, 8)
    with_minus = head(x, torch.tensor([1, -1, 2]))
    plain = head(x)
    torch.testing.assert_close(with_minus[1], plain[1])
    assert not torch.allclose(with_minus[0], plain[0])


@pytest.mark.parametrize("name", ["arcface", "cosface"])
def test_margin_heads_inference_is_scaled_cosine(name: str) -> None:
    head = build_head(name, embedding_size=8, num_classes=5, scale=10.0)
    x = torch.randn(4, 8)
    expected = 10.0 * F.normalize(x) @ F.normalize(head.weight).T
    torch.testing.assert_close(head(x), expected)
    torch.testing.assert_close(head(x, None), expected)


def test_arcface_gradient_finite_at_cos_one() -> None:
    head = build_head("arcface", embedding_size=4, num_classes=3)
    x = head.weight.detach()[[0, 1]].clone().requires_grad_()  # theta = 0 exactly
    head(x, torch.tensor([0, 1])).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all()


def test_softmax_head_matches_naive_reference() -> None:
    head = build_head("softmax", embedding_size=6, num_classes=4)
    assert isinstance(head, SoftmaxHead)
    x = torch.randn(3, 6)
    expected = torch.stack([torch.stack([x[i] @ head.weight[j] + head.bias[j] for j in range(4)]) for i in range(3)])
    torch.testing.assert_close(head(x, torch.tensor([0, 1, 2])), expected)
    torch.testing.assert_close(head(x), expected)


def test_build_head_errors() -> None:
    assert HEADS == ("softmax", "cosface", "arcface")
    with pytest.raises(ValueError, match="softmax.*margin"):
        build_head("softmax", 8, 4, margin=0.5)
    with pytest.raises(ValueError, match="unknown head 'sphereface'"):
        build_head("sphereface", 8, 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scale"):
        build_head("cosface", 8, 4, scale=0.0)


# ------------------------------------------------------------------------------------------------------ weights


def _randomised(width: int = 8) -> nn.Module:
    model = build_backbone("iresnet18", embedding_size=16, width=width)
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.copy_(torch.rand_like(value))
    return model


def _assert_same(a: nn.Module, b: nn.Module) -> None:
    for (key, value), other in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(value, other), key


def test_load_plain_state_dict(tmp_path: Path) -> None:
    source = _randomised()
    path = tmp_path / "backbone.pth"
    torch.save(source.state_dict(), path)
    target = build_backbone("iresnet18", embedding_size=16, width=8)
    load_backbone_weights(target, path)
    _assert_same(source, target)


def test_load_lightning_checkpoint_with_prefixes(tmp_path: Path) -> None:
    source = _randomised()
    state = {f"backbone._orig_mod.{key}": value for key, value in source.state_dict().items()}
    state["head.weight"] = torch.zeros(10, 16)
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "epoch": 3, "hyper_parameters": {"backbone": "iresnet18"}}, path)
    target = build_backbone("iresnet18", embedding_size=16, width=8)
    load_backbone_weights(target, path)  # prefix detected
    _assert_same(source, target)
    other = build_backbone("iresnet18", embedding_size=16, width=8)
    load_backbone_weights(other, str(path), prefix="backbone")
    _assert_same(source, other)


def test_load_ddp_and_named_prefixes(tmp_path: Path) -> None:
    guide, learner = _randomised(), _randomised()
    state = {f"module.{key}": value for key, value in guide.state_dict().items()}
    torch.save(state, tmp_path / "ddp.pth")
    target = build_backbone("iresnet18", embedding_size=16, width=8)
    load_backbone_weights(target, tmp_path / "ddp.pth")
    _assert_same(guide, target)

    state = {f"guide.{key}": value for key, value in guide.state_dict().items()}
    state |= {f"learner.{key}": value for key, value in learner.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "two.ckpt")
    with pytest.raises(ValueError, match=r"\['guide\.', 'learner\.'\].*prefix="):
        load_backbone_weights(target, tmp_path / "two.ckpt")
    load_backbone_weights(target, tmp_path / "two.ckpt", prefix="learner.")
    _assert_same(learner, target)
    assert extract_state_dict(tmp_path / "two.ckpt", prefix="guide.").keys() == guide.state_dict().keys()
    with pytest.raises(ValueError, match=r"prefix 'model\.' matches no key.*'guide\.', 'learner\.'"):
        load_backbone_weights(target, tmp_path / "two.ckpt", prefix="model.")


def test_load_mismatch_lists_keys(tmp_path: Path) -> None:
    state = _randomised().state_dict()
    del state["fc.bias"], state["layer4.1.conv2.weight"]
    state["extra.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "partial.pth")
    target = build_backbone("iresnet18", embedding_size=16, width=8)
    with pytest.raises(RuntimeError) as error:
        load_backbone_weights(target, tmp_path / "partial.pth")
    message = str(error.value)
    assert "2 missing keys" in message and "layer4.1.conv2.weight" in message and "fc.bias" in message
    assert "1 unexpected keys: [extra.weight]" in message and "partial.pth" in message

    with pytest.warns(UserWarning, match="missing keys"):
        load_backbone_weights(target, tmp_path / "partial.pth", strict=False)
    assert torch.equal(target.fc.weight, state["fc.weight"])

    torch.save(_randomised(width=16).state_dict(), tmp_path / "wide.pth")
    with pytest.raises(RuntimeError, match=r"shape mismatches: \[conv1.weight: file \(16, 3, 3, 3\) vs model"):
        load_backbone_weights(target, tmp_path / "wide.pth", strict=False)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_backbone_weights(build_backbone("iresnet18", width=8), tmp_path / "nothing.pth")


class _Payload:
    pass


def test_load_refuses_arbitrary_pickles(tmp_path: Path) -> None:
    torch.save({"conv1.weight": _Payload()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="weights_only=True"):
        load_backbone_weights(build_backbone("iresnet18", width=8), tmp_path / "evil.pth")


def test_timm_pretrained_is_refused_pointing_at_local_weights() -> None:
    with pytest.raises(ValueError, match=r"pretrained=True is not supported.*--weights"):
        build_backbone("resnet18", pretrained=True)
