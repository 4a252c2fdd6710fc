"""RIM (001): a face hallucination sub-net (FHN) and a heterogeneous recognition sub-net (HRN), trained jointly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal, get_args

import torch
from torch import Tensor

from crossres.data.needs import DataNeeds
from crossres.methods.base import HR_MODEL_PATH, CrossResMethod, built_pretrained, freeze, load_pretrained
from crossres.metrics.image_quality import psnr
from crossres.nn.hallucination import FHNOutput, prior_targets
from crossres.nn.rim import PARTS, ProbePath, ResolutionInvariantNet

__all__ = ["RIM"]

EvalMode = ProbePath
Maps = list[Tensor]  # block maps f^1 ... f^K
StudentStep = tuple[dict[str, Tensor], Maps]  # N_S's losses and maps


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

    #: RIM's networks and the computations of its players, without Lightning (shares this module's weights).
    net: ResolutionInvariantNet

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
        self.automatic_optimization = False  # the minimax of Eq. (10): one optimizer per player, stepped by hand
        self.eval_mode = hp["eval_mode"]

        net = ResolutionInvariantNet.build(hp, self.image_size)
        freeze(net.teacher)  # the pretrained HR teacher, loaded in on_fit_start
        # The networks are registered here under their own names, so that this module's state-dict keys are the
        # torch model's ("teacher.*", "fhn.*", ...); the torch model itself is kept beside them, not registered twice.
        for name in PARTS:
            self.add_module(name, getattr(net, name))
        object.__setattr__(self, "net", net)

    @property
    def eval_mode(self) -> str:
        """The probe path used by :meth:`embed_lr` (settable, e.g. to evaluate Table 1's ablations)."""
        return self._eval_mode

    @eval_mode.setter
    def eval_mode(self, mode: str) -> None:
        if mode not in get_args(EvalMode):
            raise ValueError(f"model.eval_mode must be one of {get_args(EvalMode)}, got {mode!r}")
        if mode.startswith("fhn") and not self.hparams["use_fhn"]:
            raise ValueError(f"model.eval_mode={mode!r} needs FHN, but this model has use_fhn: false")
        self._eval_mode = mode

    def data_needs(self) -> DataNeeds:
        # Eqs. (3)-(4): the landmark and parsing priors are targets drawn from each face's 68 landmarks.
        return DataNeeds(landmarks=bool(self.hparams["use_priors"]))

    def on_fit_start(self) -> None:
        # Not in setup(): Lightning sets trainer.ckpt_path only after setup(), when it restores a checkpoint; here a
        # resumed run (whose checkpoint holds the teacher) is told apart from a fresh one and never needs the file.
        if self.trainer.ckpt_path is None:
            load_pretrained(
                self.net.teacher.net,
                self.hparams["teacher_weights"],
                "model.teacher_weights",
                built_pretrained=built_pretrained(self.hparams["teacher_backbone_kwargs"]),
            )

    # ------------------------------------------------------------------------------------------ embedding
    def reference_embedder(self) -> Callable[[Tensor], Tensor]:
        return self.net.teacher.embed  # the frozen HR teacher N_T on HR and bicubic faces

    def embed(self, images: Tensor) -> Tensor:
        """HR gallery faces: the teacher's embedding ``f_T`` (§3.3)."""
        return self.net.teacher.embed(images)

    def embed_lr(self, images: Tensor, lr_size: Tensor) -> Tensor:
        """LR probes along ``eval_mode``'s path (``rim``: ``f_S = f_S^K + f_A^K`` on the SR face, §3.2)."""
        return self.net.embed_probe(images, self.eval_mode)  # type: ignore[arg-type]

    def super_resolve(self, lr: Tensor) -> FHNOutput:
        """FHN on LR probes: :meth:`ResolutionInvariantNet.super_resolve <crossres.nn.rim.ResolutionInvariantNet>`."""
        return self.net.super_resolve(lr)

    def sr_probe(self, images: Tensor, protocol: str) -> Tensor | None:
        sizes = self.hparams["quality_lr_sizes"]  # Table 4: PSNR / SSIM of the SR face at these protocols
        if self.net.fhn is None or (sizes is not None and protocol not in {f"{int(s)}px" for s in sizes}):
            return None
        return self.net.super_resolve(images).sr

    # ------------------------------------------------------------------------------------------- players
    def configure_optimizers(self) -> Any:
        fhn_lr, players = self.hparams["fhn_lr"], self.net.players()  # Eq. (10): one optimizer per player
        return [
            self._optimizer(groups, fhn_lr if name in ("fhn", "domain") else None) for name, groups in players.items()
        ]

    def player_names(self) -> list[str]:
        """Names of the players, in the order of ``configure_optimizers``."""
        return list(self.net.players())

    def _optimizer(self, groups: list[dict[str, Any]], lr: float | None = None) -> dict[str, Any]:
        hp = self.hparams
        lr = hp["lr"] if lr is None else lr
        if hp["optimizer"] != "rmsprop":
            return self.optimizer_and_scheduler(groups, lr=lr)
        return self.with_schedule(torch.optim.RMSprop(groups, lr=lr, weight_decay=hp["weight_decay"]))  # §4

    def _step(self, optimizer: Any, loss: Tensor) -> None:
        optimizer.zero_grad()
        self.manual_backward(loss)
        if (clip := self.hparams["gradient_clip"]) is not None:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")
        optimizer.step()

    def _finite(self, losses: dict[str, Tensor]) -> bool:
        return all(self.check_finite(name, value) for name, value in losses.items())

    def _log_losses(self, losses: dict[str, Tensor], batch_size: int, prog_bar: tuple[str, ...] = ()) -> None:
        for name, value in losses.items():
            key = "train_mmd" if name == "mmd" else f"train_loss_{name}"
            self.log(key, value.detach(), batch_size=batch_size, prog_bar=name in prog_bar)

    def _prior_targets(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        if "landmarks" not in batch:
            raise ValueError(
                "model.use_priors is true, but the training batch has no 'landmarks' (68 iBUG points per face) for "
                "the landmark and parsing losses of RIM Eqs. (3)-(4): train on data with landmarks (data.train_format: "
                "synthetic gives exact ones) or set model.use_priors: false"
            )
        landmarks, expected = batch["landmarks"].float(), self.hparams["num_landmarks"]
        if landmarks.shape[1] != expected:
            raise ValueError(
                f"batch['landmarks'] has {landmarks.shape[1]} points but model.num_landmarks is {expected}"
            )
        return prior_targets(landmarks, batch.get("parsing"), self.image_size, self.hparams["heatmap_sigma"])

    # ------------------------------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        optimizers = self.optimizers()
        opts = dict(zip(self.player_names(), optimizers if isinstance(optimizers, list) else [optimizers], strict=True))
        after = self.hparams["assistant_after_epoch"]
        if after is not None and self.current_epoch >= after:  # §3.2: the assistant alone on the frozen FHN + N_S
            probe, teacher_maps, student_maps = self.net.frozen_residuals(batch["hr"], batch["lr"])
            self.assistant_step(opts["assistant"], probe, teacher_maps, student_maps)
            return
        with torch.no_grad():
            teacher_maps = self.net.teacher(batch["hr"])  # f_T^1 ... f_T^K on the HR face
        probe, fhn = batch["lr"], None
        if self.net.fhn is not None:
            # FHN forward and its losses; its step comes after HRN's, which hand back their gradients w.r.t. I_sr.
            fhn = self.generator_forward(opts["fhn"], batch)
            if fhn is None:
                return
            # HRN sees I_sr as an input leaf: its backward passes leave dL_S/dI_sr, dL_A/dI_sr in probe.grad.
            probe = fhn[0].sr.detach().requires_grad_(self.hparams["lambda_recognition"] > 0)
        hrn = self.hrn_steps(opts, probe, teacher_maps)
        if hrn is None or fhn is None:
            return
        self.generator_step(opts["fhn"], batch["hr"], fhn, hrn)
        self.discriminator_step(opts["domain"], fhn[0])

    def generator_forward(self, optimizer: Any, batch: dict[str, Any]) -> tuple[FHNOutput, dict[str, Tensor]] | None:
        """FHN's forward and Eq. (1)'s terms (``fhn``: ``L_G``); ``None`` when one is not finite."""
        with self.toggled_optimizer(optimizer):
            priors = self._prior_targets(batch) if self.hparams["use_priors"] else None  # Eqs. (3)-(4)
            out, terms = self.net.generator_losses(batch["lr"], batch["hr"], priors)
            if not self._finite(terms):
                return None
        return out, terms

    def student_step(self, optimizer: Any, probe: Tensor, teacher_maps: Maps) -> StudentStep | None:
        """Player N_S: min Eq. (11) on the probe; returns its losses and block maps (``None``: not finite)."""
        with self.toggled_optimizer(optimizer):
            losses, student_maps = self.net.student_losses(probe, teacher_maps)
            if not self._finite(losses):
                return None
            self._step(optimizer, torch.stack(list(losses.values())).sum())
        return losses, student_maps

    def assistant_step(self, optimizer: Any, probe: Tensor, teacher_maps: Maps, student_maps: Maps) -> Tensor | None:
        """Player N_A: min Eq. (12), the residuals ``f_T^k - f_S^k`` at every block (``f_S^k`` constants)."""
        with self.toggled_optimizer(optimizer):
            loss = self.net.assistant_losses(probe, teacher_maps, student_maps)
            if not self._finite({"assistant": loss}):
                return None
            self._step(optimizer, loss)
        self._log_losses({"assistant": loss}, probe.shape[0], prog_bar=("assistant",))
        return loss

    def hrn_steps(self, opts: dict[str, Any], probe: Tensor, teacher_maps: Maps) -> tuple[Tensor, Tensor | None] | None:
        """Student and assistant steps; returns §3.3's relative distillation error and its gradient w.r.t. ``probe``."""
        student = self.student_step(opts["student"], probe, teacher_maps)
        if student is None:
            return None
        losses, student_maps = student
        # §3.3 coupling: each distillation error relative to the teacher's map energy (dimensionless, see the docs).
        energy = self.net.student_loss.teacher_energy(teacher_maps)
        recognition = losses["student"].detach() / energy
        probe_grad = probe.grad / energy if probe.grad is not None else None
        probe.grad = None
        if self.net.assistant is not None and self.hparams["assistant_after_epoch"] is None:
            loss = self.assistant_step(opts["assistant"], probe, teacher_maps, student_maps)
            if loss is None:
                return None
            energy = self.net.assistant_loss.teacher_energy(teacher_maps)
            recognition = recognition + loss.detach() / energy
            if probe.grad is not None and probe_grad is not None:
                probe_grad = probe_grad + probe.grad / energy
        self._log_losses(losses, probe.shape[0], prog_bar=("student",))
        return recognition, probe_grad

    def generator_step(
        self, optimizer: Any, hr: Tensor, fhn: tuple[FHNOutput, dict[str, Tensor]], hrn: tuple[Tensor, Tensor | None]
    ) -> None:
        """Player FHN (θ_G, θ_i): min Eq. (1) (Eq. (5) for θ_i) + λ_rec L_rec through ``I_sr`` (§3.3, end to end)."""
        (out, terms), (recognition, probe_grad) = fhn, hrn
        lambda_recognition = self.hparams["lambda_recognition"]
        with self.toggled_optimizer(optimizer):
            objective = terms["fhn"]
            if lambda_recognition > 0 and probe_grad is not None:
                terms["recognition"] = recognition
                objective = objective + lambda_recognition * (out.sr * probe_grad).sum()
            self._step(optimizer, objective)
        self._log_losses(terms, out.sr.shape[0], prog_bar=("fhn",))
        self.log("train_psnr_sr", psnr(out.sr.detach().clamp(0, 1), hr), batch_size=out.sr.shape[0])

    def discriminator_step(self, optimizer: Any, out: FHNOutput) -> None:
        """Player D_d (θ_d, β): max L_domain, i.e. min Eq. (6) ``L_Dd = -L_domain``, on the detached maps."""
        with self.toggled_optimizer(optimizer):
            loss = self.net.domain_loss(out)
            if not self._finite({"domain": loss}):
                return
            self._step(optimizer, loss)
        self._log_losses({"domain": loss}, out.sr.shape[0])
        for u, beta in enumerate(self.net.mmd.kernel_weights.detach()):
            self.log(f"train_kernel_weight_{u}", beta, batch_size=out.sr.shape[0])

    def on_train_epoch_end(self) -> None:
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            scheduler.step()  # type: ignore[call-arg]
