"""Parts several methods share: nearest-size routing."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["nearest_size_index"]


def nearest_size_index(lr_size: Tensor, sizes: list[int]) -> Tensor:
    """Index of the size in ``sizes`` nearest each probe's height; of equal gaps, the first listed.

    Args:
        lr_size: ``(B, 2)`` ``(h, w)`` of the probes.
        sizes: the LR sizes (px) of the networks to route to (branch pairs, learners).

    Returns:
        Long ``(B,)`` indices into ``sizes``.
    """
    heights = lr_size.reshape(-1, 2)[:, 0].to(torch.long)
    candidates = torch.tensor(sizes, device=heights.device)
    return (heights[:, None] - candidates[None, :]).abs().argmin(dim=1)  # argmin keeps the first of equal gaps
