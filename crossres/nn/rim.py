"""RIM's networks and what each player computes (001), in torch alone: no optimizer, no Lightning.

:class:`ResolutionInvariantNet` holds the face hallucination sub-net (FHN, §3.1), the heterogeneous recognition
sub-net (HRN, §3.2: the frozen HR teacher ``N_T``, the student ``N_S``, the teacher assistant ``N_A``), the MK-MMD
of the domain loss and the losses of Eqs. (1), (11) and (12). Its methods are the forward passes and losses of the
players of Eq. (10); :class:`~crossres.methods.rim.RIM` steps one optimizer per player on them. Its state-dict keys
are RIM's (``teacher.*``, ``student.*``, ``assistant.*``, ``fhn.*``, ``mmd.*``), so a RIM checkpoint's
``state_dict`` loads into it directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from crossres.losses.distillation import ResidualDistillationLoss, StudentDistillationLoss
from crossres.losses.hallucination import HallucinationLoss
from crossres.losses.mmd import MKMMD
from crossres.nn.backbones import build_backbone
from crossres.nn.distillation import AdaptedBlocks, BlockwiseBackbone
from crossres.nn.hallucination import FaceHallucinationNet, FHNOutput

__all__ = ["PARTS", "ProbePath", "ResolutionInvariantNet"]

#: The probe paths of Table 1: ``rim`` (f), ``fhn_student`` (e'), ``fhn_teacher`` (d), ``teacher`` (a).
ProbePath = Literal["rim", "fhn_student", "fhn_teacher", "teacher"]

#: The submodules, in registration order (the names of their state-dict keys).
PARTS = ("teacher", "student", "assistant", "student_loss", "assistant_loss", "fhn", "mmd", "generator_loss")


class ResolutionInvariantNet(nn.Module):
    """RIM's sub-nets and losses; each method is one player's forward pass or loss.

    Args:
        teacher: the HR teacher ``N_T`` split into ``K`` blocks, with its embedding head (kept frozen by the caller).
        student: the student ``N_S``, its block maps adapted to the teacher's shapes.
        assistant: the teacher assistant ``N_A`` (same), or ``None``.
        fhn: FHN, or ``None`` (HRN on the bicubic probe, Table 1 (c)).
        mmd: the MK-MMD of ``L_domain`` (Eqs. (7)-(9)).
        generator_loss: Eq. (1).
        student_loss: Eq. (11).
        assistant_loss: Eq. (12).
    """

    def __init__(
        self,
        teacher: BlockwiseBackbone,
        student: AdaptedBlocks,
        assistant: AdaptedBlocks | None,
        fhn: FaceHallucinationNet | None,
        mmd: MKMMD,
        generator_loss: HallucinationLoss,
        student_loss: StudentDistillationLoss,
        assistant_loss: ResidualDistillationLoss,
    ) -> None:
        super().__init__()
        self.teacher = teacher
        self.student = student
        self.assistant = assistant
        self.student_loss = student_loss
        self.assistant_loss = assistant_loss
        self.fhn = fhn
        self.mmd = mmd
        self.generator_loss = generator_loss

    @classmethod
    def build(cls, hparams: Mapping[str, Any], image_size: tuple[int, int]) -> ResolutionInvariantNet:
        """RIM's networks and losses from its hyper-parameters (the arguments of :class:`~crossres.methods.rim.RIM`).

        The teacher is built with random weights and frozen (no gradients, eval mode); load its weights into
        ``teacher.net``.

        Args:
            hparams: RIM's hyper-parameters, e.g. ``RIM(...).hparams`` or a checkpoint's ``hyper_parameters``.
            image_size: the HR face size ``(H, W)``.

        Returns:
            The torch model.
        """
        hp = hparams

        def blocks(role: str, keep_head: bool = False) -> BlockwiseBackbone:
            size, kwargs = hp["teacher_embedding_size"], hp[f"{role}_backbone_kwargs"] or {}
            net = build_backbone(hp[f"{role}_backbone"], embedding_size=size, image_size=image_size, **kwargs)
            return BlockwiseBackbone(net, keep_head=keep_head)

        # HRN (§3.2): the frozen HR teacher N_T, the student N_S and the teacher assistant N_A, K = 4 blocks each.
        teacher = blocks("teacher", keep_head=True).requires_grad_(False).eval()
        student = AdaptedBlocks(blocks("student"), teacher.shapes, "student")
        assistant = AdaptedBlocks(blocks("assistant"), teacher.shapes, "assistant") if hp["use_assistant"] else None
        # FHN (§3.1): G = G_c + tri-path generator; mix-adversarial discriminator D = (D_i, D_d).
        fhn = None
        if hp["use_fhn"]:
            fhn = FaceHallucinationNet(
                hp["fhn_channels"], hp["fhn_feature_channels"], hp["fhn_blocks"], hp["num_landmarks"],
                hp["num_parsing_classes"], hp["domain_dim"],
            )  # fmt: skip
        mmd = MKMMD(  # Eqs. (7)-(9)
            hp["mmd_bandwidths"] or [0.25, 0.5, 1.0, 2.0, 4.0],
            learn_weights=hp["learn_kernel_weights"] and hp["use_fhn"],
            relative=hp["mmd_relative"],
            gather_distributed=hp["mmd_gather_distributed"],
        )
        reduction = hp["loss_reduction"]
        weights = [hp[f"lambda_{term}"] for term in ("domain", "pixel", "landmark", "parsing")]
        return cls(
            teacher, student, assistant, fhn, mmd,
            generator_loss=HallucinationLoss(reduction, *weights),  # Eq. (1)
            student_loss=StudentDistillationLoss(reduction),  # Eq. (11)
            assistant_loss=ResidualDistillationLoss(reduction, block_weights=hp["assistant_block_weights"]),  # Eq. (12)
        )  # fmt: skip

    def players(self) -> dict[str, list[dict[str, Any]]]:
        """The players of Eq. (10) and their parameter groups: ``fhn`` (``θ_G``: ``generator``, ``θ_i``:
        ``integrator``), ``domain`` (``θ_d`` and the kernel weights ``β`` when learnt), ``student``, ``assistant``.

        Returns:
            Parameter groups per player, in the order RIM's optimizers have.
        """
        players: dict[str, list[dict[str, Any]]] = {}
        if self.fhn is not None:
            players["fhn"] = [
                {"params": self.fhn.generator_parameters(), "name": "generator"},
                {"params": list(self.fhn.integrator.parameters()), "name": "integrator"},
            ]
            domain = [*self.fhn.domain.parameters(), *(p for p in self.mmd.parameters() if p.requires_grad)]
            players["domain"] = [{"params": domain, "name": "domain"}]
        players["student"] = [{"params": list(self.student.parameters()), "name": "student"}]
        if self.assistant is not None:
            players["assistant"] = [{"params": list(self.assistant.parameters()), "name": "assistant"}]
        return players

    # ------------------------------------------------------------------------------------------ inference
    def super_resolve(self, lr: Tensor) -> FHNOutput:
        """FHN on LR probes (bicubic-upsampled to the HR size): coarse and SR faces, heatmaps, parsing scores.

        Args:
            lr: ``(B, 3, H, W)`` probes in ``[0, 1]``.

        Returns:
            :class:`~crossres.nn.hallucination.FHNOutput` (``sr`` not clamped).

        Raises:
            RuntimeError: if there is no FHN.
        """
        if self.fhn is None:
            raise RuntimeError("this RIM was built with use_fhn: false and has no FHN")
        return self.fhn(lr)

    def embed_probe(self, images: Tensor, path: ProbePath = "rim") -> Tensor:
        """Embeddings of LR probes in the teacher's space (§3.3), along one of Table 1's probe paths.

        Args:
            images: ``(B, 3, H, W)`` probes in ``[0, 1]``, bicubic-upsampled to the HR size.
            path: ``rim``: ``f_S = f_S^K + f_A^K`` on the SR face through the teacher's head; ``fhn_student``: without
                ``f_A^K``; ``fhn_teacher``: the teacher on the SR face; ``teacher``: the teacher on the probe.

        Returns:
            ``(B, D)`` embeddings, not normalised.
        """
        if path == "teacher":
            return self.teacher.embed(images)
        probe = self.super_resolve(images).sr if self.fhn is not None else images
        if path == "fhn_teacher":
            return self.teacher.embed(probe)
        feature = self.student(probe)[-1]
        if path == "rim" and self.assistant is not None:
            feature = feature + self.assistant(probe)[-1]  # §3.2: f_S = f_S^K + f_A^K
        return self.teacher.head(feature)

    # ------------------------------------------------------------------------------------------- players
    def generator_losses(
        self, lr: Tensor, hr: Tensor, priors: tuple[Tensor, Tensor] | None = None
    ) -> tuple[FHNOutput, dict[str, Tensor]]:
        """Player FHN (``θ_G``, ``θ_i``): the forward pass and Eq. (1).

        Args:
            lr: ``(B, 3, H, W)`` LR probes, bicubic-upsampled to the HR size.
            hr: ``(B, 3, H, W)`` their HR faces.
            priors: the targets of Eqs. (3)-(4) at FHN's prior size (heatmaps, parsing labels:
                :func:`~crossres.nn.hallucination.prior_targets`), or ``None`` to leave both terms out.

        Returns:
            FHN's output and Eq. (1)'s terms ``{"mmd", "pixel"[, "landmark", "parsing"], "fhn"}`` (``fhn``: ``L_G``).
        """
        assert self.fhn is not None, "generator_losses needs FHN"
        out = self.fhn(lr, hr)
        predicted = None if priors is None else (out.heatmaps, priors[0], out.parsing_logits, priors[1])
        domain = self.mmd(*self.fhn.domain_features(out))  # L_domain, Eqs. (7)-(9)
        loss, terms = self.generator_loss(domain, out.sr, hr, predicted)
        return out, terms | {"fhn": loss}

    def domain_loss(self, out: FHNOutput) -> Tensor:
        """Player ``D_d`` (``θ_d``, ``β``): Eq. (6), ``L_Dd = -L_domain`` on the detached tri-path maps."""
        assert self.fhn is not None, "domain_loss needs FHN"
        return -self.mmd(*self.fhn.domain_features(out, detach=True))

    def student_losses(self, probe: Tensor, teacher_maps: list[Tensor]) -> tuple[dict[str, Tensor], list[Tensor]]:
        """Player ``N_S``: Eq. (11) on the probe, and the fit of its inner 1x1 adapters (if any).

        The adapters of blocks ``1 .. K-1`` are fitted to the teacher's maps on detached block outputs, so the
        network itself only sees Eq. (11).

        Args:
            probe: ``(B, 3, H, W)`` SR (or bicubic) faces.
            teacher_maps: ``[f_T^1, ..., f_T^K]`` of their HR faces.

        Returns:
            ``{"student"[, "student_adapters"]}`` and the student's maps ``[f_S^1, ..., f_S^K]``.
        """
        student_maps = self.student(probe, detach_inner=True)
        losses = {"student": self.student_loss(teacher_maps[-1], student_maps[-1])}  # Eq. (11)
        inner = [k for k in self.student.adapted_blocks() if k < len(student_maps) - 1]
        if inner:
            losses["student_adapters"] = self.student_loss.inner_blocks(teacher_maps, student_maps, inner)
        return losses, student_maps

    def assistant_losses(self, probe: Tensor, teacher_maps: list[Tensor], student_maps: list[Tensor]) -> Tensor:
        """Player ``N_A``: Eq. (12), the residuals ``f_T^k - f_S^k`` at every block (``f_S^k`` constants)."""
        assert self.assistant is not None, "assistant_losses needs the assistant"
        return self.assistant_loss(teacher_maps, student_maps, self.assistant(probe))

    @torch.no_grad()
    def frozen_residuals(self, hr: Tensor, lr: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """The assistant's inputs after FHN and student have reached their optima (§3.2): in inference mode.

        Args:
            hr: ``(B, 3, H, W)`` HR faces.
            lr: ``(B, 3, H, W)`` their LR probes, bicubic-upsampled.

        Returns:
            The probe (SR face, or ``lr`` without FHN), the teacher's and the student's block maps.
        """
        frozen = [m for m in (self.fhn, self.student) if m is not None]
        modes = [m.training for m in frozen]
        for module in frozen:
            module.eval()
        teacher_maps = self.teacher(hr)
        probe = self.super_resolve(lr).sr if self.fhn is not None else lr
        student_maps = self.student(probe)
        for module, mode in zip(frozen, modes, strict=True):
            module.train(mode)
        return probe, teacher_maps, student_maps
