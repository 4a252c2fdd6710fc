"""RIM (001): a face hallucination sub-net (FHN) and a heterogeneous recognition sub-net (HRN), trained jointly."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal, get_args

import torch
from torch import Tensor, nn

from crossres.losses.distillation import ResidualDistillationLoss, StudentDistillationLoss
from crossres.losses.hallucination import LandmarkHeatmapLoss, ParsingLoss, PixelLoss
from crossres.losses.mmd import MKMMD
from crossres.methods.base import HR_MODEL_PATH, CrossResMethod, built_pretrained, freeze, load_pretrained
from crossres.metrics.image_quality import SRQuality, psnr
from crossres.nn.backbones import build_backbone
from crossres.nn.distillation import AdaptedBlocks, BlockwiseBackbone
from crossres.nn.hallucination import FaceHallucinationNet, FHNOutput, prior_targets

__all__ = ["RIM"]

EvalMode = Literal["rim", "fhn_student", "fhn_teacher", "teacher"]


@dataclass(frozen=True)
class RIMSettings:
    """The hyper-parameters :class:`RIM` reads after building its networks (see its Args)."""

    teacher_weights: str | None
    use_fhn: bool
    use_priors: bool
    assistant_after_epoch: int | None
    num_landmarks: int
    heatmap_sigma: float
    lambda_domain: float
    lambda_pixel: float
    lambda_landmark: float
    lambda_parsing: float
    lambda_recognition: float
    gradient_clip: float | None
    quality_lr_sizes: list[int] | None
    optimizer: str
    lr: float
    fhn_lr: float | None
    weight_decay: float


class RIM(CrossResMethod):
    """Resolution Invariant Model: FHN super-resolves the LR probe 8x, HRN recognises it by residual distillation.

    Paper: Resolution Invariant Model for cross-resolution face recognition (001).
    The paper's notes, the equations-to-code map and the deviations: ``docs/methods/rim.md``.

    Args:
        teacher_backbone: the HR teacher's architecture (ResNet50-IR in the paper); must match ``teacher_weights``.
        teacher_backbone_kwargs: extra teacher backbone arguments, e.g. ``{"width": 16}``.
        teacher_embedding_size: the teacher's embedding size; must match ``teacher_weights``.
        teacher_weights: the pretrained HR recogniser (crossres ``.ckpt`` or insightface ``backbone.pth``), loaded
            before ``fit`` and frozen.
        student_backbone: the student's architecture (ResNet34 in the paper).
        student_backbone_kwargs: extra student backbone arguments.
        assistant_backbone: the teacher assistant's architecture (ResNet34 in the paper).
        assistant_backbone_kwargs: extra assistant backbone arguments.
        use_fhn: hallucinate the probe with FHN (``false``: HRN on the bicubic probe, Table 1 (c)).
        use_assistant: train the teacher assistant and add ``f_A^K`` to the probe feature.
        assistant_block_weights: a weight per block in Eq. (12) (``None``: 1 for every block, as the paper; e.g.
            ``[0, 0, 0, 1]`` fits the residual of the last block only, the one ``f_S^K + f_A^K`` uses).
        assistant_after_epoch: ``None``: §3.3's joint schedule, the assistant stepped with every other player on
            every batch. ``N``: FHN and student train (without the assistant) for ``N`` epochs; from epoch ``N`` they
            are frozen and the assistant alone learns Eq. (12) on the residuals of the student as inference uses
            it (§3.2: "after assistant and student network reaching their optima").
        use_priors: supervise the landmark and parsing paths (Eqs. (3), (4)); needs ``landmarks`` in the batches.
        fhn_channels: feature channels of every FHN sub-network.
        fhn_feature_channels: output channels of the global feature path ``G_f``.
        fhn_blocks: residual blocks per FHN sub-network.
        domain_dim: feature size of the domain discriminator ``D_d``.
        num_landmarks: landmark heatmaps ``N`` (68 iBUG points).
        num_parsing_classes: parsing classes (11 Helen classes).
        heatmap_sigma: standard deviation (HR pixels) of the ground-truth landmark Gaussians.
        mmd_bandwidths: Gaussian bandwidths ``σ_u`` of Eq. (9); with ``mmd_relative`` multiples of the mean squared
            distance between the pooled ``D_d`` features (default ``[0.25, 0.5, 1, 2, 4]``).
        mmd_relative: bandwidths relative to the features' mean squared distance (DAN, Long et al. 2015).
        learn_kernel_weights: let ``D_d``'s optimizer learn the convex kernel weights ``β_u`` (maximising the MMD).
        mmd_gather_distributed: under DDP, estimate the MMD on all ranks' samples.
        lambda_domain: weight of ``L_domain`` in Eq. (1) (1 in the paper; 0 switches the adversarial term off).
        lambda_pixel: ``λ0`` of Eq. (1).
        lambda_landmark: ``λ1`` of Eq. (1).
        lambda_parsing: ``λ2`` of Eq. (1).
        lambda_recognition: weight of the relative HRN errors back-propagated into FHN (joint training, §3.3; 0:
            FHN learns from Eq. (1) alone and HRN from its SR faces).
        loss_reduction: ``mean`` (over elements) or ``sum`` (the paper's per-image sums) for Eqs. (2)-(4), (11), (12).
        gradient_clip: clip every player's gradient norm to this value (``None``: no clipping).
        eval_mode: the probe path at evaluation: ``rim``, ``fhn_student``, ``fhn_teacher`` or ``teacher``.
        quality_lr_sizes: LR sizes (px) whose evaluation protocols (``<n>px``) also log PSNR/SSIM of the SR and of the
            bicubic probe against the HR face; ``None``: every protocol.
        optimizer: ``rmsprop`` (the paper's, PyTorch defaults otherwise), ``sgd`` or ``adamw``, for every player.
        lr: learning rate of every player (1e-3 in the paper).
        fhn_lr: learning rate of the FHN players (``fhn``, ``domain``) if different from ``lr``.
        weight_decay: weight decay of every player.
        **kwargs: optimisation and evaluation arguments of :class:`CrossResMethod`.
    """

    #: The CLI's precision on a GPU when the config leaves ``trainer.precision`` unset: four players, three backbones.
    gpu_precision: ClassVar[str] = "bf16-mixed"

    def __init__(
        self,
        teacher_backbone: str = "iresnet50",
        teacher_backbone_kwargs: dict[str, Any] | None = None,
        teacher_embedding_size: int = 512,
        teacher_weights: str | None = HR_MODEL_PATH,
        student_backbone: str = "iresnet34",
        student_backbone_kwargs: dict[str, Any] | None = None,
        assistant_backbone: str = "iresnet34",
        assistant_backbone_kwargs: dict[str, Any] | None = None,
        use_fhn: bool = True,
        use_assistant: bool = True,
        assistant_block_weights: list[float] | None = None,
        assistant_after_epoch: int | None = None,
        use_priors: bool = True,
        fhn_channels: int = 32,
        fhn_feature_channels: int = 32,
        fhn_blocks: int = 2,
        domain_dim: int = 64,
        num_landmarks: int = 68,
        num_parsing_classes: int = 11,
        heatmap_sigma: float = 2.0,
        mmd_bandwidths: list[float] | None = None,
        mmd_relative: bool = True,
        learn_kernel_weights: bool = True,
        mmd_gather_distributed: bool = False,
        lambda_domain: float = 1.0,
        lambda_pixel: float = 1.0,
        lambda_landmark: float = 1.0,
        lambda_parsing: float = 1.0,
        lambda_recognition: float = 1.0,
        loss_reduction: Literal["mean", "sum"] = "sum",
        gradient_clip: float | None = 10.0,
        eval_mode: EvalMode = "rim",
        quality_lr_sizes: list[int] | None = None,
        optimizer: Literal["rmsprop", "sgd", "adamw"] = "rmsprop",
        lr: float = 1e-3,
        fhn_lr: float | None = None,
        weight_decay: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(optimizer=optimizer, lr=lr, weight_decay=weight_decay, **kwargs)  # type: ignore[arg-type]

    # ------------------------------------------------------------------------------------------- build
    def build(self) -> None:
        hp = self.hparams
        if hp["optimizer"] not in ("rmsprop", "sgd", "adamw"):
            raise ValueError(f"model.optimizer must be 'rmsprop', 'sgd' or 'adamw', got {hp['optimizer']!r}")
        if hp["loss_reduction"] not in ("mean", "sum"):
            raise ValueError(f"model.loss_reduction must be 'mean' or 'sum', got {hp['loss_reduction']!r}")
        for key in ("lambda_domain", "lambda_pixel", "lambda_landmark", "lambda_parsing", "lambda_recognition"):
            if hp[key] < 0:
                raise ValueError(f"model.{key} must be >= 0, got {hp[key]}")
        after = hp["assistant_after_epoch"]
        if after is not None and (after < 0 or not hp["use_assistant"]):
            raise ValueError(
                f"model.assistant_after_epoch must be None or >= 0 with model.use_assistant: true, got {after} "
                f"(use_assistant: {hp['use_assistant']})"
            )
        self.settings = RIMSettings(**{f.name: hp[f.name] for f in fields(RIMSettings)})
        self.automatic_optimization = False  # the minimax of Eq. (10): one optimizer per player, stepped by hand
        self.eval_mode = hp["eval_mode"]

        def backbone(name: str, kwargs: dict[str, Any] | None) -> nn.Module:
            return build_backbone(
                name, embedding_size=hp["teacher_embedding_size"], image_size=self.image_size, **(kwargs or {})
            )

        # HRN (§3.2): the frozen HR teacher N_T, the student N_S and the teacher assistant N_A, K = 4 blocks each.
        self.teacher = freeze(BlockwiseBackbone(backbone(hp["teacher_backbone"], hp["teacher_backbone_kwargs"])))
        student = BlockwiseBackbone(backbone(hp["student_backbone"], hp["student_backbone_kwargs"]), keep_head=False)
        self.student = AdaptedBlocks(student, self.teacher.shapes, "student")
        self.assistant: AdaptedBlocks | None = None
        if hp["use_assistant"]:
            assistant = BlockwiseBackbone(
                backbone(hp["assistant_backbone"], hp["assistant_backbone_kwargs"]), keep_head=False
            )
            self.assistant = AdaptedBlocks(assistant, self.teacher.shapes, "assistant")
        self.student_loss = StudentDistillationLoss(hp["loss_reduction"])  # Eq. (11)
        self.assistant_loss = ResidualDistillationLoss(  # Eq. (12)
            hp["loss_reduction"], detach_student=True, block_weights=hp["assistant_block_weights"]
        )

        # FHN (§3.1): G = G_c + tri-path generator; mix-adversarial discriminator D = (D_i, D_d).
        self.fhn: FaceHallucinationNet | None = None
        if hp["use_fhn"]:
            self.fhn = FaceHallucinationNet(
                channels=hp["fhn_channels"],
                feature_channels=hp["fhn_feature_channels"],
                blocks=hp["fhn_blocks"],
                num_landmarks=hp["num_landmarks"],
                num_parsing_classes=hp["num_parsing_classes"],
                domain_dim=hp["domain_dim"],
            )
        self.mmd = MKMMD(  # Eqs. (7)-(9)
            hp["mmd_bandwidths"] or [0.25, 0.5, 1.0, 2.0, 4.0],
            learn_weights=hp["learn_kernel_weights"] and hp["use_fhn"],
            relative=hp["mmd_relative"],
            gather_distributed=hp["mmd_gather_distributed"],
        )
        self.pixel_loss = PixelLoss(hp["loss_reduction"])  # Eqs. (2), (5)
        self.landmark_loss = LandmarkHeatmapLoss(hp["loss_reduction"])  # Eq. (3)
        self.parsing_loss = ParsingLoss(hp["loss_reduction"])  # Eq. (4)
        self.quality = SRQuality()  # Table 4
        self.sr_quality: dict[str, list[dict[str, Any]]] = {}

    @property
    def eval_mode(self) -> str:
        """The probe path used by :meth:`embed_lr` (settable, e.g. to evaluate Table 1's ablations)."""
        return self._eval_mode

    @eval_mode.setter
    def eval_mode(self, mode: str) -> None:
        if mode not in get_args(EvalMode):
            raise ValueError(f"model.eval_mode must be one of {get_args(EvalMode)}, got {mode!r}")
        if mode.startswith("fhn") and not self.settings.use_fhn:
            raise ValueError(f"model.eval_mode={mode!r} needs FHN, but this model has use_fhn: false")
        self._eval_mode = mode

    def on_fit_start(self) -> None:
        # Not in setup(): Lightning sets trainer.ckpt_path only after setup(), when it restores a checkpoint; here a
        # resumed run (whose checkpoint holds the teacher) is told apart from a fresh one and never needs the file.
        if self.trainer.ckpt_path is None:
            load_pretrained(
                self.teacher.net,
                self.settings.teacher_weights,
                "model.teacher_weights",
                built_pretrained=built_pretrained(self.hparams["teacher_backbone_kwargs"]),
            )

    # ------------------------------------------------------------------------------------------ embedding
    def reference_embedder(self) -> Callable[[Tensor], Tensor]:
        return self.teacher.embed  # the frozen HR teacher N_T on HR and bicubic faces

    def embed(self, images: Tensor) -> Tensor:
        """HR gallery faces: the teacher's embedding ``f_T`` (§3.3)."""
        return self.teacher.embed(images)

    def super_resolve(self, lr: Tensor) -> FHNOutput:
        """FHN on LR probes (bicubic-upsampled to the HR size): coarse and SR faces, heatmaps, parsing scores.

        Args:
            lr: ``(B, 3, H, W)`` probes in ``[0, 1]``.

        Returns:
            :class:`~crossres.nn.hallucination.FHNOutput` (``sr`` not clamped).

        Raises:
            RuntimeError: if the model was built with ``use_fhn: false``.
        """
        if self.fhn is None:
            raise RuntimeError("this RIM was built with use_fhn: false and has no FHN")
        return self.fhn(lr)

    def embed_lr(self, images: Tensor, lr_size: Tensor) -> Tensor:
        """LR probes, by ``eval_mode``: ``f_S = f_S^K + f_A^K`` on the SR face through the teacher's head (``rim``)."""
        if self.eval_mode == "teacher":
            return self.teacher.embed(images)
        probe = self.super_resolve(images).sr if self.fhn is not None else images
        if self.eval_mode == "fhn_teacher":
            return self.teacher.embed(probe)
        feature = self.student(probe)[-1]
        if self.eval_mode == "rim" and self.assistant is not None:
            feature = feature + self.assistant(probe)[-1]  # §3.2: f_S = f_S^K + f_A^K
        return self.teacher.head(feature)

    # ------------------------------------------------------------------------------------------- players
    def configure_optimizers(self) -> Any:
        players: list[Any] = []
        if self.fhn is not None:
            players.append(
                [
                    {"params": self.fhn.generator_parameters(), "name": "generator"},
                    {"params": list(self.fhn.integrator.parameters()), "name": "integrator"},
                ]
            )
            domain = [*self.fhn.domain.parameters(), *(p for p in self.mmd.parameters() if p.requires_grad)]
            players.append([{"params": domain, "name": "domain"}])
        players.append([{"params": list(self.student.parameters()), "name": "student"}])
        if self.assistant is not None:
            players.append([{"params": list(self.assistant.parameters()), "name": "assistant"}])
        return [
            self._optimizer(groups, self.settings.fhn_lr if name in ("fhn", "domain") else None)
            for name, groups in zip(self.player_names(), players, strict=True)
        ]

    def player_names(self) -> list[str]:
        """Names of the players, in the order of ``configure_optimizers``."""
        names = ["fhn", "domain"] if self.fhn is not None else []
        return names + ["student"] + (["assistant"] if self.assistant is not None else [])

    def _optimizer(self, groups: list[dict[str, Any]], lr: float | None = None) -> dict[str, Any]:
        lr = self.settings.lr if lr is None else lr
        if self.settings.optimizer != "rmsprop":
            return self.optimizer_and_scheduler(groups, lr=lr)
        return self.with_schedule(torch.optim.RMSprop(groups, lr=lr, weight_decay=self.settings.weight_decay))  # §4

    def _step(self, optimizer: Any, loss: Tensor) -> None:
        optimizer.zero_grad()
        self.manual_backward(loss)
        if self.settings.gradient_clip is not None:
            self.clip_gradients(
                optimizer, gradient_clip_val=self.settings.gradient_clip, gradient_clip_algorithm="norm"
            )
        optimizer.step()

    def _finite(self, losses: dict[str, Tensor]) -> bool:
        return all(self.check_finite(name, value) for name, value in losses.items())

    def _prior_targets(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        if "landmarks" not in batch:
            raise ValueError(
                "model.use_priors is true, but the training batch has no 'landmarks' (68 iBUG points per face) for "
                "the landmark and parsing losses of RIM Eqs. (3)-(4): train on data with landmarks (data.train_format: "
                "synthetic gives exact ones) or set model.use_priors: false"
            )
        landmarks = batch["landmarks"].float()
        if landmarks.shape[1] != self.settings.num_landmarks:
            raise ValueError(
                f"batch['landmarks'] has {landmarks.shape[1]} points but model.num_landmarks is "
                f"{self.settings.num_landmarks}"
            )
        return prior_targets(landmarks, batch.get("parsing"), self.image_size, self.settings.heatmap_sigma)

    # ------------------------------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        optimizers = self.optimizers()
        opts = dict(zip(self.player_names(), optimizers if isinstance(optimizers, list) else [optimizers], strict=True))
        hr, lr = batch["hr"], batch["lr"]
        after = self.settings.assistant_after_epoch
        if after is not None and self.current_epoch >= after:
            self._assistant_phase_step(opts["assistant"], hr, lr)
            return
        with torch.no_grad():
            teacher_maps = self.teacher(hr)  # f_T^1 ... f_T^K on the HR face
        probe, fhn = lr, None
        if self.fhn is not None:
            # FHN forward and its losses; its step comes after HRN's, which hand back their gradients w.r.t. I_sr.
            fhn = self.fhn_losses(opts["fhn"], batch)
            if fhn is None:
                return
            # HRN sees I_sr as an input leaf: its backward passes leave dL_S/dI_sr, dL_A/dI_sr in probe.grad.
            probe = fhn[0].sr.detach().requires_grad_(self.settings.lambda_recognition > 0)
        hrn = self.hrn_steps(opts, probe, teacher_maps)
        if hrn is None or fhn is None:
            return
        self.fhn_step(opts["fhn"], hr, *fhn, *hrn)
        self.discriminator_step(opts["domain"], fhn[0])

    def fhn_losses(self, optimizer: Any, batch: dict[str, Any]) -> tuple[FHNOutput, dict[str, Tensor]] | None:
        """FHN's forward and Eq. (1)'s terms (``fhn``: their sum); ``None`` when one is not finite."""
        assert self.fhn is not None
        s, hr = self.settings, batch["hr"]
        with self.toggled_optimizer(optimizer):
            out = self.fhn(batch["lr"], hr)
            assert out.maps_hr is not None
            terms = {
                "mmd": self.mmd(self.fhn.domain(out.maps), self.fhn.domain(out.maps_hr)),  # Eqs. (7)-(9)
                "pixel": self.pixel_loss(out.sr, hr),  # Eq. (2)
            }
            if s.use_priors:
                heatmaps, parsing = self._prior_targets(batch)
                terms["landmark"] = self.landmark_loss(out.heatmaps, heatmaps)  # Eq. (3)
                terms["parsing"] = self.parsing_loss(out.parsing_logits, parsing)  # Eq. (4)
            # Eq. (1): L_G = L_domain + λ0 L_pixel + λ1 L_landmark + λ2 L_parsing
            loss = s.lambda_domain * terms["mmd"] + s.lambda_pixel * terms["pixel"]
            if s.use_priors:
                loss = loss + s.lambda_landmark * terms["landmark"]
                loss = loss + s.lambda_parsing * terms["parsing"]
            terms["fhn"] = loss
            if not self._finite(terms):
                return None
        return out, terms

    def student_step(
        self, optimizer: Any, probe: Tensor, teacher_maps: list[Tensor]
    ) -> tuple[dict[str, Tensor], list[Tensor]] | None:
        """Player N_S: min Eq. (11) on the probe; returns its losses and block maps (``None``: not finite)."""
        # The 1x1 adapters of blocks 1 .. K-1 (if any) are fitted to the teacher's maps on detached block outputs,
        # so the network itself only sees Eq. (11).
        with self.toggled_optimizer(optimizer):
            student_maps = self.student(probe, detach_inner=True)
            losses = {"student": self.student_loss(teacher_maps[-1], student_maps[-1])}  # Eq. (11)
            inner = [k for k in self.student.adapted_blocks() if k < len(student_maps) - 1]
            if inner:
                fits = [self.student_loss(teacher_maps[k], student_maps[k]) for k in inner]
                losses["student_adapters"] = torch.stack(fits).sum()
            if not self._finite(losses):
                return None
            self._step(optimizer, torch.stack(list(losses.values())).sum())
        return losses, student_maps

    def assistant_step(
        self, optimizer: Any, probe: Tensor, teacher_maps: list[Tensor], student_maps: list[Tensor]
    ) -> Tensor | None:
        """Player N_A: min Eq. (12), the residuals ``f_T^k - f_S^k`` at every block (``f_S^k`` constants)."""
        assert self.assistant is not None
        with self.toggled_optimizer(optimizer):
            loss = self.assistant_loss(teacher_maps, student_maps, self.assistant(probe))
            if not self._finite({"assistant": loss}):
                return None
            self._step(optimizer, loss)
        return loss

    def hrn_steps(
        self, opts: dict[str, Any], probe: Tensor, teacher_maps: list[Tensor]
    ) -> tuple[Tensor, Tensor | None] | None:
        """Student and assistant steps; returns §3.3's relative distillation error and its gradient w.r.t. ``probe``."""
        student = self.student_step(opts["student"], probe, teacher_maps)
        if student is None:
            return None
        losses, student_maps = student
        # §3.3 coupling: each distillation error relative to the teacher's map energy (dimensionless, see the docs).
        energy = [self.student_loss(f, torch.zeros_like(f)).clamp_min(1e-12) for f in teacher_maps]
        recognition = losses["student"].detach() / energy[-1]
        probe_grad = probe.grad / energy[-1] if probe.grad is not None else None
        probe.grad = None
        if self.assistant is not None and self.settings.assistant_after_epoch is None:
            loss = self.assistant_step(opts["assistant"], probe, teacher_maps, student_maps)
            if loss is None:
                return None
            losses["assistant"] = loss
            weights = self.assistant_loss.weights(len(energy))
            total_energy = sum(w * e for w, e in zip(weights, energy, strict=True))
            recognition = recognition + loss.detach() / total_energy
            if probe.grad is not None and probe_grad is not None:
                probe_grad = probe_grad + probe.grad / total_energy
        for name, value in losses.items():
            self.log(
                f"train_loss_{name}", value.detach(), batch_size=probe.shape[0], prog_bar=name != "student_adapters"
            )
        return recognition, probe_grad

    def fhn_step(
        self,
        optimizer: Any,
        hr: Tensor,
        out: FHNOutput,
        terms: dict[str, Tensor],
        recognition: Tensor,
        probe_grad: Tensor | None,
    ) -> None:
        """Player FHN (θ_G, θ_i): min Eq. (1) (Eq. (5) for θ_i) + λ_rec L_rec through ``I_sr`` (§3.3, end to end)."""
        lambda_recognition = self.settings.lambda_recognition
        with self.toggled_optimizer(optimizer):
            objective = terms["fhn"]
            if lambda_recognition > 0 and probe_grad is not None:
                terms["recognition"] = recognition
                objective = objective + lambda_recognition * (out.sr * probe_grad).sum()
            self._step(optimizer, objective)
        n = out.sr.shape[0]
        for name, value in terms.items():
            key = "train_mmd" if name == "mmd" else f"train_loss_{name}"
            self.log(key, value.detach(), batch_size=n, prog_bar=name == "fhn")
        self.log("train_psnr_sr", psnr(out.sr.detach().clamp(0, 1), hr), batch_size=n)

    def discriminator_step(self, optimizer: Any, out: FHNOutput) -> None:
        """Player D_d (θ_d, β): max L_domain, i.e. min Eq. (6) ``L_Dd = -L_domain``, on the detached maps."""
        assert self.fhn is not None and out.maps_hr is not None
        with self.toggled_optimizer(optimizer):
            loss = -self.mmd(self.fhn.domain(out.maps.detach()), self.fhn.domain(out.maps_hr.detach()))
            if not self._finite({"domain": loss}):
                return
            self._step(optimizer, loss)
        n = out.sr.shape[0]
        self.log("train_loss_domain", loss.detach(), batch_size=n)
        for u, beta in enumerate(self.mmd.kernel_weights.detach()):
            self.log(f"train_kernel_weight_{u}", beta, batch_size=n)

    def _assistant_phase_step(self, optimizer: Any, hr: Tensor, lr: Tensor) -> None:
        """Eq. (12) alone, on the residuals of the frozen FHN and student in inference mode (§3.2)."""
        frozen = [m for m in (self.fhn, self.student) if m is not None]
        modes = [m.training for m in frozen]
        for module in frozen:
            module.eval()
        with torch.no_grad():
            teacher_maps = self.teacher(hr)
            probe = self.super_resolve(lr).sr if self.fhn is not None else lr
            student_maps = self.student(probe)
        for module, mode in zip(frozen, modes, strict=True):
            module.train(mode)
        loss = self.assistant_step(optimizer, probe, teacher_maps, student_maps)
        if loss is not None:
            self.log("train_loss_assistant", loss.detach(), batch_size=hr.shape[0], prog_bar=True)

    def on_train_epoch_end(self) -> None:
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            scheduler.step()  # type: ignore[call-arg]

    # ----------------------------------------------------------------------------------------- evaluation
    def _quality_step(self, split: str, batch: dict[str, Any]) -> None:
        # Table 4: PSNR / SSIM of the SR face and of the bicubic probe against the HR face.
        if self.fhn is None:
            return
        sizes = self.settings.quality_lr_sizes
        for protocol, lr in batch["lr1"].items():
            if sizes is None or protocol in {f"{int(s)}px" for s in sizes}:
                sr = self.super_resolve(lr).sr.clamp(0, 1)
                self.quality.update(split, protocol, {"sr": sr, "bicubic": lr.clamp(0, 1)}, batch["hr1"])

    def _quality_epoch_end(self, split: str) -> None:
        protocols = self.quality.compute(split)
        for protocol, values in protocols.items():
            for kind, value in values.items():
                self.log(f"{split}_{kind}_{protocol}", value, batch_size=1)
        self.sr_quality[split] = [{"split": split, "protocol": p} | v for p, v in sorted(protocols.items())]

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        super().validation_step(batch, batch_idx, dataloader_idx)
        self._quality_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self._quality_epoch_end("val")

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        super().test_step(batch, batch_idx, dataloader_idx)
        self._quality_step("test", batch)

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self._quality_epoch_end("test")
