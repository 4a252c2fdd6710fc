"""Face hallucination losses of RIM's FHN (001, §3.1.1): pixel, landmark-heatmap and parsing losses, Eqs. (2)-(4),
and the generator's objective that weighs them with the domain loss, Eq. (1).

Every loss has two reductions: ``"sum"`` is the paper's formula for one image (sums over pixels), averaged over the
batch; ``"mean"`` also averages over pixels (and channels/landmarks), which only rescales the loss by a constant and
keeps the weights ``lambda_k`` of Eq. (1) independent of the image size.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["HallucinationLoss", "LandmarkHeatmapLoss", "ParsingLoss", "PixelLoss"]

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


class HallucinationLoss(nn.Module):
    """Eq. (1): the generator's objective ``L_G = L_domain + λ0 L_pixel + λ1 L_landmark + λ2 L_parsing``.

    ``L_domain`` is the MK-MMD between the tri-path maps of the coarse SR and of the real HR faces (Eqs. (7)-(9),
    :class:`~crossres.losses.mmd.MKMMD`), measured on the domain discriminator's features and passed in; the
    other terms are Eqs. (2)-(4). ``lambda_domain`` is not in the paper, which weighs ``L_domain`` by 1.

    Args:
        reduction: reduction of Eqs. (2)-(4) (see :class:`PixelLoss`).
        lambda_domain: weight of ``L_domain``.
        lambda_pixel: ``λ0``.
        lambda_landmark: ``λ1``.
        lambda_parsing: ``λ2``.

    Raises:
        ValueError: on an unknown ``reduction`` or a negative weight.
    """

    def __init__(
        self,
        reduction: Reduction = "mean",
        lambda_domain: float = 1.0,
        lambda_pixel: float = 1.0,
        lambda_landmark: float = 1.0,
        lambda_parsing: float = 1.0,
    ) -> None:
        super().__init__()
        weights = {
            "domain": lambda_domain,
            "pixel": lambda_pixel,
            "landmark": lambda_landmark,
            "parsing": lambda_parsing,
        }
        for name, weight in weights.items():
            if weight < 0:
                raise ValueError(f"lambda_{name} must be >= 0, got {weight}")
        self.weights = weights
        self.pixel = PixelLoss(reduction)
        self.landmark = LandmarkHeatmapLoss(reduction)
        self.parsing = ParsingLoss(reduction)

    def forward(
        self,
        domain: Tensor,
        sr: Tensor,
        hr: Tensor,
        priors: tuple[Tensor, Tensor, Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The objective and its terms.

        Args:
            domain: ``L_domain``, the scalar MK-MMD of Eq. (7).
            sr: ``(B, 3, H, W)`` super-resolved faces ``I_sr``.
            hr: ``(B, 3, H, W)`` ground-truth HR faces.
            priors: ``(heatmaps, heatmap_targets, parsing_logits, parsing_labels)`` for Eqs. (3)-(4) (see
                :class:`LandmarkHeatmapLoss`, :class:`ParsingLoss`); ``None`` leaves both terms out.

        Returns:
            ``L_G`` and its unweighted terms ``{"mmd", "pixel"[, "landmark", "parsing"]}``.
        """
        w = self.weights
        terms = {"mmd": domain, "pixel": self.pixel(sr, hr)}  # Eqs. (7), (2)
        if priors is not None:
            heatmaps, heatmap_targets, parsing_logits, parsing_labels = priors
            terms["landmark"] = self.landmark(heatmaps, heatmap_targets)  # Eq. (3)
            terms["parsing"] = self.parsing(parsing_logits, parsing_labels)  # Eq. (4)
        total = w["domain"] * terms["mmd"] + w["pixel"] * terms["pixel"]
        if priors is not None:
            total = total + w["landmark"] * terms["landmark"]
            total = total + w["parsing"] * terms["parsing"]
        return total, terms
