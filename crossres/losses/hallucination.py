"""Face hallucination losses of RIM's FHN (001, §3.1.1): pixel, landmark-heatmap and parsing losses, Eqs. (2)-(4).

Every loss has two reductions: ``"sum"`` is the paper's formula for one image (sums over pixels), averaged over the
batch; ``"mean"`` also averages over pixels (and channels/landmarks), which only rescales the loss by a constant and
keeps the weights ``lambda_k`` of Eq. (1) independent of the image size.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LandmarkHeatmapLoss", "ParsingLoss", "PixelLoss"]

Reduction = Literal["mean", "sum"]


def _check_reduction(reduction: str) -> None:
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


def _check_same_shape(a: Tensor, b: Tensor, what: str) -> None:
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(
            f"{what}: prediction and target must both be (B, C, H, W), got {tuple(a.shape)} and {tuple(b.shape)}"
        )


class PixelLoss(nn.Module):
    """Eq. (2): ``L_pixel = sum_{i,j} (I_sr(i,j) - I_hr(i,j))^2`` (also Eq. (5), the feature integrator's loss).

    Args:
        reduction: ``"sum"`` over pixels and colour channels per image, averaged over the batch (the paper's
            formula), or ``"mean"`` over every element (the mean squared error).

    Raises:
        ValueError: on an unknown ``reduction``.
    """

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        _check_reduction(reduction)
        self.reduction = reduction

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        """Pixel loss between super-resolved ``sr`` and ground-truth ``hr``, both ``(B, 3, H, W)``.

        Args:
            sr: super-resolved faces.
            hr: ground-truth HR faces.

        Returns:
            Scalar loss.

        Raises:
            ValueError: if the shapes differ.
        """
        _check_same_shape(sr, hr, "PixelLoss")
        squared = (sr - hr).pow(2)
        return squared.mean() if self.reduction == "mean" else squared.sum(dim=(1, 2, 3)).mean()


class LandmarkHeatmapLoss(nn.Module):
    """Eq. (3): ``L_landmark = 1/N sum_n sum_{i,j} (H_sr^n(i,j) - H_hr^n(i,j))^2`` over N landmark heatmaps.

    Args:
        reduction: ``"sum"`` over pixels, averaged over the ``N`` landmarks and the batch (the paper's formula), or
            ``"mean"`` over every element.

    Raises:
        ValueError: on an unknown ``reduction``.
    """

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        _check_reduction(reduction)
        self.reduction = reduction

    def forward(self, predicted: Tensor, target: Tensor) -> Tensor:
        """Heatmap loss.

        Args:
            predicted: ``(B, N, H, W)`` heatmaps regressed by the landmark path.
            target: ``(B, N, H, W)`` ground-truth Gaussian heatmaps
                (:func:`crossres.data.priors.landmarks_to_heatmaps`).

        Returns:
            Scalar loss.

        Raises:
            ValueError: if the shapes differ.
        """
        _check_same_shape(predicted, target, "LandmarkHeatmapLoss")
        squared = (predicted - target).pow(2)
        return squared.mean() if self.reduction == "mean" else squared.sum(dim=(2, 3)).mean()


class ParsingLoss(nn.Module):
    """Eq. (4): pixel-wise cross-entropy between predicted parsing probabilities and one-hot parsing labels.

    Eq. (4) writes the loss of one pixel as ``-1/C sum_c y_c log(y~_c)``, i.e. the cross-entropy divided by the
    number of classes ``C``.

    Args:
        reduction: ``"sum"``: the paper's per-pixel term ``-1/C sum_c y_c log y~_c`` summed over pixels, averaged
            over the batch; ``"mean"``: the usual cross-entropy averaged over pixels and batch (no ``1/C``).

    Raises:
        ValueError: on an unknown ``reduction``.
    """

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        _check_reduction(reduction)
        self.reduction = reduction

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Parsing loss.

        Args:
            logits: ``(B, C, H, W)`` class scores of the parsing path (``y~ = softmax(logits)``).
            labels: ``(B, H, W)`` int64 class indices (:data:`crossres.data.priors.PARSING_CLASSES`).

        Returns:
            Scalar loss.

        Raises:
            ValueError: if the shapes do not fit.
        """
        if logits.ndim != 4 or labels.shape != (logits.shape[0], *logits.shape[2:]):
            raise ValueError(
                f"ParsingLoss: logits must be (B, C, H, W) and labels (B, H, W), got {tuple(logits.shape)} and "
                f"{tuple(labels.shape)}"
            )
        if self.reduction == "mean":
            return F.cross_entropy(logits, labels)
        per_pixel = F.cross_entropy(logits, labels, reduction="none") / logits.shape[1]
        return per_pixel.sum(dim=(1, 2)).mean()
