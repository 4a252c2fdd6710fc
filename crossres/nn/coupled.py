"""Deep Coupled ResNet (DCR, 003): the trunk ResNet, the coupled branch networks and a resolution estimator.

The trunk is the 20-layer-style residual network of Wen et al.'s center loss [8] that DCR builds on (003 §II-A,
Fig. 1): 3x3 convolutions with stride 1, each followed by PReLU; 2x2 max-pooling with stride 2; residual modules
``x + PReLU(conv(PReLU(conv(x))))`` repeated ``(1, 2, 5, 3)`` times after the four pooling stages; a fully
connected layer whose output is the feature ``v``. At ``width=32`` (channels 32-64-128-256-512) and a 112x96
input it has 27.6 M parameters, 105 MiB in float32 - the "105 MB" trunk of 003 §I - and one branch pair
(two 512 -> 512 mappings) 2 MiB, 1.9 % of trunk + pair (003 §II-C).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["BranchNetwork", "BranchPair", "DCRTrunk", "ResolutionEstimator", "count_parameters"]

#: Residual modules after each of the four pooling stages ("xh" in 003 Fig. 1, as in Wen et al.'s model).
_MODULES = (1, 2, 5, 3)


def count_parameters(module: nn.Module) -> int:
    """Number of scalar parameters of ``module`` (trainable or not).

    Args:
        module: any module.

    Returns:
        The total element count of its parameters.
    """
    return sum(p.numel() for p in module.parameters())


class _Residual(nn.Module):
    """One residual module of 003 Fig. 1: two 3x3 convolutions (padding 1), each followed by PReLU, plus identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1)
        self.prelu1 = nn.PReLU(channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1)
        self.prelu2 = nn.PReLU(channels)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.prelu2(self.conv2(self.prelu1(self.conv1(x))))


def _trunk_feature_size(size: int) -> int:
    # conv1a, conv1b (unpadded 3x3), pool; then (unpadded 3x3 conv, pool) three times.
    size = (size - 4) // 2
    for _ in range(3):
        size = (size - 2) // 2
    return size


class DCRTrunk(nn.Module):
    """The trunk network of DCR (003 Fig. 1), after Wen et al.'s center-loss ResNet [8].

    ``C(w) C(2w) P [R(2w)]x1 C(4w) P [R(4w)]x2 C(8w) P [R(8w)]x5 C(16w) P [R(16w)]x3 F(embedding_size)``: the
    transition convolutions are unpadded (as in [8]: 112x96 -> 5x4 before the FC layer), those inside residual
    modules padded. The input ``[0, 1]`` is mapped to ``[-1, 1]`` inside (``(x - 127.5) / 128`` in [8]).
    Initialisation (not given in 003): He et al.'s for PReLU, with the last convolution of every residual module
    zero so that each module starts as the identity.

    Args:
        embedding_size: dimension of the feature ``v`` (512 in 003).
        image_size: input ``(h, w)`` (112x96 in 003); both sides must be at least 48.
        width: channels of the first convolution; the stages have ``width * (2, 4, 8, 16)`` (32 in 003; use
            4-8 for CPU runs).

    Raises:
        ValueError: if ``width`` or ``embedding_size`` is not positive or ``image_size`` is too small.
    """

    def __init__(self, embedding_size: int = 512, image_size: Sequence[int] = (112, 96), width: int = 32) -> None:
        super().__init__()
        if width < 1 or embedding_size < 1:
            raise ValueError(f"width and embedding_size must be positive, got width={width}, {embedding_size=}")
        if len(image_size) != 2:
            raise ValueError(f"image_size must be (h, w), got {image_size!r}")
        height, width_px = int(image_size[0]), int(image_size[1])
        out_h, out_w = _trunk_feature_size(height), _trunk_feature_size(width_px)
        if out_h < 1 or out_w < 1:
            raise ValueError(
                f"image_size={tuple(image_size)} is too small for the DCR trunk (four unpadded conv + pool stages): "
                "both sides must be >= 48, e.g. 112x96 as in the paper"
            )
        self.embedding_size = embedding_size
        self.image_size = (height, width_px)
        channels = [width * 2**i for i in range(5)]  # 32, 64, 128, 256, 512 at width 32
        layers: list[nn.Module] = [
            nn.Conv2d(3, channels[0], kernel_size=3),
            nn.PReLU(channels[0]),
            nn.Conv2d(channels[0], channels[1], kernel_size=3),
            nn.PReLU(channels[1]),
            nn.MaxPool2d(2, 2),
        ]
        for stage, repeats in enumerate(_MODULES):
            if stage > 0:
                layers += [
                    nn.Conv2d(channels[stage], channels[stage + 1], kernel_size=3),
                    nn.PReLU(channels[stage + 1]),
                    nn.MaxPool2d(2, 2),
                ]
            layers += [_Residual(channels[stage + 1]) for _ in range(repeats)]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(channels[4] * out_h * out_w, embedding_size)
        self._init_weights()

    def _init_weights(self) -> None:
        # He et al. (PReLU paper) initialisation for PReLU(0.25) layers; each residual module starts as the identity
        # (its last convolution zero), so the 27-layer plain-PReLU trunk trains without normalisation layers.
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, a=0.25, nonlinearity="leaky_relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, _Residual):
                nn.init.zeros_(module.conv2.weight)

    def forward(self, x: Tensor) -> Tensor:
        """Compute the trunk feature ``v``.

        Args:
            x: images in ``[0, 1]``, ``(B, 3, h, w)`` with ``(h, w) == image_size``.

        Returns:
            ``(B, embedding_size)`` features ``v``, not normalised.
        """
        x = self.features((x - 0.5) / 0.5)
        return self.fc(torch.flatten(x, 1))


