"""Guided-CNN (000): a frozen HR guide ``CNN_H`` and a learner ``CNN_L`` for degraded faces."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossres.data.needs import DataNeeds
from crossres.losses.guidance import FeatureGuidanceLoss
from crossres.methods.base import (
    HR_MODEL_PATH,
    CrossResMethod,
    built_pretrained,
    freeze,
    load_pretrained,
    nearest_size_index,
)
from crossres.nn.backbones import build_backbone
from crossres.nn.heads import build_head
from crossres.transforms.functional import occlusion_mask, resolve_size

__all__ = ["GuidedCNN"]

# Base seed of the evaluation occlusions: image k (0 or 1) of pair p is occluded with seed _OCCLUSION_SEED + 2p + k.
_OCCLUSION_SEED = 20_170_000


class GuidedCNN(CrossResMethod):
    """A frozen guide ``CNN_H`` for HR faces and a learner ``CNN_L`` of the same architecture for LR faces.

    Paper: Guided Convolutional Neural Network for cross-resolution face recognition (000).
    The paper's notes, the equations-to-code map and the deviations: ``docs/methods/guided_cnn.md``.

    Args:
        backbone: architecture of both sub-CNNs: ``iresnet18`` … ``iresnet100`` or a timm model name.
        backbone_kwargs: extra backbone arguments, e.g. ``{"width": 16}``; must match the guide's checkpoint.
        embedding_size: feature dimension ``f_H``/``f_L``; must match the guide's checkpoint.
        guide_weights: the pretrained HR model ``CNN_H`` (crossres ``.ckpt`` or insightface ``backbone.pth``).
        init_learner_from_guide: initialise every learner with the guide's weights (else from scratch).
        guidance_weight: ``λ`` of Eq. (3) (the paper sweeps 0 … 100, Fig. 5, and gives no default; 0 is "Ours*";
            10 puts ``λ·Lc``, with ``Lc`` in ``[0, 2]``, on the scale of the initial softmax loss).
        head: the learner's classification loss: ``softmax`` (Eq. (1), the paper's), ``cosface`` or ``arcface``.
        scale: margin heads' logit scale ``s`` (unused by ``softmax``).
        margin: margin heads' ``m`` (``None``: the head's default; must be ``None`` for ``softmax``).
        learner_sizes: one learner per LR size (§2.1, more than two sub-CNNs), trained on the data module's
            ``lr_views`` of those sizes (set ``data.degradation.lr_views`` to the same list); a probe is embedded
            by the learner whose size is nearest its ``lr_size`` (height). ``None``: one learner trained on
            ``batch["lr"]``.
        test_mode: ``known`` (LR probes through ``CNN_L``) or ``unknown`` (§3.1: the nearer of both embeddings).
        occlusion: train and evaluate on occluded HR faces (§3.2): ``none``, ``block`` (``occlusion_area`` of the
            face), ``upper`` / ``lower`` half, or ``half`` (upper or lower, at random).
        occlusion_area: area fraction of the ``block`` occlusion (the paper's 20 %).
        **kwargs: optimisation and evaluation arguments of :class:`CrossResMethod`.
    """

    def __init__(
        self,
        backbone: str = "iresnet18",
        backbone_kwargs: dict[str, Any] | None = None,
        embedding_size: int = 512,
        guide_weights: str | None = HR_MODEL_PATH,
        init_learner_from_guide: bool = True,
        guidance_weight: float = 10.0,
        head: Literal["softmax", "cosface", "arcface"] = "softmax",
        scale: float = 64.0,
        margin: float | None = None,
        learner_sizes: list[int] | None = None,
        test_mode: Literal["known", "unknown"] = "known",
        occlusion: Literal["none", "block", "upper", "lower", "half"] = "none",
        occlusion_area: float = 0.2,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)

    def build(self) -> None:
        hp = self.hparams
        if hp["test_mode"] not in ("known", "unknown"):
            raise ValueError(f"model.test_mode must be 'known' or 'unknown', got {hp['test_mode']!r}")
        if hp["occlusion"] not in ("none", "block", "upper", "lower", "half"):
            raise ValueError(
                f"model.occlusion must be 'none', 'block', 'upper', 'lower' or 'half', got {hp['occlusion']!r}"
            )
        if not 0.0 < hp["occlusion_area"] <= 1.0:
            raise ValueError(f"model.occlusion_area must be a fraction in (0, 1], got {hp['occlusion_area']}")
        if hp["guidance_weight"] < 0:
            raise ValueError(f"model.guidance_weight (λ of Eq. (3)) must be >= 0, got {hp['guidance_weight']}")
        sizes = hp["learner_sizes"]
        if sizes is not None:
            if not sizes or len(set(sizes)) != len(sizes):
                raise ValueError(f"model.learner_sizes must be distinct LR sizes, got {sizes!r}")
            for size in sizes:
                resolve_size(int(size), self.image_size, name="model.learner_sizes")
            if hp["occlusion"] != "none":
                raise ValueError("model.learner_sizes (one learner per LR size) cannot be combined with occlusion")

        def sub_cnn() -> nn.Module:
            return build_backbone(
                hp["backbone"],
                embedding_size=hp["embedding_size"],
                image_size=self.image_size,
                **(hp["backbone_kwargs"] or {}),
            )

        # §2.1: CNN_H and CNN_L have "the identical structure but different configurations".
        self.guide = freeze(sub_cnn())  # CNN_H: pre-trained on HR faces, never updated, BatchNorm included
        self.learner_sizes: list[int] | None = [int(s) for s in sizes] if sizes is not None else None
        count = len(sizes) if sizes is not None else 1
        self.learners = nn.ModuleList(sub_cnn() for _ in range(count))
        # Eq. (1): a softmax classifier on each learner's feature f_L.
        self.heads = nn.ModuleList(
            build_head(hp["head"], hp["embedding_size"], hp["num_classes"], scale=hp["scale"], margin=hp["margin"])
            for _ in range(count)
        )
        self.guidance = FeatureGuidanceLoss(reduction="mean")

    def head_modules(self) -> list[nn.Module]:
        return list(self.heads)

    # --------------------------------------------------------------------------------------- the guide
    def setup(self, stage: str) -> None:
        super().setup(stage)  # the data needs
        if stage != "fit" or self.trainer.ckpt_path is not None:
            return
        load_pretrained(
            self.guide,
            self.hparams["guide_weights"],
            "model.guide_weights",
            built_pretrained=built_pretrained(self.hparams["backbone_kwargs"]),
        )
        if self.hparams["init_learner_from_guide"]:
            state = self.guide.state_dict()
            for learner in self.learners:
                learner.load_state_dict(state)

    def data_needs(self) -> DataNeeds:
        if self.learner_sizes is None:
            return DataNeeds()  # one learner on batch["lr"]
        # One learner per LR size, each trained on its view of batch["lr_views"].
        return DataNeeds(lr_views=tuple(str(s) for s in self.learner_sizes), lr_views_key="model.learner_sizes")

    # ---------------------------------------------------------------------------------------- embedding
    def reference_embedder(self) -> Callable[[Tensor], Tensor]:
        return self.guide  # the frozen guide CNN_H on HR and bicubic faces

    def embed(self, images: Tensor) -> Tensor:
        """HR faces: the guide ``CNN_H``."""
        return self.guide(images)

    def learner_index(self, lr_size: Tensor) -> Tensor:
        """Index of the learner whose LR size is nearest each probe's height (ties: the first listed).

        Args:
            lr_size: ``(B, 2)`` ``(h, w)`` of the probes.

        Returns:
            Long ``(B,)`` indices into ``learners`` (all 0 with a single learner).
        """
        if self.learner_sizes is None:
            return torch.zeros_like(lr_size.reshape(-1, 2)[:, 0], dtype=torch.long)
        return nearest_size_index(lr_size, self.learner_sizes)

    def embed_lr(self, images: Tensor, lr_size: Tensor) -> Tensor:
        """LR probes: the learner ``CNN_L`` (with several learners, the one nearest each probe's size)."""
        if len(self.learners) == 1:
            return self.learners[0](images)
        choice = self.learner_index(lr_size).to(images.device)
        out: Tensor | None = None
        for index, learner in enumerate(self.learners):
            members = (choice == index).nonzero().squeeze(1)
            if members.numel() == 0:
                continue
            features = learner(images.index_select(0, members))
            if out is None:
                out = features.new_empty((images.shape[0], features.shape[1]))
            out.index_copy_(0, members, features)
        assert out is not None
        return out

    @staticmethod
    def nearer_score(gallery: Tensor, by_guide: Tensor, by_learner: Tensor) -> Tensor:
        """§3.1 unknown resolution: the cosine score of whichever query embedding is nearer the HR gallery feature.

        Args:
            gallery: ``(B, D)`` l2-normalised HR gallery features (``CNN_H``).
            by_guide: ``(B, D)`` l2-normalised query features from ``CNN_H``.
            by_learner: ``(B, D)`` l2-normalised query features from ``CNN_L``.

        Returns:
            ``(B,)`` cosine similarity of the kept query feature to the gallery feature (the larger of the two).
        """
        return torch.maximum((gallery * by_guide).sum(1), (gallery * by_learner).sum(1))

    # ----------------------------------------------------------------------------------------- training
    def learner_inputs(self, batch: dict[str, Any]) -> list[tuple[str, Tensor]]:
        """The training input of each learner, named by its size: LR faces, their views, or occluded HR faces."""
        occlusion = self.hparams["occlusion"]
        if occlusion != "none":
            # §3.2: "we simply replace LR images by the occluded ones".
            mask = occlusion_mask(batch["hr"], occlusion, self.hparams["occlusion_area"])
            return [("", batch["hr"].masked_fill(mask, 0.0))]
        if self.learner_sizes is None:
            return [("", batch["lr"])]
        views = batch.get("lr_views") or {}
        missing = [s for s in self.learner_sizes if f"{s}px" not in views]
        if missing:
            raise KeyError(
                f"GuidedCNN(learner_sizes={self.learner_sizes}) needs batch['lr_views'] with {missing} px; "
                f"set data.degradation.lr_views: {self.learner_sizes}"
            )
        return [(f"{s}px", views[f"{s}px"]) for s in self.learner_sizes]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        labels = batch["label"]
        batch_size = labels.numel()
        with torch.no_grad():
            guide_features = self.guide(batch["hr"])  # f_H: the frozen guide on the HR faces.
        total = guide_features.new_zeros(())
        for (name, images), learner, head in zip(self.learner_inputs(batch), self.learners, self.heads, strict=True):
            learner_features = learner(images)  # f_L: the learner on the degraded (or occluded) faces.
            softmax_loss = F.cross_entropy(head(learner_features, labels), labels)  # Eq. (1): Ls(Lx)
            guidance_loss = self.guidance(guide_features, learner_features)  # Eq. (2): Lc(Hx, Lx)
            total = total + softmax_loss + self.hparams["guidance_weight"] * guidance_loss  # Eq. (3)
            suffix = f"_{name}" if name else ""
            self.log(f"train_loss_softmax{suffix}", softmax_loss, batch_size=batch_size)
            self.log(f"train_loss_guidance{suffix}", guidance_loss, batch_size=batch_size)
        self.log("train_loss", total, prog_bar=True, batch_size=batch_size)
        return self.finite_or_none("guided_cnn", total)

    # --------------------------------------------------------------------------------------- evaluation
    def occluded_eval_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """§3.2 HR-OC: replace the LR probes of every protocol by the occluded HR faces, one protocol ``oc_*``.

        Each image is occluded with its own generator seeded by its pair id, so the occlusion of a pair does not
        depend on the batch it falls in.

        Args:
            batch: an evaluation batch of the data module (``hr1``, ``hr2``, ``pair_id``, …).

        Returns:
            The batch with ``lr1``/``lr2``/``lr_size`` holding the single protocol ``oc_<mode>[<area %>]``.
        """
        mode, area = self.hparams["occlusion"], self.hparams["occlusion_area"]
        name = f"oc_{mode}" + (f"{round(100 * area)}" if mode == "block" else "")
        occluded = []
        for which, images in enumerate((batch["hr1"], batch["hr2"])):
            masks = []
            for row, pair_id in enumerate(batch["pair_id"].tolist()):
                generator = torch.Generator().manual_seed(_OCCLUSION_SEED + 2 * int(pair_id) + which)
                masks.append(occlusion_mask(images[row : row + 1], mode, area, generator=generator))
            occluded.append(images.masked_fill(torch.cat(masks), 0.0))
        hr_size = torch.tensor(self.image_size, device=batch["hr1"].device).expand(batch["hr1"].shape[0], 2)
        return batch | {"lr1": {name: occluded[0]}, "lr2": {name: occluded[1]}, "lr_size": {name: hr_size}}

    def eval_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """§3.2: with ``occlusion``, the occluded HR faces replace the LR probes (:meth:`occluded_eval_batch`)."""
        return self.occluded_eval_batch(batch) if self.hparams["occlusion"] != "none" else batch

    def cross_score(self, hr: Tensor, lr: Tensor, lr_images: Tensor) -> Tensor:
        """HR-LR scores; §3.1 unknown resolution: the query's embedding by ``CNN_H`` or ``CNN_L``, the nearer."""
        if self.hparams["test_mode"] == "known":
            return super().cross_score(hr, lr, lr_images)
        return self.nearer_score(hr, self.eval_embed_hr(lr_images), lr)
