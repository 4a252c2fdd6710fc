"""Octuplet loss fine-tuning (Knoche, Elkadeem, Hörmann, Rigoll, FG 2023)."""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from torch import Tensor

from crossres.data.needs import DataNeeds
from crossres.losses.octuplet import OctupletLoss, Term
from crossres.methods.base import (
    HR_MODEL_PATH,
    CrossResMethod,
    built_pretrained,
    load_pretrained,
    recogniser_backbone,
    retention_loss,
)

__all__ = ["Octuplet"]


class Octuplet(CrossResMethod):
    """A pretrained recogniser fine-tuned with the octuplet loss on HR faces and their degraded copies.

    Paper:
        Octuplet loss: make face recognition robust to image resolution (Knoche et al., FG 2023, arXiv
        2207.06726). Four batch-hard triplet losses, HR-HR, HR-LR, LR-HR and LR-LR (anchor, then positive and
        negative), summed: ``L_oct = T_hhh + T_hll + T_lhh + T_lll``; the recogniser alone is fine-tuned with it (no
        classification loss). Notes, the equation-to-code map and the deviations: ``docs/methods/octuplet.md``.

    Data: every batch needs several images per identity (``data.train_sampler: identity_balanced``,
    ``data.images_per_class`` >= 2, checked at ``setup``) and every LR copy degraded
    (``data.degradation.lr_prob: 1.0``).

    Args:
        backbone: the recogniser: ``iresnet18`` … ``iresnet100`` or a timm model name.
        backbone_kwargs: extra backbone arguments, e.g. ``{"width": 16}``; must match ``recognizer_weights``.
        embedding_size: feature dimension; must match ``recognizer_weights``.
        recognizer_weights: the pretrained recogniser to fine-tune (crossres ``.ckpt`` or insightface
            ``backbone.pth``); ``None`` trains from scratch (not the paper's set-up; a warning says so).
        margin: the triplet margin ``m`` (the authors' code's default, 0.5).
        distance: ``euclidean`` (the authors' code's default), ``euclidean_squared`` or ``cosine``.
        normalize: l2-normalise the embeddings before the distance (crossres scores cosines; the authors' code
            does not normalise).
        terms: the triplet terms to sum, from ``hr_hr``, ``hr_lr``, ``lr_hr``, ``lr_lr`` (``None``: all four, the
            octuplet loss; the authors' code has the same switches).
        retain_weight: ``λ_r`` of the retention term ``λ_r · (1 − cos(M(I_HR), M₀(I_HR)))`` added to ``L_oct``,
            ``M₀`` a frozen copy of the recogniser as the fit starts
            (:class:`~crossres.losses.retention.RetentionLoss`; not in the paper). ``0`` (default): no term.
        **kwargs: optimisation and evaluation arguments of :class:`CrossResMethod`.
    """

    def __init__(
        self,
        backbone: str = "iresnet18",
        backbone_kwargs: dict[str, Any] | None = None,
        embedding_size: int = 512,
        recognizer_weights: str | None = HR_MODEL_PATH,
        margin: float = 0.5,
        distance: Literal["euclidean", "euclidean_squared", "cosine"] = "euclidean",
        normalize: bool = True,
        terms: list[Literal["hr_hr", "hr_lr", "lr_hr", "lr_lr"]] | None = None,
        retain_weight: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if retain_weight < 0:
            raise ValueError(f"model.retain_weight must be >= 0, got {retain_weight}")

    def build(self) -> None:
        hp = self.hparams
        self.backbone = recogniser_backbone(self)
        terms: list[Term] | None = list(hp["terms"]) if hp["terms"] is not None else None
        self.octuplet = OctupletLoss(
            margin=hp["margin"], distance=hp["distance"], normalize=hp["normalize"], terms=terms
        )
        self.retention = retention_loss(self)

    def embed(self, images: Tensor) -> Tensor:
        return self.backbone(images)

    def setup(self, stage: str) -> None:
        super().setup(stage)  # the data needs
        # The paper fine-tunes a pretrained recogniser; a resumed run keeps its own weights.
        if stage != "fit" or self.trainer.ckpt_path is not None:
            return
        pretrained = built_pretrained(self.hparams["backbone_kwargs"])
        if self.hparams["recognizer_weights"] is None and not pretrained:
            warnings.warn(
                "Octuplet: model.recognizer_weights is null, so the recogniser is trained from scratch with the "
                "octuplet loss alone; the paper fine-tunes a pretrained one (model.recognizer_weights="
                f"{HR_MODEL_PATH})",
                stacklevel=2,
            )
            return
        load_pretrained(
            self.backbone, self.hparams["recognizer_weights"], "model.recognizer_weights", built_pretrained=pretrained
        )

    def on_train_start(self) -> None:
        if self.retention is not None and self.trainer.ckpt_path is None and self.global_step == 0:
            self.retention.start_from(self.backbone)  # M₀: the recogniser as the fit starts

    def data_needs(self) -> DataNeeds:
        # Every anchor needs a positive (another image of its identity) in the batch; every LR copy is degraded.
        return DataNeeds(images_per_identity=2, lr_prob=1.0)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        hr, lr, labels = batch["hr"], batch["lr"], batch["label"]
        batch_size = labels.numel()
        # One forward pass over the HR faces and their LR copies, concatenated as the authors' loss takes them.
        embeddings = self.embed(torch.cat([hr, lr]))
        per_term, valid = self.octuplet.per_term(embeddings[:batch_size], embeddings[batch_size:], labels)
        anchors = valid.sum().clamp_min(1)
        for term, losses in per_term.items():
            self.log(f"train_loss_{term}", losses.sum() / anchors, batch_size=batch_size)  # T_AB, mean over anchors
        # L_oct = 1/N Σ_i [T_hhh(i) + T_hll(i) + T_lhh(i) + T_lll(i)], over the anchors with a triplet.
        loss = torch.stack(list(per_term.values())).sum(0).sum() / anchors
        if self.retention is not None:  # retain_weight (not in the paper)
            retain = self.retention(hr, embeddings[:batch_size])
            loss = loss + self.hparams["retain_weight"] * retain
            self.log("train_loss_retain", retain, batch_size=batch_size)
        self.log("train_loss", loss, prog_bar=True, batch_size=batch_size)
        self.log("train_anchor_share", valid.float().mean(), batch_size=batch_size)
        return self.finite_or_none("octuplet", loss)
