"""Guided-CNN's cross-domain (feature guidance) loss.

Guided-CNN (000, §2.2) pulls the learner's feature of a degraded face towards the guide's feature of the same face:

    Eq. (2): Lc(Hx, Lx) = ½ ‖f_Hx − f_Lx‖²₂,  with f_Hx and f_Lx l2-normalised.

On unit vectors ``½ ‖a − b‖² = 1 − cos(a, b)``, so the loss lies in ``[0, 2]``.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FeatureGuidanceLoss", "feature_guidance_loss"]

Reduction = Literal["mean", "sum", "none"]


def feature_guidance_loss(
    guide_features: Tensor, learner_features: Tensor, reduction: Reduction = "mean", eps: float = 1e-12
) -> Tensor:
    """Guided-CNN Eq. (2) on a batch of feature pairs.

    Args:
        guide_features: ``(B, D)`` features ``f_H`` of the HR faces from the guide ``CNN_H`` (any scale; they are
            l2-normalised here). Pass them detached when the guide is frozen.
        learner_features: ``(B, D)`` features ``f_L`` of the same faces, degraded, from the learner ``CNN_L``.
        reduction: ``"mean"`` over the batch (the default, what :class:`~crossres.methods.guided_cnn.GuidedCNN`
            uses), ``"sum"`` over the batch, or ``"none"`` for the ``(B,)`` per-pair losses.
        eps: floor of the feature norms in the l2-normalisation.

    Returns:
        ``½ ‖f̂_H − f̂_L‖²`` reduced as asked: a scalar, or ``(B,)`` for ``"none"``.

    Raises:
        ValueError: if the two feature batches differ in shape or are not 2-D, or ``reduction`` is unknown.
    """
    if guide_features.ndim != 2 or guide_features.shape != learner_features.shape:
        raise ValueError(
            "guide_features and learner_features must both be (B, D) with the same shape, got "
            f"{tuple(guide_features.shape)} and {tuple(learner_features.shape)}"
        )
    # Eq. (2): "l2-normalization is performed for both f_Hx and f_Lx".
    guide = F.normalize(guide_features, dim=1, eps=eps)
    learner = F.normalize(learner_features, dim=1, eps=eps)
    per_pair = 0.5 * (guide - learner).pow(2).sum(dim=1)
    if reduction == "mean":
        return per_pair.mean()
    if reduction == "sum":
        return per_pair.sum()
    if reduction == "none":
        return per_pair
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


class FeatureGuidanceLoss(nn.Module):
    """Guided-CNN's cross-domain loss ``Lc`` (000, Eq. (2)), averaged over the batch by default.

    Args:
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` over the batch.
        eps: floor of the feature norms in the l2-normalisation.

    Raises:
        ValueError: for an unknown ``reduction``.
    """

    def __init__(self, reduction: Reduction = "mean", eps: float = 1e-12) -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.reduction: Reduction = reduction
        self.eps = eps

    def forward(self, guide_features: Tensor, learner_features: Tensor) -> Tensor:
        """Compute ``Lc(Hx, Lx)``; see :func:`feature_guidance_loss`."""
        return feature_guidance_loss(guide_features, learner_features, self.reduction, self.eps)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"
