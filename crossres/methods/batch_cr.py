"""Cross-resolution batch training, BT-r and BT-M (Knoche et al. 2021, 004 §5.1 and §6.2)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from crossres.data.needs import DataNeeds
from crossres.methods.base import RecogniserMethod

__all__ = ["BatchCR"]


class BatchCR(RecogniserMethod):
    """The baseline recogniser trained on batches that are half HR, half LR.

    Paper: Image resolution susceptibility of face recognition models (004), §5.1 and §6.2.
    The paper's notes, the equations-to-code map and the deviations: ``docs/methods/batch_cr.md``.

    Args:
        **kwargs: the recogniser's arguments (:class:`~crossres.methods.base.RecogniserMethod`: backbone, head)
            and the optimisation and evaluation arguments of :class:`CrossResMethod`.
    """

    def __init__(
        self,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)

    # §5.1: the network is the baseline's, one backbone and an ArcFace layer (RecogniserMethod.build).

    def data_needs(self) -> DataNeeds:
        # §5.1: HR and LR faces within every batch, half of them degraded.
        return DataNeeds(mixed_batches=True, lr_prob=0.5)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        images, labels, lr_size = batch["lr"], batch["label"], batch["lr_size"]
        # §5.1: one cross-entropy (ArcFace) over the mixed batch; batch["lr"] holds the HR half unchanged.
        features = self.embed(images)
        per_sample = F.cross_entropy(self.head(features, labels), labels, reduction="none")
        loss = per_sample.mean()
        hr_size = torch.tensor(self.image_size, device=lr_size.device)
        is_hr = (lr_size == hr_size).all(dim=1)
        batch_size = labels.numel()
        if self.retention is not None and bool(is_hr.any()):  # retain_weight, on the HR half of the batch
            retain = self.retention(images[is_hr], features[is_hr])
            loss = loss + self.hparams["retain_weight"] * retain
            self.log("train_loss_retain", retain, batch_size=int(is_hr.sum()))
        self.log("train_loss", loss, prog_bar=True, batch_size=batch_size)
        for name, members in (("hr", is_hr), ("lr", ~is_hr)):
            if bool(members.any()):
                self.log(f"train_loss_ce_{name}", per_sample[members].mean(), batch_size=int(members.sum()))
        self.log("train_lr_share", (~is_hr).float().mean(), batch_size=batch_size)
        return self.finite_or_none("cross_entropy", loss)
