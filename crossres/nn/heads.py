"""Classification heads that own the class weights: plain softmax, CosFace and ArcFace.

Each head maps ``(embeddings (B, D), labels (B,) | None)`` to logits ``(B, C)``; the cross-entropy stays outside.
With ``labels=None`` (inference) the margin heads return the plain scaled cosines ``s * cos(theta_j)``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["HEADS", "ArcFaceHead", "CosFaceHead", "MarginHead", "SoftmaxHead", "build_head"]

HEADS: tuple[str, ...] = ("softmax", "cosface", "arcface")
"""Names accepted by :func:`build_head`."""

_DEFAULT_MARGIN = {"cosface": 0.35, "arcface": 0.5}


class SoftmaxHead(nn.Module):
    """Plain softmax classifier: an affine layer on the raw embeddings (as Guided-CNN and DCR train).

    Args:
        embedding_size: Dimension ``D`` of the embeddings.
        num_classes: Number of identities ``C``.

    Raises:
        ValueError: If a size is not positive.
    """

    def __init__(self, embedding_size: int, num_classes: int) -> None:
        super().__init__()
        _check_sizes(embedding_size, num_classes)
        self.embedding_size = embedding_size
        self.num_classes = num_classes
        reference = nn.Linear(embedding_size, num_classes)  # PyTorch's default initialisation
        self.weight = nn.Parameter(reference.weight.detach().clone())
        self.bias = nn.Parameter(reference.bias.detach().clone())

    def forward(self, embeddings: Tensor, labels: Tensor | None = None) -> Tensor:
        """Compute the logits ``W x + b``.

        Args:
            embeddings: ``(B, D)`` embeddings.
            labels: Ignored (accepted for a uniform head interface).

        Returns:
            Logits ``(B, C)``.
        """
        return F.linear(embeddings, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"embedding_size={self.embedding_size}, num_classes={self.num_classes}"


class MarginHead(nn.Module):
    """Base of the normalised-softmax heads: logits ``s * cos(theta_j)`` with a margin on the target class.

    ``cos(theta_j) = <x / |x|, W_j / |W_j|>`` is computed in float32 even under autocast. Rows whose label is
    ``-1`` get no margin (insightface's convention for samples without a class in this head).

    Args:
        embedding_size: Dimension ``D`` of the embeddings.
        num_classes: Number of identities ``C``.
        scale: The feature scale ``s``.
        margin: The additive margin ``m``.

    Raises:
        ValueError: If a size or ``scale`` is not positive or ``margin`` is negative.
    """

    def __init__(self, embedding_size: int, num_classes: int, scale: float = 64.0, margin: float = 0.0) -> None:
        super().__init__()
        _check_sizes(embedding_size, num_classes)
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        if margin < 0:
            raise ValueError(f"margin must be non-negative, got {margin}")
        self.embedding_size = embedding_size
        self.num_classes = num_classes
        self.scale = float(scale)
        self.margin = float(margin)
        # insightface's partial_fc initialisation of the class centres.
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size).normal_(0.0, 0.01))

    def cosine(self, embeddings: Tensor) -> Tensor:
        """Return ``cos(theta_j)`` between each embedding and each class centre, shape ``(B, C)``, float32."""
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            return F.linear(F.normalize(embeddings.float()), F.normalize(self.weight.float())).clamp(-1.0, 1.0)

    def target_logit(self, cos_target: Tensor) -> Tensor:
        """Map the target cosines ``cos(theta_y)`` to the margin-penalised value (before scaling)."""
        raise NotImplementedError

    def forward(self, embeddings: Tensor, labels: Tensor | None = None) -> Tensor:
        """Compute the scaled logits.

        Args:
            embeddings: ``(B, D)`` embeddings.
            labels: ``(B,)`` class indices in ``[0, C)`` or ``-1``; ``None`` at inference (no margin).

        Returns:
            Logits ``(B, C)`` in float32.
        """
        cos = self.cosine(embeddings)
        if labels is None:
            return self.scale * cos
        if labels.shape != cos.shape[:1]:
            raise ValueError(f"labels must have shape ({cos.shape[0]},) to match embeddings, got {tuple(labels.shape)}")
        labels = labels.to(cos.device, torch.long)[:, None]
        has_class = labels >= 0  # label -1: no margin
        index = labels.clamp(min=0)
        cos_target = cos.gather(1, index)
        penalised = torch.where(has_class, self.target_logit(cos_target), cos_target)
        return self.scale * cos.scatter(1, index, penalised)

    def extra_repr(self) -> str:
        return (
            f"embedding_size={self.embedding_size}, num_classes={self.num_classes}, "
            f"scale={self.scale}, margin={self.margin}"
        )


class CosFaceHead(MarginHead):
    """CosFace / large margin cosine loss (Wang et al., CVPR 2018): target logit ``s * (cos(theta_y) - m)``.

    Args:
        embedding_size: Dimension ``D`` of the embeddings.
        num_classes: Number of identities ``C``.
        scale: The feature scale ``s``.
        margin: The cosine margin ``m`` (0.35 in the paper).
    """

    def __init__(self, embedding_size: int, num_classes: int, scale: float = 64.0, margin: float = 0.35) -> None:
        super().__init__(embedding_size, num_classes, scale, margin)

    def target_logit(self, cos_target: Tensor) -> Tensor:
        # CosFace Eq. (4): s (cos(theta_y) - m).
        return cos_target - self.margin


class ArcFaceHead(MarginHead):
    """ArcFace / additive angular margin (Deng et al., CVPR 2019): target logit ``s * cos(theta_y + m)``.

    ``cos(theta + m)`` is no longer decreasing in ``theta`` once ``theta + m > pi``; there the head uses
    insightface's (``arcface_torch``, ``easy_margin=False``) fallback ``cos(theta) - m * sin(m)``, which meets
    ``cos(theta + m)`` at ``theta = pi - m`` and keeps the target logit monotone.

    Args:
        embedding_size: Dimension ``D`` of the embeddings.
        num_classes: Number of identities ``C``.
        scale: The feature scale ``s``.
        margin: The angular margin ``m`` in radians (0.5 in the paper).

    Raises:
        ValueError: If ``margin`` is not below ``pi``.
    """

    def __init__(self, embedding_size: int, num_classes: int, scale: float = 64.0, margin: float = 0.5) -> None:
        super().__init__(embedding_size, num_classes, scale, margin)
        if margin >= math.pi:
            raise ValueError(f"margin must be an angle in [0, pi) radians, got {margin}")
        self._cos_m = math.cos(margin)
        self._sin_m = math.sin(margin)
        self._threshold = math.cos(math.pi - margin)

    def target_logit(self, cos_target: Tensor) -> Tensor:
        # ArcFace Eq. (3): s cos(theta_y + m) = s (cos theta cos m - sin theta sin m), for theta_y + m <= pi.
        # The clamp keeps the gradient of sqrt finite at |cos| = 1 (also in the branch torch.where discards).
        sin_target = torch.sqrt((1.0 - cos_target * cos_target).clamp(min=1e-12))
        cos_theta_plus_m = cos_target * self._cos_m - sin_target * self._sin_m
        return torch.where(cos_target > self._threshold, cos_theta_plus_m, cos_target - self.margin * self._sin_m)


def _check_sizes(embedding_size: int, num_classes: int) -> None:
    if embedding_size < 1:
        raise ValueError(f"embedding_size must be positive, got {embedding_size}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")


def build_head(
    name: Literal["softmax", "cosface", "arcface"],
    embedding_size: int,
    num_classes: int,
    scale: float = 64.0,
    margin: float | None = None,
) -> nn.Module:
    """Build a classification head that owns the class weights.

    Args:
        name: ``"softmax"`` (affine layer on raw embeddings), ``"cosface"`` or ``"arcface"``.
        embedding_size: Dimension ``D`` of the embeddings.
        num_classes: Number of identities ``C``.
        scale: Feature scale ``s`` of the margin heads (unused by ``"softmax"``).
        margin: Margin ``m``; ``None`` picks the paper default (CosFace 0.35, ArcFace 0.5). Must be ``None``
            for ``"softmax"``.

    Returns:
        A module with ``forward(embeddings, labels=None) -> logits (B, C)``.

    Raises:
        ValueError: If ``name`` is unknown or a margin is given to the softmax head.
    """
    if name == "softmax":
        if margin is not None:
            raise ValueError(f"head 'softmax' takes no margin, got margin={margin}; use 'cosface' or 'arcface'")
        return SoftmaxHead(embedding_size, num_classes)
    if name not in _DEFAULT_MARGIN:
        raise ValueError(f"unknown head {name!r}: expected one of {', '.join(HEADS)}")
    margin = _DEFAULT_MARGIN[name] if margin is None else margin
    head_class = CosFaceHead if name == "cosface" else ArcFaceHead
    return head_class(embedding_size, num_classes, scale=scale, margin=margin)
