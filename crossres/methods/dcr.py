"""Deep Coupled ResNet (DCR, 003): a trunk trained on three resolutions, then coupled branch pairs per LR size."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossres.data.needs import DataNeeds
from crossres.losses.center import CenterLoss
from crossres.losses.coupled import CoupledMappingLoss
from crossres.methods.base import CrossResMethod, built_pretrained, freeze, load_pretrained, nearest_size_index
from crossres.nn.backbones import build_backbone
from crossres.nn.coupled import BranchPair, DCRTrunk, ResolutionEstimator, count_parameters
from crossres.nn.heads import build_head
from crossres.transforms.functional import resolve_size

__all__ = ["DCR_STAGE1_COMMAND", "DCR_STAGE1_PATH", "DCRTwoStage"]

#: Where the stage-2 config expects the stage-1 trunk, and the command that trains it.
DCR_STAGE1_PATH = "runs/dcr_stage1/checkpoints/last.ckpt"
DCR_STAGE1_COMMAND = "crossres fit -c experiments/dcr_stage1.yaml --name dcr_stage1"


class DCRTwoStage(CrossResMethod):
    """DCR in its two training steps: ``stage: 1`` trains the trunk, ``stage: 2`` the branch pairs on it.

    Paper: Deep Coupled ResNet for low-resolution face recognition (003).
    The paper's notes, the equations-to-code map and the deviations: ``docs/methods/dcr.md``.

    Args:
        stage: ``1`` trains the trunk (Eq. (1)), ``2`` the branch pairs on the frozen trunk (Eq. (5)).
        trunk: ``dcr_resnet`` (the paper's trunk, :class:`~crossres.nn.coupled.DCRTrunk`) or any
            :func:`~crossres.nn.backbones.build_backbone` name (``iresnet50``, a timm model, ...).
        trunk_kwargs: extra trunk arguments, e.g. ``{"width": 8}`` (``dcr_resnet``: 32 in the paper).
        embedding_size: dimension of the trunk feature ``v`` (512).
        trunk_resolutions: stage 1: the LR sizes trained besides HR, read from ``batch["lr_views"]`` (set
            ``data.degradation.lr_views`` to the same list); ``None``: 003's ``["40x40", "6x6"]``.
        beta: ``β`` of Eq. (1), weight of the trunk's center loss.
        center_alpha: learning rate of every set of centres in Wen et al.'s update rule.
        trunk_weights: stage 2: the stage-1 checkpoint (or a Baseline checkpoint / insightface ``backbone.pth``
            with the same trunk arguments), loaded before ``fit`` (weights only, no training state).
        branch_sizes: stage 2: one branch pair per probe size, trained on ``batch["lr_views"]`` of that size (set
            ``data.degradation.lr_views`` to the same list); ``None``: 003 Table I's ``[8, 12, 16, 20]``.
        branch_features: dimension of ``x`` and ``z`` (512).
        center_weight: ``λ`` of Eq. (5).
        euclidean_weight: ``α`` of Eq. (5).
        branch_selection: how a probe picks its pair: ``size`` (nearest branch size to its ``lr_size``) or
            ``estimator`` (the resolution estimator on its trunk feature).
        branch_init: ``random`` (003), or ``identity``: every branch mapping starts as the identity
            (``branch_features == embedding_size``), so step 2 starts from the trunk's own embedding, e.g. a
            pretrained recogniser's, instead of a random projection of it.
        estimator_hidden: hidden units of the resolution estimator.
        **kwargs: optimisation and evaluation arguments of :class:`CrossResMethod`.
    """

    def __init__(
        self,
        stage: Literal[1, 2] = 1,
        trunk: str = "dcr_resnet",
        trunk_kwargs: dict[str, Any] | None = None,
        embedding_size: int = 512,
        trunk_resolutions: list[str] | None = None,
        beta: float = 0.008,
        center_alpha: float = 0.5,
        trunk_weights: str | None = DCR_STAGE1_PATH,
        branch_sizes: list[int] | None = None,
        branch_features: int = 512,
        center_weight: float = 0.008,
        euclidean_weight: float = 0.008,
        branch_selection: Literal["size", "estimator"] = "size",
        branch_init: Literal["random", "identity"] = "random",
        estimator_hidden: int = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)

    # ------------------------------------------------------------------------------------------- build
    def build(self) -> None:
        hp = self.hparams
        if hp["stage"] not in (1, 2):
            raise ValueError(f"model.stage must be 1 (trunk) or 2 (branches), got {hp['stage']!r}")
        if hp["branch_selection"] not in ("size", "estimator"):
            raise ValueError(f"model.branch_selection must be 'size' or 'estimator', got {hp['branch_selection']!r}")
        for key in ("beta", "center_weight", "euclidean_weight"):
            if hp[key] < 0:
                raise ValueError(f"model.{key} must be >= 0, got {hp[key]}")
        self.stage = int(hp["stage"])
        self.trunk_resolutions = [str(r) for r in (hp["trunk_resolutions"] or ["40x40", "6x6"])]
        sizes = [int(s) for s in (hp["branch_sizes"] or [8, 12, 16, 20])]
        if len(set(sizes)) != len(sizes):
            raise ValueError(f"model.branch_sizes must be distinct LR sizes, got {sizes}")
        for size in sizes:
            resolve_size(size, self.image_size, name="model.branch_sizes")
        self.branch_sizes = sorted(sizes)

        kwargs = dict(hp["trunk_kwargs"] or {})
        self.trunk: nn.Module
        if hp["trunk"] == "dcr_resnet":
            self.trunk = DCRTrunk(hp["embedding_size"], self.image_size, **kwargs)
        else:
            self.trunk = build_backbone(
                hp["trunk"], embedding_size=hp["embedding_size"], image_size=self.image_size, **kwargs
            )
        dim, classes = hp["embedding_size"], hp["num_classes"]
        if self.stage == 1:
            # Eq. (1): softmax with weights W, bias d on v, plus β·center loss on v.
            self.trunk_head = build_head("softmax", dim, classes)
            self.trunk_center = CenterLoss(classes, dim, alpha=hp["center_alpha"])
            return
        freeze(self.trunk)  # §II-B step 2: "model parameters of the trunk network remain unchanged"
        self.branches = nn.ModuleDict(
            {
                str(k): BranchPair(dim, hp["branch_features"], classes, identity_init=hp["branch_init"] == "identity")
                for k in self.branch_sizes
            }
        )
        self.cm_losses = nn.ModuleDict(
            {
                str(k): CoupledMappingLoss(
                    classes,
                    hp["branch_features"],
                    center_weight=hp["center_weight"],
                    euclidean_weight=hp["euclidean_weight"],
                    center_alpha=hp["center_alpha"],
                )
                for k in self.branch_sizes
            }
        )
        self.estimator = ResolutionEstimator(dim, len(self.branch_sizes), hidden=hp["estimator_hidden"])

    def head_modules(self) -> list[nn.Module]:
        if self.stage == 1:
            return [self.trunk_head]
        pairs = [cast(BranchPair, pair) for pair in self.branches.values()]
        return [m for pair in pairs for branch in (pair.hr, pair.lr) for m in (branch.prelu, branch.classifier)]

    # ------------------------------------------------------------------------------------- frozen trunk
    def setup(self, stage: str) -> None:
        super().setup(stage)  # the data needs
        if self.stage != 2 or stage != "fit" or self.trainer.ckpt_path is not None:
            return
        load_pretrained(
            self.trunk,
            self.hparams["trunk_weights"],
            "model.trunk_weights",
            what="a frozen stage-1 trunk (or a Baseline checkpoint with the same trunk settings)",
            command=DCR_STAGE1_COMMAND,
            made_at=DCR_STAGE1_PATH,
            built_pretrained=built_pretrained(self.hparams["trunk_kwargs"]),
        )

    def data_needs(self) -> DataNeeds:
        # Stage 1 trains the trunk on every resolution, stage 2 one branch pair per size: each from batch["lr_views"].
        if self.stage == 1:
            return DataNeeds(lr_views=tuple(self.trunk_resolutions), lr_views_key="model.trunk_resolutions")
        return DataNeeds(lr_views=tuple(str(k) for k in self.branch_sizes), lr_views_key="model.branch_sizes")

    # ------------------------------------------------------------------------------------------ routing
    def branch_index(self, lr_size: Tensor) -> Tensor:
        """Index into ``branch_sizes`` of the size nearest each probe's height (ties: the smaller size).

        Args:
            lr_size: ``(B, 2)`` ``(h, w)`` of the probes.

        Returns:
            Long ``(B,)`` indices into ``branch_sizes`` (sorted ascending).
        """
        return nearest_size_index(lr_size, self.branch_sizes)  # sorted: of equal gaps, the smaller size

    def select_branch(self, trunk_features: Tensor, lr_size: Tensor) -> Tensor:
        """The branch pair of each probe, by ``branch_selection``: its ``lr_size`` or the resolution estimator."""
        if self.hparams["branch_selection"] == "estimator":
            return self.estimator(trunk_features).argmax(dim=1)
        return self.branch_index(lr_size).to(trunk_features.device)

    def pair(self, size: int) -> BranchPair:
        """The branch pair of ``size`` (one of ``branch_sizes``; stage 2 only)."""
        return cast(BranchPair, self.branches[str(size)])

    # ---------------------------------------------------------------------------------------- embedding
    def reference_embedder(self) -> Callable[[Tensor], Tensor] | None:
        return self.trunk if self.stage == 2 else None  # step 2: the frozen stage-1 trunk

    def embed(self, images: Tensor) -> Tensor:
        """Stage 1: the trunk feature ``v``. Stage 2: the HR embedding of :meth:`embed_hr`."""
        if self.stage == 1:
            return self.trunk(images)
        return self.embed_hr(images)

    def embed_hr(self, images: Tensor) -> Tensor:
        """HR gallery faces: ``[x_1/|x_1|, ..., x_K/|x_K|]``, the HR branch of every pair (stage 1: ``v``)."""
        if self.stage == 1:
            return self.trunk(images)
        v = self.trunk(images)
        return torch.cat([F.normalize(self.pair(k).hr.features(v), dim=1) for k in self.branch_sizes], 1)

    def embed_lr(self, images: Tensor, lr_size: Tensor) -> Tensor:
        """LR probes: ``z_k/|z_k|`` of the chosen pair ``k`` in block ``k``, zeros elsewhere (stage 1: ``v``)."""
        if self.stage == 1:
            return self.trunk(images)
        v = self.trunk(images)
        choice = self.select_branch(v, lr_size)
        dim = self.hparams["branch_features"]
        out = v.new_zeros(v.shape[0], len(self.branch_sizes) * dim)
        for index, size in enumerate(self.branch_sizes):
            members = (choice == index).nonzero().squeeze(1)
            if members.numel():
                z = F.normalize(self.pair(size).lr.features(v.index_select(0, members)), dim=1)
                out[members, index * dim : (index + 1) * dim] = z
        return out

    # ------------------------------------------------------------------------------------------ training
    def _views(self, batch: dict[str, Any], names: list[str], key: str) -> list[Tensor]:
        views = batch.get("lr_views") or {}
        missing = [n for n in names if f"{n}px" not in views]
        if missing:
            raise KeyError(
                f"DCRTwoStage(stage={self.stage}) needs batch['lr_views'] at model.{key} {missing}; "
                f"set data.degradation.lr_views: {names}"
            )
        return [views[f"{n}px"] for n in names]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        if self.stage == 1:
            return self._trunk_step(batch)
        return self._branch_step(batch)

    def _trunk_step(self, batch: dict[str, Any]) -> Tensor | None:
        # §II-B step 1: the same faces at 112x96 (HR) and at the trunk_resolutions, upsampled back (lr_views).
        images = torch.cat([batch["hr"], *self._views(batch, self.trunk_resolutions, "trunk_resolutions")])
        labels = batch["label"].repeat(1 + len(self.trunk_resolutions))
        v = self.trunk(images)
        softmax = F.cross_entropy(self.trunk_head(v), labels)
        center = self.trunk_center(v, labels)
        loss = softmax + self.hparams["beta"] * center  # Eq. (1): softmax + β·Σ||v_i - c_{y_i}||^2
        n = labels.numel()
        self.log("train_loss_softmax", softmax, batch_size=n)
        self.log("train_loss_center", center, batch_size=n)
        self.log("train_loss", loss, prog_bar=True, batch_size=n)
        if not self.check_finite("dcr_trunk", loss):
            return None
        self.trunk_center.update(v, labels)  # Wen et al.'s centre update, after the loss.
        return loss

    def _branch_step(self, batch: dict[str, Any]) -> Tensor | None:
        labels, n = batch["label"], batch["label"].numel()
        names = [str(k) for k in self.branch_sizes]
        with torch.no_grad():  # step 2: the trunk is frozen
            v = self.trunk(torch.cat([batch["hr"], *self._views(batch, names, "branch_sizes")]))
        v_hr, v_lr = v[:n], v[n:].reshape(len(names), n, -1)
        total = v.new_zeros(())
        updates = []
        for index, name in enumerate(names):
            pair = self.pair(int(name))
            x, logits_x = pair.hr(v_hr)  # HR branch: v -> x -> U^T x + b
            z, logits_z = pair.lr(v_lr[index])  # LR branch: v -> z -> V^T z + a
            terms = self.cm_losses[name](x, z, logits_x, logits_z, labels)  # Eq. (5): Ls + λ·Lc + α·Le
            total = total + terms["loss"]
            updates.append((name, x, z))
            for term in ("softmax", "center", "euclidean"):
                self.log(f"train_loss_{term}_{name}px", terms[term], batch_size=n)
        # The resolution estimator ([24]'s role): which branch size a probe's trunk feature comes from.
        targets = torch.arange(len(names), device=v.device).repeat_interleave(n)
        logits = self.estimator(v[n:])
        estimator_loss = F.cross_entropy(logits, targets)
        total = total + estimator_loss
        self.log("train_loss_estimator", estimator_loss, batch_size=n)
        self.log("train_acc_estimator", (logits.argmax(1) == targets).float().mean(), batch_size=n)
        self.log("train_loss", total, prog_bar=True, batch_size=n)
        if not self.check_finite("dcr_cm", total):
            return None
        for name, x, z in updates:
            cast(CoupledMappingLoss, self.cm_losses[name]).update_centers(x, z, labels)
        return total

    # ------------------------------------------------------------------------------------------- report
    @property
    def parameter_sizes(self) -> dict[str, float]:
        """Inference parameters of the trunk and of the branch pairs (003 §II-C: 98.1 % trunk, 1.9 % one pair).

        The trunk is counted without its training-only softmax layer, a pair as its two feature mappings (the
        branch classifiers of Eq. (2) serve only training). Shares are of trunk + one pair, as in the paper.

        Returns:
            ``trunk``, ``branch_pair`` and ``branches`` (all pairs) parameter counts, their float32 sizes in MiB
            (``*_mib``), and ``trunk_share`` / ``branch_share`` of trunk + one pair.
        """
        hp = self.hparams
        trunk = count_parameters(self.trunk)
        if self.stage == 2:
            pair = self.pair(self.branch_sizes[0]).inference_parameters()
        else:
            pair = BranchPair(hp["embedding_size"], hp["branch_features"], 1).inference_parameters()
        branches = pair * len(self.branch_sizes)
        mib = 4 / 2**20
        return {
            "trunk": trunk,
            "branch_pair": pair,
            "branches": branches,
            "trunk_mib": trunk * mib,
            "branch_pair_mib": pair * mib,
            "branches_mib": branches * mib,
            "trunk_share": trunk / (trunk + pair),
            "branch_share": pair / (trunk + pair),
        }
