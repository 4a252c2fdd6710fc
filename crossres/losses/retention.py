"""Retention of a pretrained recogniser's embeddings while it is fine-tuned.

``L_r = 1 − cos(M(I), M₀(I))``, averaged over the batch: ``M`` the recogniser being fine-tuned, ``M₀`` a frozen copy
of it as fine-tuning starts, ``I`` HR faces. Feature distillation from the network's own starting point, as in
learning without forgetting (Li & Hoiem, TPAMI 2018): fine-tuning for LR faces then leaves the HR embeddings, and so
HR-HR matching, where they were.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from crossres.losses.distance import cosine_distance_loss

__all__ = ["RetentionLoss"]


class RetentionLoss(nn.Module):
    """``L_r = 1 − cos(M(I), M₀(I))``, the mean over the batch.

    Args:
        reference: ``M₀``, a network of the fine-tuned one's architecture, frozen by the caller; :meth:`start_from`
            copies the fine-tuned network's weights into it when fine-tuning starts.
    """

    def __init__(self, reference: nn.Module) -> None:
        super().__init__()
        self.reference = reference

    @torch.no_grad()
    def start_from(self, network: nn.Module) -> None:
        """Set ``M₀`` to the current weights of ``network`` (the recogniser about to be fine-tuned)."""
        self.reference.load_state_dict(network.state_dict())

    def forward(self, images: Tensor, features: Tensor) -> Tensor:
        """Compute ``L_r``.

        Args:
            images: ``(B, 3, H, W)`` the faces ``I``.
            features: ``(B, D)`` their embeddings ``M(I)`` by the network being fine-tuned.
        """
        with torch.no_grad():
            target = self.reference(images)
        return cosine_distance_loss(target.float(), features.float())
