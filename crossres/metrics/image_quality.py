"""Super-resolution image quality: thin wrappers over torchmetrics' PSNR and SSIM for images in ``[0, 1]``.

PSNR is computed per image (``dim=(1, 2, 3)``) and averaged over the batch, the usual convention of SR tables
(IPU-Net, RIM); torchmetrics' own default pools the MSE of the whole batch instead.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torchmetrics import image as tm_image
from torchmetrics.functional import image as tm_functional

__all__ = ["psnr", "ssim", "PeakSignalNoiseRatio", "SRQuality", "StructuralSimilarityIndexMeasure"]

_PER_IMAGE = (1, 2, 3)


def psnr(sr: Tensor, hr: Tensor) -> Tensor:
    """Mean per-image PSNR in dB of ``(B, C, H, W)`` images in ``[0, 1]``.

    Args:
        sr: super-resolved (or degraded) images.
        hr: reference images, same shape.

    Returns:
        Scalar tensor; ``inf`` when every image equals its reference.
    """
    return tm_functional.peak_signal_noise_ratio(sr, hr, data_range=1.0, dim=_PER_IMAGE)


def ssim(sr: Tensor, hr: Tensor) -> Tensor:
    """Mean SSIM (Gaussian window 11, sigma 1.5) of ``(B, C, H, W)`` images in ``[0, 1]``.

    Args:
        sr: super-resolved (or degraded) images.
        hr: reference images, same shape.

    Returns:
        Scalar tensor, 1 for identical images.
    """
    result = tm_functional.structural_similarity_index_measure(sr, hr, data_range=1.0)
    assert isinstance(result, Tensor)  # a tuple only with return_full_image/return_contrast_sensitivity
    return result


class PeakSignalNoiseRatio(tm_image.PeakSignalNoiseRatio):
    """torchmetrics ``PeakSignalNoiseRatio`` for ``[0, 1]`` images, per-image PSNR averaged as :func:`psnr`.

    Args:
        data_range: value range of the images.
        dim: dimensions reduced into one PSNR (``None`` pools the whole batch).
        **kwargs: forwarded to torchmetrics.
    """

    def __init__(self, data_range: float = 1.0, dim: tuple[int, ...] | None = _PER_IMAGE, **kwargs: Any) -> None:
        super().__init__(data_range=data_range, dim=dim, **kwargs)


class StructuralSimilarityIndexMeasure(tm_image.StructuralSimilarityIndexMeasure):
    """torchmetrics ``StructuralSimilarityIndexMeasure`` for ``[0, 1]`` images.

    Args:
        data_range: value range of the images.
        **kwargs: forwarded to torchmetrics.
    """

    def __init__(self, data_range: float = 1.0, **kwargs: Any) -> None:
        super().__init__(data_range=data_range, **kwargs)


class SRQuality(nn.Module):
    """PSNR and SSIM of super-resolved faces (and of any other version of them) against the HR faces, per protocol.

    One metric per split, protocol and measure, made on first use; :meth:`compute` reads and resets a split's.
    """

    def __init__(self) -> None:
        super().__init__()
        self.metrics = nn.ModuleDict()

    def update(self, split: str, protocol: str, images: dict[str, Tensor], hr: Tensor) -> None:
        """Add a batch.

        Args:
            split: ``val`` or ``test``.
            protocol: the evaluation protocol (e.g. ``14px``).
            images: named versions of the faces (e.g. ``{"sr": ..., "bicubic": ...}``) in ``[0, 1]``.
            hr: the HR faces.
        """
        for kind, image in images.items():
            for measure in ("psnr", "ssim"):
                key = f"{split}__{protocol}__{measure}_{kind}"
                if key not in self.metrics:
                    metric = PeakSignalNoiseRatio() if measure == "psnr" else StructuralSimilarityIndexMeasure()
                    self.metrics[key] = metric.to(hr.device)
                self.metrics[key].update(image, hr)  # type: ignore[operator]

    def compute(self, split: str) -> dict[str, dict[str, float]]:
        """``{protocol: {"psnr_sr": ..., "ssim_sr": ..., ...}}`` of ``split``'s updates since the last call."""
        protocols: dict[str, dict[str, float]] = {}
        for key, metric in self.metrics.items():
            own_split, protocol, kind = key.split("__")
            if own_split != split or metric.update_count == 0:  # type: ignore[operator]
                continue
            protocols.setdefault(protocol, {})[kind] = float(metric.compute())  # type: ignore[operator]
            metric.reset()  # type: ignore[operator]
        return protocols
