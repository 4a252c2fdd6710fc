"""Siamese cross-resolution training, ST, ST-M1 and ST-M2 (Knoche et al. 2021, 004 §5.2 and §6.2)."""

from __future__ import annotations

from typing import Any, Literal

import torch.nn.functional as F
from torch import Tensor

from crossres.data.needs import DataNeeds
from crossres.losses.distance import CosineDistanceLoss
from crossres.methods.base import RecogniserMethod

__all__ = ["SiameseCR"]

#: §5.2 weighs the distance loss by 25 with two branches, §6.2 by 3 per LR branch with five.
_DEFAULT_DISTANCE_WEIGHT = {"st": 25.0, "st_m1": 25.0, "st_m2": 3.0}


class SiameseCR(RecogniserMethod):
    """Weight-sharing branches, one per resolution, trained with cross-entropy per branch and a feature distance.

    Paper: Image resolution susceptibility of face recognition models (004), §5.2 and §6.2.
    The paper's notes, the equations-to-code map and the deviations: ``docs/methods/siamese_cr.md``.

    Args:
        mode: ``st`` (HR + one LR size), ``st_m1`` (HR + a per-face LR size) or ``st_m2`` (HR + one branch per
            ``data.degradation.lr_views`` size).
        distance_weight: weight of each distance term; ``None``: 25 for ``st``/``st_m1`` (Eq. (7)), 3 for
            ``st_m2`` (§6.2).
        **kwargs: the recogniser's arguments (:class:`~crossres.methods.base.RecogniserMethod`: backbone, head)
            and the optimisation and evaluation arguments of :class:`CrossResMethod`.
    """

    def __init__(
        self,
        mode: Literal["st", "st_m1", "st_m2"] = "st",
        distance_weight: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)

    def build(self) -> None:
        hp = self.hparams
        if hp["mode"] not in _DEFAULT_DISTANCE_WEIGHT:
            raise ValueError(f"model.mode must be 'st', 'st_m1' or 'st_m2', got {hp['mode']!r}")
        weight = hp["distance_weight"]
        if weight is not None and weight < 0:
            raise ValueError(f"model.distance_weight must be >= 0 (or null for the paper's), got {weight}")
        self.mode: str = hp["mode"]
        self.distance_weight = float(weight) if weight is not None else _DEFAULT_DISTANCE_WEIGHT[self.mode]
        # §5.2: "all branches share their weights": one backbone, one ArcFace layer.
        super().build()  # the recogniser: backbone + margin head
        self.distance = CosineDistanceLoss(reduction="mean")

    def data_needs(self) -> DataNeeds:
        if self.mode == "st_m2":
            return DataNeeds(any_lr_views=True)  # §6.2: one LR branch per view of batch["lr_views"]
        # §5.2 / §6.2: every LR-branch face degraded, at one size (ST) or a size drawn per face (ST-M1).
        return DataNeeds(lr_prob=1.0, several_lr_sizes=self.mode == "st_m1")

    def branches(self, batch: dict[str, Any]) -> list[tuple[str, Tensor]]:
        """The branches' inputs, HR first: ``[("hr", I_HR), ("lr", I_LR)]``, or for ST-M2 one per LR view."""
        if self.mode != "st_m2":
            return [("hr", batch["hr"]), ("lr", batch["lr"])]
        views = batch.get("lr_views") or {}
        if not views:
            raise KeyError(
                "SiameseCR(mode='st_m2') needs batch['lr_views'] (one LR branch per view); set "
                "data.degradation.lr_views: [7, 14, 28, 56]"
            )
        return [("hr", batch["hr"]), *views.items()]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        labels = batch["label"]
        batch_size = labels.numel()
        branches = self.branches(batch)
        # Each branch is the same network M(·) (shared weights), run once per resolution.
        features = {name: self.embed(images) for name, images in branches}
        hr_features = features["hr"]
        total = hr_features.new_zeros(())
        two_branch = self.mode != "st_m2"
        for name, branch_features in features.items():
            cross_entropy = F.cross_entropy(self.head(branch_features, labels), labels)  # L_ce per branch
            total = total + cross_entropy
            self.log(f"train_loss_ce_{name}", cross_entropy, batch_size=batch_size)
            if name == "hr":
                continue
            distance = self.distance(hr_features, branch_features)  # Eq. (6): L_dist, HR vs this LR branch
            total = total + self.distance_weight * distance  # Eq. (7) (ST-M2: §6.2, weight 3 per branch)
            self.log("train_loss_dist" if two_branch else f"train_loss_dist_{name}", distance, batch_size=batch_size)
        if self.retention is not None:  # the HR embeddings held at the starting recogniser's (retain_weight)
            retain = self.retention(batch["hr"], hr_features)
            total = total + self.hparams["retain_weight"] * retain
            self.log("train_loss_retain", retain, batch_size=batch_size)
        self.log("train_loss", total, prog_bar=True, batch_size=batch_size)
        return self.finite_or_none("siamese_cr", total)
