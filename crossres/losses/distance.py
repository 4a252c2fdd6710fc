"""Knoche et al.'s feature distance loss of the siamese cross-resolution training (ST).

004, §5.2 penalises the cosine distance between the features of the same face in two resolutions:

    Eq. (6): L_dist = 1 − cos(M(I_HR), M(I_LR)),

``M`` being the (shared) recognition network. The extracted Eq. (6) is garbled (it normalises ``M(I_HR)`` by
``‖M(I_LR)‖²`` twice); we implement the cosine distance of the verification score, Eq. (2), with each feature divided
by its own norm, which is what the text describes ("penalizes the cosine distance between both features"). Eq. (2)
also prints ``‖·‖²`` in the denominators; with a squared norm the "distance" would not be one, so plain norms are used.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CosineDistanceLoss", "cosine_distance_loss"]

Reduction = Literal["mean", "sum", "none"]


def cosine_distance_loss(
    hr_features: Tensor, lr_features: Tensor, reduction: Reduction = "mean", eps: float = 1e-12
) -> Tensor:
    """Knoche et al. Eq. (6) (cosine distance as in their Eq. (2)) between paired features.

    Args:
        hr_features: ``(B, D)`` features ``M(I_HR)`` of the HR branch.
        lr_features: ``(B, D)`` features ``M(I_LR)`` of the same faces from an LR branch.
        reduction: ``"mean"`` over the batch (default), ``"sum"``, or ``"none"`` for the ``(B,)`` distances.
        eps: floor of the feature norms.

    Returns:
        ``1 − cos(M(I_HR), M(I_LR))`` reduced as asked; each distance lies in ``[0, 2]``.

    Raises:
        ValueError: if the two feature batches differ in shape or are not 2-D, or ``reduction`` is unknown.
    """
    if hr_features.ndim != 2 or hr_features.shape != lr_features.shape:
        raise ValueError(
            "hr_features and lr_features must both be (B, D) with the same shape, got "
            f"{tuple(hr_features.shape)} and {tuple(lr_features.shape)}"
        )
    # Eq. (6) / Eq. (2): d = 1 − Σ (M(I_1)/‖M(I_1)‖ ⊙ M(I_2)/‖M(I_2)‖).
    hr = F.normalize(hr_features, dim=1, eps=eps)
    lr = F.normalize(lr_features, dim=1, eps=eps)
    per_pair = 1.0 - (hr * lr).sum(dim=1)
    if reduction == "mean":
        return per_pair.mean()
    if reduction == "sum":
        return per_pair.sum()
    if reduction == "none":
        return per_pair
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


class CosineDistanceLoss(nn.Module):
    """Knoche et al.'s ``L_dist`` (004, Eq. (6)), averaged over the batch by default.

    Gradients flow into both arguments: in the siamese training both branches are the same network.

    Args:
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` over the batch.
        eps: floor of the feature norms.

    Raises:
        ValueError: for an unknown ``reduction``.
    """

    def __init__(self, reduction: Reduction = "mean", eps: float = 1e-12) -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        self.reduction: Reduction = reduction
        self.eps = eps

    def forward(self, hr_features: Tensor, lr_features: Tensor) -> Tensor:
        """Compute ``L_dist``; see :func:`cosine_distance_loss`."""
        return cosine_distance_loss(hr_features, lr_features, self.reduction, self.eps)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"
