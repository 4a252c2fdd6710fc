"""RIM's Face Hallucination sub-Net (FHN, 001 §3.1): coarse SR, prior-aided tri-path generator, mix-adversarial
discriminator.

* :class:`CoarseSR` is ``G_c``: it turns the bicubic-upsampled LR probe into a coarse HR face ``I_c``.
* :class:`TriPathGenerator` is the tri-path generator: a global feature path ``G_f``, a landmark path ``G_l`` that
  regresses one Gaussian heatmap per landmark, and a parsing path ``G_p`` that predicts per-pixel class scores; their
  outputs are concatenated.
* :class:`FeatureIntegrator` is ``D_i``: it reconstructs the SR face from the concatenated maps (Eq. (5)).
* :class:`DomainDiscriminator` is ``D_d``: it maps the concatenated maps to the features on which the MK-MMD between
  the coarse probes and the real HR faces is measured (Eqs. (6)-(10)).

The paper gives no layer-level architecture; the layers here follow FSRNet (Chen et al. 2018, ref. [4] of 001, which
RIM cites as its inspiration): residual blocks without normalisation, global residual connections for the images, and
work at half resolution (FSRNet's priors are predicted at half size; an 8x-upsampled probe has no finer detail), with
a sub-pixel convolution back to full size where an image is produced.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossres.data.priors import landmarks_to_heatmaps, landmarks_to_parsing

__all__ = [
    "prior_targets",
    "PRIOR_STRIDE",
    "CoarseSR",
    "DomainDiscriminator",
    "FHNOutput",
    "FaceHallucinationNet",
    "FeatureIntegrator",
    "ResidualBlock",
    "TriPathGenerator",
    "TriPathOutput",
]


#: The tri-path maps (features, landmark heatmaps, parsing scores) have ``1 / PRIOR_STRIDE`` of the face's size.
PRIOR_STRIDE = 2


def prior_targets(
    landmarks: Tensor, parsing: Tensor | None, image_size: tuple[int, int], sigma: float
) -> tuple[Tensor, Tensor]:
    """The targets of Eqs. (3)-(4) at FHN's prior size (``1/PRIOR_STRIDE`` of the face): heatmaps and parsing labels.

    Args:
        landmarks: ``(B, N, 2)`` ``(x, y)`` points in face pixels.
        parsing: ``(B, H, W)`` parsing labels of the faces, or ``None`` to estimate them from the landmarks.
        image_size: the face size ``(H, W)``.
        sigma: standard deviation of the landmark Gaussians in face pixels.

    Returns:
        ``(B, N, H/s, W/s)`` heatmaps and ``(B, H/s, W/s)`` long parsing labels.
    """
    # A map pixel j covers face pixels s*j ... s*j+s-1, centred at s*j + (s-1)/2 (pixel centres at integer coordinates,
    # as crossres.data.priors).
    stride = PRIOR_STRIDE
    size = (image_size[0] // stride, image_size[1] // stride)
    centred = (landmarks - (stride - 1) / 2) / stride
    heatmaps = landmarks_to_heatmaps(centred, size, sigma=sigma / stride)
    labels = landmarks_to_parsing(centred, size) if parsing is None else parsing[..., ::stride, ::stride]
    return heatmaps, labels.long()


def _conv(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)


class ResidualBlock(nn.Module):
    """``x + conv(prelu(conv(x)))`` (3x3 convolutions, no normalisation, as SR networks use).

    Args:
        channels: input and output channels.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(channels, channels), nn.PReLU(channels), _conv(channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class _Upsample(nn.Sequential):
    """Sub-pixel convolution (Shi et al. 2016): ``C`` channels at ``H/2`` to ``out_channels`` at ``H``.

    With ``zero_init`` it starts at zero, so that a residual branch ending here starts as the identity of its image
    (``I_c = I_lr``, ``I_sr = I_c`` before training).
    """

    def __init__(self, channels: int, out_channels: int, zero_init: bool = True) -> None:
        conv = _conv(channels, 4 * out_channels)
        if zero_init:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)  # type: ignore[arg-type]
        super().__init__(conv, nn.PixelShuffle(2))


