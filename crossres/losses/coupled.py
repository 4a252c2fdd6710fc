"""The coupled-mapping (CM) loss of DCR (003 Eq. (5)) that trains one pair of branch networks."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from crossres.losses.center import CenterLoss

__all__ = ["CoupledMappingLoss"]


class CoupledMappingLoss(nn.Module):
    """``L_CM = Ls + λ·Lc + α·Le`` (003 Eq. (5)) for HR branch features ``x`` and LR branch features ``z``.

    * Eq. (2) ``Ls``: softmax loss of the HR branch (classifier ``U, b``) plus that of the LR branch (``V, a``);
    * Eq. (3) ``Lc``: center loss of ``x`` (centres ``c^x``) plus center loss of ``z`` (centres ``c^z``);
    * Eq. (4) ``Le``: ``||x_i - z_i||^2``, the distance between an HR feature and its own LR counterpart.

    The paper writes each term as a sum over the ``m`` training pairs; every term here is the batch mean of the same
    summands (each of Eq. (2)'s two softmax terms and each of Eq. (3)'s two center terms averaged separately, then
    added), so the whole loss is Eq. (5) divided by ``m``. The centres are buffers moved by Wen et al.'s rule
    (:class:`~crossres.losses.center.CenterLoss`); call :meth:`update_centers` after the loss.

    Args:
        num_classes: training identities ``n``.
        feature_size: dimension of ``x`` and ``z``.
        center_weight: ``λ`` (0.008 in 003).
        euclidean_weight: ``α`` (0.008 in 003).
        center_alpha: learning rate of the centres in Wen et al.'s update rule.

    Raises:
        ValueError: if a weight is negative.
    """

    def __init__(
        self,
        num_classes: int,
        feature_size: int,
        center_weight: float = 0.008,
        euclidean_weight: float = 0.008,
        center_alpha: float = 0.5,
    ) -> None:
        super().__init__()
        if center_weight < 0 or euclidean_weight < 0:
            raise ValueError(f"λ and α must be >= 0, got center_weight={center_weight}, {euclidean_weight=}")
        self.center_weight = float(center_weight)
        self.euclidean_weight = float(euclidean_weight)
        self.center_hr = CenterLoss(num_classes, feature_size, alpha=center_alpha)
        self.center_lr = CenterLoss(num_classes, feature_size, alpha=center_alpha)

    def forward(self, x: Tensor, z: Tensor, logits_x: Tensor, logits_z: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Compute Eq. (5) and its terms.

        Args:
            x: ``(B, D)`` HR branch features of the HR images.
            z: ``(B, D)`` LR branch features of the LR images of the same faces (row ``i`` pairs with ``x_i``).
            logits_x: ``(B, n)`` HR branch logits ``U^T x + b``.
            logits_z: ``(B, n)`` LR branch logits ``V^T z + a``.
            labels: ``(B,)`` identities.

        Returns:
            ``{"loss": L_CM, "softmax": Ls, "center": Lc, "euclidean": Le}`` (batch means).

        Raises:
            ValueError: if ``x`` and ``z`` differ in shape.
        """
        if x.shape != z.shape:
            raise ValueError(f"x and z must have the same shape (paired HR/LR features), got {x.shape} and {z.shape}")
        # Eq. (2): softmax loss of the HR branch + that of the LR branch.
        softmax = F.cross_entropy(logits_x, labels) + F.cross_entropy(logits_z, labels)
        # Eq. (3): center loss of x (centres c^x) + center loss of z (centres c^z).
        center = self.center_hr(x, labels) + self.center_lr(z, labels)
        # Eq. (4): ||x_i - z_i||_2^2.
        euclidean = (x - z).pow(2).sum(dim=1).mean()
        # Eq. (5): L_CM = Ls + λ·Lc + α·Le.
        loss = softmax + self.center_weight * center + self.euclidean_weight * euclidean
        return {"loss": loss, "softmax": softmax, "center": center, "euclidean": euclidean}

    def update_centers(self, x: Tensor, z: Tensor, labels: Tensor) -> None:
        """Move ``c^x`` and ``c^z`` by Wen et al.'s rule with this batch (after computing the loss)."""
        self.center_hr.update(x, labels)
        self.center_lr.update(z, labels)

    def extra_repr(self) -> str:
        return f"center_weight={self.center_weight}, euclidean_weight={self.euclidean_weight}"
