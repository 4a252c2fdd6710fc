"""Parts several methods share: nearest-size routing and the backbone + margin-head recogniser."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from crossres.methods.base import CrossResMethod
from crossres.nn.backbones import build_backbone
from crossres.nn.heads import build_head

__all__ = ["RecogniserMethod", "nearest_size_index", "recogniser_backbone"]


def recogniser_backbone(method: CrossResMethod) -> nn.Module:
    """The backbone a method's ``backbone``, ``embedding_size`` and ``backbone_kwargs`` hyper-parameters name.

    Args:
        method: a method with those hyper-parameters (its ``image_size`` is the backbone's input).
    """
    hp = method.hparams
    return build_backbone(
        hp["backbone"],
        embedding_size=hp["embedding_size"],
        image_size=method.image_size,
        **(hp["backbone_kwargs"] or {}),
    )


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


class RecogniserMethod(CrossResMethod):
    """A method whose network is one face recogniser: a backbone and a margin head (Baseline, BatchCR, SiameseCR).

    Args:
        backbone: ``iresnet18`` … ``iresnet100`` (the papers' ResNet-50 is ``iresnet50``) or a timm model name.
        backbone_kwargs: extra backbone arguments, e.g. ``{"width": 16}`` for a small iresnet.
        embedding_size: feature dimension.
        head: classification head: ``softmax``, ``cosface`` or ``arcface``.
        scale: margin heads' logit scale ``s``.
        margin: margin ``m`` (``None``: the head's default, 0.5 ArcFace / 0.35 CosFace).
        **kwargs: optimisation and evaluation arguments of :class:`CrossResMethod`.
    """

    def __init__(
        self,
        backbone: str = "iresnet18",
        backbone_kwargs: dict[str, Any] | None = None,
        embedding_size: int = 512,
        head: Literal["softmax", "cosface", "arcface"] = "arcface",
        scale: float = 64.0,
        margin: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)

    def build(self) -> None:
        hp = self.hparams
        self.backbone = recogniser_backbone(self)
        self.head = build_head(
            hp["head"], hp["embedding_size"], hp["num_classes"], scale=hp["scale"], margin=hp["margin"]
        )

    def embed(self, images: Tensor) -> Tensor:
        return self.backbone(images)
