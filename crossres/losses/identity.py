"""The identity-preserving super-resolution loss of IPU-Net (002 §3.2, Eq. 3.1-3.3)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["IdentityPreservingLoss"]


class IdentityPreservingLoss(nn.Module):
    """``L_total = L_embedding + β·L_pixel`` (002 Eq. 3.3).

    ``L_pixel`` (Eq. 3.1) is the mean squared error between the super-resolved and the HR face; ``L_embedding``
    (Eq. 3.2) the mean squared error between their embeddings by a frozen recogniser. The embeddings are computed by
    the caller (with gradient through the recogniser into the generator); with ``normalize=True`` they are
    L2-normalised first, as the FaceNet recogniser of 002 [17] outputs unit-length embeddings.

    Args:
        beta: weight ``β`` of the pixel loss (5 in 002).
        normalize: L2-normalise both embeddings before the MSE.

    Raises:
        ValueError: if ``beta`` is negative.
    """

    def __init__(self, beta: float = 5.0, normalize: bool = True) -> None:
        super().__init__()
        if beta < 0:
            raise ValueError(f"beta (weight of the pixel loss) must be >= 0, got {beta}")
        self.beta = float(beta)
        self.normalize = normalize

    def forward(self, sr: Tensor, hr: Tensor, sr_embedding: Tensor, hr_embedding: Tensor) -> dict[str, Tensor]:
        """Compute Eq. 3.3 and its two terms.

        Args:
            sr: ``(B, C, H, W)`` super-resolved faces.
            hr: ``(B, C, H, W)`` HR faces.
            sr_embedding: ``(B, D)`` recogniser embeddings of ``sr`` (carrying gradient).
            hr_embedding: ``(B, D)`` recogniser embeddings of ``hr`` (the target; detached inside).

        Returns:
            ``{"loss": L_total, "embedding": L_embedding, "pixel": L_pixel}``.

        Raises:
            ValueError: on mismatched shapes.
        """
        if sr.shape != hr.shape:
            raise ValueError(f"sr and hr must have the same shape, got {tuple(sr.shape)} and {tuple(hr.shape)}")
        if sr_embedding.shape != hr_embedding.shape:
            raise ValueError(
                f"embeddings must have the same shape, got {tuple(sr_embedding.shape)} and {tuple(hr_embedding.shape)}"
            )
        target = hr_embedding.detach()
        if self.normalize:
            sr_embedding, target = F.normalize(sr_embedding, dim=1), F.normalize(target, dim=1)
        # Eq. 3.2: L_embedding = mean ||E_SR - E_HR||^2 (MSE over batch and dimensions).
        embedding = F.mse_loss(sr_embedding, target)
        # Eq. 3.1: L_pixel = mean ||F_SR - F_HR||^2 (MSE over batch, channels and pixels).
        pixel = F.mse_loss(sr, hr)
        # Eq. 3.3: L_total = L_embedding + β·L_pixel.
        return {"loss": embedding + self.beta * pixel, "embedding": embedding, "pixel": pixel}

    def extra_repr(self) -> str:
        return f"beta={self.beta}, normalize={self.normalize}"