class CoarseSR(nn.Module):
    """``G_c``: coarse super-resolution of the bicubic-upsampled LR probe, ``I_c = I_lr + r(I_lr)``.

    The residual ``r`` is computed at half resolution (a stride-2 convolution, residual blocks, a sub-pixel
    convolution back to ``H x W``): an 8x-upsampled probe holds no detail finer than that.

    Args:
        channels: feature channels.
        blocks: residual blocks.
    """

    def __init__(self, channels: int = 32, blocks: int = 2) -> None:
        super().__init__()
        self.head = nn.Sequential(_conv(3, channels, stride=2), nn.PReLU(channels))
        self.body = nn.Sequential(*[ResidualBlock(channels) for _ in range(blocks)])
        self.tail = _Upsample(channels, 3)

    def forward(self, lr: Tensor) -> Tensor:
        """Coarse HR face.

        Args:
            lr: ``(B, 3, H, W)`` LR probes in ``[0, 1]``, bicubic-upsampled to the HR size (``H``, ``W`` even).

        Returns:
            ``(B, 3, H, W)`` coarse HR faces ``I_c`` (not clamped).

        Raises:
            ValueError: if ``H`` or ``W`` is odd.
        """
        _check_even(lr)
        return lr + self.tail(self.body(self.head(lr - 0.5)))


def _check_even(image: Tensor) -> None:
    if image.shape[-2] % 2 or image.shape[-1] % 2:
        raise ValueError(f"FHN needs even image sizes (h, w), got {tuple(image.shape[-2:])}")


class _Path(nn.Module):
    """One path of the tri-path generator: a stride-2 encoder, residual blocks, a 1x1 output projection (at H/2)."""

    def __init__(self, channels: int, out_channels: int, blocks: int) -> None:
        super().__init__()
        self.down = nn.Sequential(_conv(3, channels, stride=2), nn.PReLU(channels))
        self.body = nn.Sequential(*[ResidualBlock(channels) for _ in range(blocks)])
        self.out = _conv(channels, out_channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.body(self.down(x)))


class TriPathOutput(NamedTuple):
    """Outputs of the three paths, all at half the input size ``(H/2, W/2)``."""

    features: Tensor
    """``(B, C_f, H/2, W/2)`` global facial features (``G_f``)."""
    heatmaps: Tensor
    """``(B, N, H/2, W/2)`` regressed landmark heatmaps (``G_l``)."""
    parsing_logits: Tensor
    """``(B, P, H/2, W/2)`` parsing class scores (``G_p``)."""

    def concat(self) -> Tensor:
        """The concatenated maps fed to the mix-adversarial discriminator: features, heatmaps, parsing probabilities.

        Returns:
            ``(B, C_f + N + P, H/2, W/2)``.
        """
        return torch.cat([self.features, self.heatmaps, self.parsing_logits.softmax(dim=1)], dim=1)


