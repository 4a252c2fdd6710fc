"""The plain recogniser every cross-resolution paper compares against."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from crossres.methods.base import RecogniserMethod
from crossres.nn.weights import load_backbone_weights

__all__ = ["Baseline"]


class Baseline(RecogniserMethod):
    """A backbone + margin head trained on HR faces, LR faces, or both.

    Paper: Knoche et al. 2021 (004) §3.1; the fine-tuned baseline [12] of Guided-CNN (000).
    The paper's notes, the equations-to-code map and the deviations: ``docs/methods/baseline.md``.

    Args:
        train_on: ``hr`` (the HR baseline), ``lr`` (LR faces at the data module's sizes) or ``mixed``.
        finetune_from: checkpoint (crossres ``.ckpt`` or insightface ``backbone.pth``) whose backbone (and,
            for a crossres checkpoint of the same classes, head) initialise this model before ``fit``.
        **kwargs: the recogniser's arguments (:class:`~crossres.methods.base.RecogniserMethod`: backbone, head)
            and the optimisation and evaluation arguments of :class:`CrossResMethod`.
    """

    def __init__(
        self,
        train_on: Literal["hr", "lr", "mixed"] = "hr",
        finetune_from: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)

    def build(self) -> None:
        hp = self.hparams
        if hp["train_on"] not in ("hr", "lr", "mixed"):
            raise ValueError(f"model.train_on must be 'hr', 'lr' or 'mixed', got {hp['train_on']!r}")
        if hp["retain_weight"] > 0 and hp["train_on"] == "lr":
            raise ValueError("model.retain_weight holds the HR embeddings: it needs model.train_on 'hr' or 'mixed'")
        super().build()  # the recogniser: backbone + margin head

    def on_fit_start(self) -> None:
        # Staged fine-tuning [12]: start from the HR model, but a resumed run keeps its own weights.
        if self.hparams["finetune_from"] and self.trainer.ckpt_path is None:
            load_backbone_weights(self.backbone, self.hparams["finetune_from"])

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        train_on = self.hparams["train_on"]
        labels = batch["label"]
        if train_on == "hr":
            images = batch["hr"]
        elif train_on == "lr":
            images = batch["lr"]
        else:
            images, labels = torch.cat([batch["hr"], batch["lr"]]), torch.cat([labels, labels])
        features = self.embed(images)
        loss = F.cross_entropy(self.head(features, labels), labels)
        if self.retention is not None:  # retain_weight, on the HR faces (the first half of a mixed batch)
            hr = len(batch["hr"])
            retain = self.retention(images[:hr], features[:hr])
            loss = loss + self.hparams["retain_weight"] * retain
            self.log("train_loss_retain", retain, batch_size=hr)
        self.log("train_loss", loss, prog_bar=True, batch_size=labels.numel())
        return self.finite_or_none("cross_entropy", loss)