class BranchNetwork(nn.Module):
    """One branch of a coupled mapping (003 §II-A): ``FC -> PReLU -> FC``.

    The first FC maps the trunk feature ``v`` to the branch feature (``x`` for HR, ``z`` for LR), which is the
    representation used for matching; PReLU and the second FC (``U, b`` or ``V, a`` of Eq. (2)) form the softmax
    classifier used only in training.

    Args:
        in_features: dimension of the trunk feature ``v``.
        feature_size: dimension of ``x`` / ``z`` (512 in 003).
        num_classes: training identities ``n`` of Eq. (2).
        identity_init: start the mapping as the identity (``feature_size == in_features``), so that the branch
            feature is the trunk feature before training.

    Raises:
        ValueError: if a size is not positive, or ``identity_init`` with ``feature_size != in_features``.
    """

    def __init__(self, in_features: int, feature_size: int, num_classes: int, identity_init: bool = False) -> None:
        super().__init__()
        if min(in_features, feature_size, num_classes) < 1:
            raise ValueError(f"sizes must be positive, got {in_features=}, {feature_size=}, {num_classes=}")
        if identity_init and feature_size != in_features:
            raise ValueError(
                f"an identity mapping needs feature_size == in_features, got {feature_size} and {in_features}"
            )
        self.mapping = nn.Linear(in_features, feature_size)
        if identity_init:
            with torch.no_grad():
                self.mapping.weight.copy_(torch.eye(feature_size))
                self.mapping.bias.zero_()
        self.prelu = nn.PReLU(feature_size)
        self.classifier = nn.Linear(feature_size, num_classes)

    def features(self, v: Tensor) -> Tensor:
        """The branch feature (``x`` or ``z``): the output of the first FC layer."""
        return self.mapping(v)

    def forward(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """Map trunk features to branch features and class logits.

        Args:
            v: ``(B, in_features)`` trunk features.

        Returns:
            ``(features (B, feature_size), logits (B, num_classes))``.
        """
        features = self.mapping(v)
        return features, self.classifier(self.prelu(features))


class BranchPair(nn.Module):
    """The two branch networks of one target LR size: ``hr`` maps HR features to ``x``, ``lr`` LR features to ``z``.

    Args:
        in_features: dimension of the trunk feature ``v``.
        feature_size: dimension of ``x`` and ``z``.
        num_classes: training identities.
        identity_init: both mappings start as the identity (:class:`BranchNetwork`).
    """

    def __init__(self, in_features: int, feature_size: int, num_classes: int, identity_init: bool = False) -> None:
        super().__init__()
        self.hr = BranchNetwork(in_features, feature_size, num_classes, identity_init)
        self.lr = BranchNetwork(in_features, feature_size, num_classes, identity_init)

    def inference_parameters(self) -> int:
        """Parameters used at test time: the two feature mappings (the classifiers serve only training)."""
        return count_parameters(self.hr.mapping) + count_parameters(self.lr.mapping)


class ResolutionEstimator(nn.Module):
    """A small classifier that tells which of the branch sizes a probe's trunk feature comes from.

    003 §I point 4 leaves the choice of branch pair to "resolution indicator methods [24]"; this is a learned one:
    ``FC -> PReLU -> FC`` over the trunk feature ``v``, one logit per branch size.

    Args:
        in_features: dimension of the trunk feature ``v``.
        num_sizes: number of branch sizes (classes).
        hidden: hidden units.

    Raises:
        ValueError: if a size is not positive.
    """

    def __init__(self, in_features: int, num_sizes: int, hidden: int = 64) -> None:
        super().__init__()
        if min(in_features, num_sizes, hidden) < 1:
            raise ValueError(f"sizes must be positive, got {in_features=}, {num_sizes=}, {hidden=}")
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.PReLU(hidden), nn.Linear(hidden, num_sizes))

    def forward(self, v: Tensor) -> Tensor:
        """Logits ``(B, num_sizes)`` over the branch sizes for trunk features ``v`` ``(B, in_features)``."""
        return self.net(v)