class TriPathGenerator(nn.Module):
    """The prior-aided tri-path generator (001, §3.1.1): global feature, landmark and parsing paths.

    Each path works and predicts at half the input resolution, as FSRNet's prior estimation network does (64x64 maps
    for 128x128 faces); the landmark and parsing targets are rendered at that size.

    Args:
        channels: feature channels inside each path.
        feature_channels: output channels ``C_f`` of the global feature path.
        num_landmarks: heatmaps ``N`` regressed by the landmark path (68 iBUG points).
        num_parsing_classes: classes ``P`` of the parsing path (11 Helen classes).
        blocks: residual blocks in each path.
    """

    def __init__(
        self,
        channels: int = 32,
        feature_channels: int = 32,
        num_landmarks: int = 68,
        num_parsing_classes: int = 11,
        blocks: int = 2,
    ) -> None:
        super().__init__()
        self.feature_path = _Path(channels, feature_channels, blocks)
        self.landmark_path = _Path(channels, num_landmarks, blocks)
        self.parsing_path = _Path(channels, num_parsing_classes, blocks)
        self.out_channels = feature_channels + num_landmarks + num_parsing_classes

    def forward(self, image: Tensor) -> TriPathOutput:
        """Run the three paths on a coarse SR (or real HR) face.

        Args:
            image: ``(B, 3, H, W)`` in ``[0, 1]``; ``H`` and ``W`` must be even.

        Returns:
            The three paths' maps at ``(H/2, W/2)``.

        Raises:
            ValueError: if ``H`` or ``W`` is odd.
        """
        _check_even(image)
        x = image - 0.5
        return TriPathOutput(self.feature_path(x), self.landmark_path(x), self.parsing_path(x))


class FeatureIntegrator(nn.Module):
    """``D_i``: reconstructs the SR face from the concatenated tri-path maps, ``I_sr = I_c + D_i(maps)``.

    A 1x1 convolution fuses the maps, residual blocks work at ``H/2``, a sub-pixel convolution returns to ``H``.

    Args:
        in_channels: channels of the concatenated maps.
        channels: feature channels.
        blocks: residual blocks (at full resolution).
    """

    def __init__(self, in_channels: int, channels: int = 32, blocks: int = 2) -> None:
        super().__init__()
        self.head = nn.Sequential(_conv(in_channels, channels, kernel_size=1), nn.PReLU(channels))
        self.body = nn.Sequential(*[ResidualBlock(channels) for _ in range(blocks)])
        self.tail = _Upsample(channels, 3)

    def forward(self, maps: Tensor, coarse: Tensor) -> Tensor:
        """SR face.

        Args:
            maps: ``(B, in_channels, H/2, W/2)`` concatenated tri-path maps of ``coarse``.
            coarse: ``(B, 3, H, W)`` the coarse SR face ``I_c``.

        Returns:
            ``(B, 3, H, W)`` SR face (not clamped).
        """
        return coarse + self.tail(self.body(self.head(maps)))


class DomainDiscriminator(nn.Module):
    """``D_d``: features of the tri-path maps on which MK-MMD is measured (maximised by ``D_d``, Eq. (6)).

    A 1x1 convolution, three stride-2 convolutions, global average pooling and a linear layer. With ``normalize`` the
    output is L2-normalised (squared distances in ``[0, 4]``, for fixed kernel bandwidths); RIM uses raw features with
    bandwidths relative to their mean squared distance instead, which keeps the MMD scale-free: L2-normalised features
    let ``D_d`` saturate every Gaussian kernel (all features equal, MMD and its gradient zero) and stay there.

    Args:
        in_channels: channels of the concatenated maps.
        channels: feature channels of the first convolution (doubled after it).
        dim: output feature size.
        normalize: L2-normalise the output.
    """

    def __init__(self, in_channels: int, channels: int = 32, dim: int = 64, normalize: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(in_channels, channels, kernel_size=1),
            nn.LeakyReLU(0.2),
            _conv(channels, channels, stride=2),
            nn.LeakyReLU(0.2),
            _conv(channels, 2 * channels, stride=2),
            nn.LeakyReLU(0.2),
            _conv(2 * channels, 2 * channels, stride=2),
            nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(2 * channels, dim),
        )
        self.normalize = normalize

    def forward(self, maps: Tensor) -> Tensor:
        """Domain features.

        Args:
            maps: ``(B, in_channels, H/2, W/2)`` concatenated tri-path maps.

        Returns:
            ``(B, dim)`` features.
        """
        out = self.body(maps)
        return F.normalize(out, dim=1) if self.normalize else out


