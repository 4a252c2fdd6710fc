"""Center loss (Wen et al., ECCV 2016), as DCR uses it for the trunk (003 Eq. (1)) and the branches (Eq. (3)).

The class centres are a buffer, not a parameter: they are moved by Wen et al.'s update rule (their Eq. (4) and
Algorithm 1), ``c_j <- c_j - alpha * delta_c_j`` with
``delta_c_j = sum_{i: y_i = j} (c_j - v_i) / (1 + #{i: y_i = j})``, computed on the mini-batch and applied by
:meth:`CenterLoss.update` after the loss; the loss has no gradient with respect to the centres.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["CenterLoss"]


class CenterLoss(nn.Module):
    """``mean_i ||v_i - c_{y_i}||^2`` with centres kept by Wen et al.'s update rule.

    003 Eq. (1) and Eq. (3) write the sum over the batch without Wen et al.'s factor 1/2; this module returns the
    batch mean of the same terms (as the softmax term is averaged), so ``sum = mean * B``.

    Args:
        num_classes: number of classes (one centre each).
        feature_size: dimension of the features.
        alpha: learning rate of the centres in the update rule (Wen et al. use 0.5); 0 freezes them.

    Raises:
        ValueError: if a size is not positive or ``alpha`` is outside ``[0, 1]``.
    """

    centers: Tensor

    def __init__(self, num_classes: int, feature_size: int, alpha: float = 0.5) -> None:
        super().__init__()
        if num_classes < 1 or feature_size < 1:
            raise ValueError(f"num_classes and feature_size must be positive, got {num_classes}, {feature_size}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha (the centres' learning rate) must be in [0, 1], got {alpha}")
        self.num_classes = num_classes
        self.feature_size = feature_size
        self.alpha = float(alpha)
        # Wen et al. initialise the centres at zero (Algorithm 1: "initialized {c_j | j = 1, ..., n}").
        self.register_buffer("centers", torch.zeros(num_classes, feature_size))

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        """Compute the center loss.

        Args:
            features: ``(B, D)`` features (``v``, ``x`` or ``z`` of 003).
            labels: ``(B,)`` class indices.

        Returns:
            Scalar ``mean_i ||features_i - c_{labels_i}||^2``.

        Raises:
            ValueError: on mismatched shapes.
        """
        self._check(features, labels)
        centers = self.centers.index_select(0, labels.long()).to(features.dtype)
        # 003 Eq. (1): ||v_i - c_{y_i}||_2^2 (Eq. (3): the same for x and z with their own centres).
        return (features - centers).pow(2).sum(dim=1).mean()

    @torch.no_grad()
    def update(self, features: Tensor, labels: Tensor) -> None:
        """Move the centres by Wen et al.'s rule (their Eq. (4)) using this batch; gathered over DDP ranks.

        Args:
            features: ``(B, D)`` features (detached inside).
            labels: ``(B,)`` class indices.
        """
        self._check(features, labels)
        if self.alpha == 0.0:
            return
        features, labels = features.detach().to(self.centers.dtype), labels.long()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            features, labels = _gather(features), _gather(labels)
        # delta_c_j = sum_{i: y_i = j} (c_j - v_i) / (1 + n_j)
        diff = self.centers.index_select(0, labels) - features
        delta = torch.zeros_like(self.centers).index_add_(0, labels, diff)
        counts = torch.zeros(self.num_classes, device=labels.device, dtype=self.centers.dtype)
        counts.index_add_(0, labels, torch.ones_like(labels, dtype=self.centers.dtype))
        self.centers.sub_(self.alpha * delta / (1.0 + counts).unsqueeze(1))

    def _check(self, features: Tensor, labels: Tensor) -> None:
        if features.ndim != 2 or features.shape[1] != self.feature_size:
            raise ValueError(f"features must have shape (B, {self.feature_size}), got {tuple(features.shape)}")
        if labels.shape != features.shape[:1]:
            raise ValueError(f"labels must have shape ({features.shape[0]},), got {tuple(labels.shape)}")

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, feature_size={self.feature_size}, alpha={self.alpha}"


def _gather(tensor: Tensor) -> Tensor:
    # Every rank applies the same update, so the centres stay identical without a broadcast.
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)
