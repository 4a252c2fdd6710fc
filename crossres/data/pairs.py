"""Verification pair sets: images stored once, pairs as index tuples."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["ImageSource", "PairSet", "PairDataset"]

#: Anything indexable that returns a ``uint8`` image tensor of shape ``(3, H, W)``.
ImageSource = Sequence[Tensor] | Callable[[int], Tensor]


@dataclass
class PairSet:
    """A named verification pair set (LFW-style).

    Args:
        name: short name used in metric keys, e.g. ``"lfw"``.
        images: indexable source of ``uint8`` ``(3, H, W)`` image tensors.
        pairs: ``(P, 2)`` long tensor of indices into ``images``.
        issame: ``(P,)`` bool tensor, ``True`` for same-identity pairs.
    """

    name: str
    images: Sequence[Tensor]
    pairs: Tensor
    issame: Tensor

    def __post_init__(self) -> None:
        self.pairs = torch.as_tensor(self.pairs, dtype=torch.long)
        self.issame = torch.as_tensor(self.issame, dtype=torch.bool)
        if self.pairs.ndim != 2 or self.pairs.shape[1] != 2:
            raise ValueError(f"pair set {self.name!r}: pairs must have shape (P, 2), got {tuple(self.pairs.shape)}")
        if self.issame.shape != (self.pairs.shape[0],):
            raise ValueError(
                f"pair set {self.name!r}: issame has {self.issame.numel()} entries for {self.pairs.shape[0]} pairs"
            )

    def __len__(self) -> int:
        return int(self.pairs.shape[0])


class PairDataset(Dataset):
    """Yields one verification pair per item, with its LR size under each protocol.

    Args:
        pair_set: the pairs and their images.
        protocols: protocol name -> ``(P, 2)`` long tensor of per-pair LR sizes ``(h, w)``.
    """

    def __init__(self, pair_set: PairSet, protocols: dict[str, Tensor]) -> None:
        self.pair_set = pair_set
        self.protocols = protocols
        for name, sizes in protocols.items():
            if sizes.shape != (len(pair_set), 2):
                raise ValueError(
                    f"protocol {name!r} has sizes of shape {tuple(sizes.shape)}, expected ({len(pair_set)}, 2) "
                    f"for pair set {pair_set.name!r}"
                )

    def __len__(self) -> int:
        return len(self.pair_set)

    def __getitem__(self, index: int) -> dict:
        i, j = self.pair_set.pairs[index].tolist()
        return {
            "image1": self.pair_set.images[i],
            "image2": self.pair_set.images[j],
            "issame": self.pair_set.issame[index],
            "pair_id": index,
            "lr_size": {name: sizes[index] for name, sizes in self.protocols.items()},
        }