class FHNOutput(NamedTuple):
    """Everything FHN computes for a batch of probes (and, in training, their HR faces)."""

    coarse: Tensor
    """``I_c``, ``(B, 3, H, W)``."""
    sr: Tensor
    """``I_sr``, ``(B, 3, H, W)`` (not clamped)."""
    heatmaps: Tensor
    """``(B, N, H/2, W/2)`` landmark heatmaps predicted from ``I_c``."""
    parsing_logits: Tensor
    """``(B, P, H/2, W/2)`` parsing scores predicted from ``I_c``."""
    maps: Tensor
    """``(B, C_f + N + P, H/2, W/2)`` concatenated tri-path maps of ``I_c``."""
    maps_hr: Tensor | None
    """The same for the real HR faces, or ``None`` when no HR face was given."""


class FaceHallucinationNet(nn.Module):
    """FHN: the prior-aided tri-path generator ``G`` (= ``G_c`` + tri-path) and the mix-adversarial discriminator
    (``D_i`` and ``D_d``), 001 §3.1, Fig. 2.

    Args:
        channels: feature channels of every sub-network.
        feature_channels: output channels of the global feature path.
        blocks: residual blocks per sub-network.
        num_landmarks: landmark heatmaps ``N``.
        num_parsing_classes: parsing classes.
        domain_dim: feature size of ``D_d``.
    """

    def __init__(
        self,
        channels: int = 32,
        feature_channels: int = 32,
        blocks: int = 2,
        num_landmarks: int = 68,
        num_parsing_classes: int = 11,
        domain_dim: int = 64,
    ) -> None:
        super().__init__()
        self.coarse = CoarseSR(channels, blocks)
        self.tripath = TriPathGenerator(channels, feature_channels, num_landmarks, num_parsing_classes, blocks)
        self.integrator = FeatureIntegrator(self.tripath.out_channels, channels, blocks)
        self.domain = DomainDiscriminator(self.tripath.out_channels, channels, domain_dim)

    def generator_parameters(self) -> list[nn.Parameter]:
        """Parameters ``theta_G`` of the generator (coarse SR network and tri-path generator)."""
        return [*self.coarse.parameters(), *self.tripath.parameters()]

    def domain_features(self, out: FHNOutput, detach: bool = False) -> tuple[Tensor, Tensor]:
        """``D_d``'s features of the coarse SR faces' and of the real HR faces' tri-path maps, the two samples of
        Eq. (8).

        Args:
            out: FHN's output for probes and their HR faces (``maps_hr`` set).
            detach: cut the maps from the generator (the discriminator's step, Eq. (6)).

        Returns:
            ``(B, domain_dim)`` features of ``out.maps`` and of ``out.maps_hr``.

        Raises:
            ValueError: if ``out`` holds no HR maps.
        """
        if out.maps_hr is None:
            raise ValueError("domain_features needs FHN's output for the HR faces too: call fhn(lr, hr)")
        maps, maps_hr = (out.maps.detach(), out.maps_hr.detach()) if detach else (out.maps, out.maps_hr)
        return self.domain(maps), self.domain(maps_hr)

    def forward(self, lr: Tensor, hr: Tensor | None = None) -> FHNOutput:
        """Hallucinate HR faces from LR probes; with ``hr``, also run the tri-path generator on the real HR faces.

        Args:
            lr: ``(B, 3, H, W)`` LR probes in ``[0, 1]`` bicubic-upsampled to the HR size (001 §4).
            hr: optional ``(B', 3, H, W)`` real HR faces (for the domain loss).

        Returns:
            :class:`FHNOutput`.
        """
        coarse = self.coarse(lr)
        paths = self.tripath(coarse)
        maps = paths.concat()
        sr = self.integrator(maps, coarse)
        maps_hr = self.tripath(hr).concat() if hr is not None else None
        return FHNOutput(coarse, sr, paths.heatmaps, paths.parsing_logits, maps, maps_hr)
