"""`CrossResMethod`: the lifecycle every method shares; evaluation is written once, here."""

from __future__ import annotations

import importlib
import random
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, cast

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.warnings import PossibleUserWarning
from torch import Tensor, nn
from torchmetrics import Metric
from typing_extensions import Self

from crossres.data.needs import DataNeeds
from crossres.losses.retention import RetentionLoss
from crossres.metrics.image_quality import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure
from crossres.metrics.verification import VerificationMetric
from crossres.nn.backbones import build_backbone
from crossres.nn.heads import build_head
from crossres.nn.weights import load_backbone_weights
from crossres.transforms.functional import to_float

__all__ = [
    "HR_MODEL_COMMAND",
    "HR_MODEL_PATH",
    "CrossResMethod",
    "NonFiniteLossError",
    "RecogniserMethod",
    "built_pretrained",
    "freeze",
    "is_frozen",
    "load_method",
    "load_pretrained",
    "nearest_size_index",
    "recogniser_backbone",
]

#: Where the method configs expect the HR recogniser (guide / teacher), and how it is made (`make run`: 64 px).
HR_MODEL_PATH = "runs/hr_teacher/checkpoints/last.ckpt"
HR_MODEL_COMMAND = "crossres fit -c experiments/baseline.yaml --name hr_teacher"


def load_pretrained(
    module: nn.Module,
    path: str | None,
    key: str,
    prefix: str | None = None,
    *,
    what: str = "a pretrained HR recogniser",
    command: str = HR_MODEL_COMMAND,
    made_at: str = HR_MODEL_PATH,
    built_pretrained: bool = False,
) -> None:
    """Load a pretrained network (guide, teacher, recogniser, trunk) or stop with the command that makes it.

    Args:
        module: the network to load into (a backbone built with the same arguments as the saved one).
        path: a crossres checkpoint or an insightface ``backbone.pth``; ``None`` keeps the weights of a network
            built pretrained (``built_pretrained``).
        key: the config key that holds ``path``, named in the error (e.g. ``"model.guide_weights"``).
        prefix: state-dict prefix inside a Lightning checkpoint (default: auto-detect ``backbone.``).
        what: the network, as the error names it.
        command: the command that trains it, given in the error.
        made_at: where ``command`` writes it.
        built_pretrained: ``module`` already holds pretrained weights (its backbone arguments say
            ``pretrained: true``, e.g. dlib's recogniser); a file in ``path`` still replaces them.

    Raises:
        FileNotFoundError: ``path`` is missing, or unset for a network not built pretrained; the message gives the
            command that produces it.
    """
    if not path and built_pretrained:
        return
    if not path or not Path(path).is_file():
        raise FileNotFoundError(
            f"{key} = {path!r}: this method needs {what} and none is there. Train it on the same data first:\n"
            f"    {command}\nthen pass {key}={made_at} (or an insightface backbone.pth with the same backbone "
            "arguments), or set it to null with a backbone that brings its own weights (backbone_kwargs: "
            "{pretrained: true}, e.g. dlib_resnet)."
        )
    load_backbone_weights(module, path, prefix=prefix)


ModuleT = TypeVar("ModuleT", bound=nn.Module)

_FROZEN = "_crossres_frozen"


def freeze(module: ModuleT) -> ModuleT:
    """Freeze a pretrained network: no gradients, eval mode, kept in eval mode by :meth:`CrossResMethod.train`.

    BatchNorm statistics and dropout of a frozen network then never change, also while the method trains.

    Args:
        module: the network (a guide, teacher, recogniser or trunk) inside a :class:`CrossResMethod`.

    Returns:
        ``module``, frozen.
    """
    module.requires_grad_(False)
    module.eval()
    setattr(module, _FROZEN, True)
    return module


def is_frozen(module: nn.Module) -> bool:
    """Whether :func:`freeze` froze ``module``."""
    return bool(getattr(module, _FROZEN, False))


_COMPARISONS = {"hr_hr": "HR-HR", "lr_lr": "LR-LR", "hr_lr": "HR-LR"}
_SR_MEASURES = (("psnr", PeakSignalNoiseRatio), ("ssim", StructuralSimilarityIndexMeasure))


class NonFiniteLossError(RuntimeError):
    """A loss, weight or buffer became NaN or infinite; raised before a weight update or a checkpoint takes it."""


class CrossResMethod(pl.LightningModule):
    """Base of every crossres method.

    Subclasses build their networks in :meth:`build` (called once, after ``save_hyperparameters``), define
    ``training_step`` and :meth:`embed` (or :meth:`embed_hr` / :meth:`embed_lr` where HR and LR faces take
    different networks). Validation and test are the same for every method: each pair set is scored
    HR-HR, LR-LR and HR-LR at every protocol, HR-LR averaged over both pair orders (Knoche et al. 2021
    §3.4), and logged under flat keys such as ``val_acc_lfw_hr_lr_14px``; ``val_acc_hr_lr`` (the mean
    over pair sets and protocols) is what checkpoints monitor.

    Args:
        num_classes: training identities (linked from the data module by the CLI).
        image_size: HR input size ``(h, w)`` (linked from the data module by the CLI).
        optimizer: ``"sgd"`` (momentum SGD, as the papers) or ``"adamw"``.
        lr: learning rate.
        head_lr: learning rate of the classification heads (:meth:`head_modules`; ``None``: ``lr``). A new head
            over a pretrained recogniser takes a larger one than the recogniser it fine-tunes.
        momentum: SGD momentum.
        weight_decay: weight decay.
        milestones: epochs at which the learning rate is multiplied by ``lr_gamma``.
        lr_gamma: learning-rate decay factor at each milestone.
        warmup_epochs: linear learning-rate warm-up length in epochs (0 = none).
        flip_test: embed ``x`` and its mirror image, sum, normalise (insightface's test-time flip).
        far: false accept rate at which TAR is reported.
        nonfinite: on a NaN/inf loss, ``"stop"`` with an error naming the loss and the step, or ``"skip"``
            the step (no weight update) and count it in ``train_skipped_steps``.
        channels_last: keep the 4-D weights in ``torch.channels_last`` memory format (faster convolutions with
            tensor cores, e.g. under ``bf16-mixed``); checkpoints are unaffected.
        compile: ``torch.compile`` every backbone (:meth:`compile_targets`) in place, so state-dict keys stay as
            they are (no ``_orig_mod.``): checkpoints of compiled and uncompiled models load into each other.
        compile_backend: the ``torch.compile`` backend (``inductor``; ``aot_eager`` compiles nothing, for debugging).
    """

    #: ``trainer.precision`` the CLI picks on a GPU when the config leaves it unset (``null``); CPU runs use 32-true.
    gpu_precision: ClassVar[str] = "32-true"

    def __init__(
        self,
        num_classes: int = 100,
        image_size: tuple[int, int] = (112, 112),
        optimizer: Literal["sgd", "adamw"] = "sgd",
        lr: float = 0.1,
        head_lr: float | None = None,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        milestones: list[int] | None = None,
        lr_gamma: float = 0.1,
        warmup_epochs: int = 0,
        flip_test: bool = False,
        far: float = 1e-3,
        nonfinite: Literal["stop", "skip"] = "stop",
        channels_last: bool = False,
        compile: bool = False,
        compile_backend: str = "inductor",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if num_classes < 2:
            raise ValueError(f"model.num_classes must be >= 2, got {num_classes}")
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.eval_metrics = nn.ModuleDict()
        self.eval_results: dict[str, list[dict[str, Any]]] = {}
        self.reference_results: dict[str, list[dict[str, Any]]] = {}
        self.sr_quality: dict[str, list[dict[str, Any]]] = {}  # PSNR / SSIM rows of methods that super-resolve
        self.sr_metrics = nn.ModuleDict()
        self.eval_scores: dict[str, dict[str, Tensor]] = {}
        self.skipped_steps = 0
        self._rng_to_restore: dict[str, Any] | None = None
        self.build()
        if channels_last:
            self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if compile:
            for module in self.compile_targets():
                module.compile(backend=compile_backend)  # in place: the state-dict keys keep their names

    def configure_callbacks(self) -> list[pl.Callback]:
        return [_ExpectedEvalModeFilter()]

    def compile_targets(self) -> list[nn.Module]:
        """The networks ``compile: true`` compiles: the outermost backbones (``crossres.nn.backbones``, the block-wise
        wrappers of ``crossres.nn.distillation``, timm models). Override to choose others.
        """
        targets: list[nn.Module] = []
        for _, module in self.named_modules():
            kind = type(module).__module__
            is_backbone = kind in _BACKBONE_MODULES or kind.startswith("timm.")
            if is_backbone and not any(_is_inside(module, outer) for outer in targets):
                targets.append(module)
        return targets

    # ------------------------------------------------------------------------------------- subclasses
    def build(self) -> None:
        """Build the method's networks and losses from ``self.hparams``."""
        raise NotImplementedError

    def embed(self, images: Tensor) -> Tensor:
        """Embed float images in ``[0, 1]`` of the HR input size; returns ``(B, D)`` (not normalised)."""
        raise NotImplementedError

    def embed_hr(self, images: Tensor) -> Tensor:
        """Embed HR gallery faces."""
        return self.embed(images)

    def embed_lr(self, images: Tensor, lr_size: Tensor) -> Tensor:
        """Embed LR probes (degraded and re-upsampled to the HR size); ``lr_size`` is ``(B, 2)``."""
        return self.embed(images)

    def forward(self, images: Tensor) -> Tensor:
        return self.embed(images)

    def train(self, mode: bool = True) -> Self:
        """Set the train/eval mode; networks frozen by :func:`freeze` stay in eval mode."""
        super().train(mode)
        for module in self.modules():
            if is_frozen(module):
                module.eval()
        return self

    # -------------------------------------------------------------------------------------- data needs
    def data_needs(self) -> DataNeeds:
        """What this method needs from the training data (:class:`~crossres.data.needs.DataNeeds`; default: nothing).

        Checked once, at ``setup("fit")``, by the data module (:meth:`FaceDataModule.check_needs
        <crossres.data.datamodule.FaceDataModule.check_needs>`), which names the ``data.*`` key to set.
        """
        return DataNeeds()

    def setup(self, stage: str) -> None:
        """``fit``: the data module checks :meth:`data_needs`. A subclass that overrides ``setup`` calls this first."""
        if stage == "fit":
            self.check_data_needs()

    def check_data_needs(self) -> None:
        """Have the trainer's data module check :meth:`data_needs`; warn once if it cannot (no ``check_needs``)."""
        needs, name = self.data_needs(), type(self).__name__
        if needs.empty:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        check = getattr(datamodule, "check_needs", None)
        if check is None:
            warnings.warn(
                f"{name} cannot check that the training data gives what it needs ({needs.describe()}): the data "
                "module is not a FaceDataModule (no check_needs); make sure that the batches do",
                stacklevel=2,
            )
            return
        check(needs, name)

    # ---------------------------------------------------------------------------------------- resuming
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        bad = self.nonfinite_tensors()
        if bad:  # a diverged model must never become last.ckpt (what --ckpt_path last would resume)
            raise NonFiniteLossError(
                f"{type(self).__name__}: {_listing(bad)} not finite at global step {self.global_step} (epoch "
                f"{self.current_epoch}); the run diverged and no checkpoint was written. Lower model.lr or check "
                "the data, then resume from an earlier checkpoint."
            )
        # Lightning does not save the global RNGs; methods that draw from them in training_step (dropout, random
        # occlusions) need them to continue a killed run exactly as an uninterrupted one.
        checkpoint["crossres_rng"] = _rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state_dict = checkpoint.get("state_dict", {})
        if any("_orig_mod." in key for key in state_dict):  # saved from a torch.compile wrapper
            checkpoint["state_dict"] = {key.replace("_orig_mod.", ""): value for key, value in state_dict.items()}
        self._rng_to_restore = checkpoint.get("crossres_rng")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Restored here, not when the checkpoint is loaded: setting up the resumed run draws from the global RNG.
        if self._rng_to_restore is not None:
            if self.trainer.ckpt_path is not None:  # a resumed fit, not a fit of a model loaded from a checkpoint
                _set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
        if isinstance(batch, dict) and "corrupt" in batch:  # data.skip_corrupt: records skipped for this batch
            skipped = batch["corrupt"].sum().float()
            self.log("train_corrupt_skipped", skipped, on_step=False, on_epoch=True, reduce_fx="sum", sync_dist=True)

    # ---------------------------------------------------------------------------------------- training
    def nonfinite_tensors(self) -> list[str]:
        """Names of the parameters and buffers (BatchNorm statistics, ...) that hold a NaN or an infinity."""
        named = [*self.named_parameters(), *self.named_buffers()]
        named = [(n, t) for n, t in named if not n.startswith("eval_metrics.") and t.is_floating_point()]
        if not named or bool(torch.stack([torch.isfinite(t).all() for _, t in named]).all()):
            return []
        return [n for n, t in named if not torch.isfinite(t).all()]

    def check_finite(self, name: str, loss: Tensor) -> bool:
        """Return ``True`` if ``loss`` is finite; otherwise stop or skip as ``nonfinite`` says.

        A non-finite loss of a model whose weights or buffers have already diverged always stops: skipping the
        step cannot repair them (the forward pass has already updated the BatchNorm statistics).
        """
        if torch.isfinite(loss).all():
            return True
        value = loss.detach().float().cpu().tolist()
        bad = self.nonfinite_tensors()
        if bad:
            raise NonFiniteLossError(
                f"{type(self).__name__}: loss {name!r} is {value} at global step {self.global_step} (epoch "
                f"{self.current_epoch}) because the model has diverged: {_listing(bad)} not finite. Lower model.lr "
                "or check the data, then resume from a checkpoint written before the divergence."
            )
        if self.hparams["nonfinite"] == "skip":
            self.skipped_steps += 1
            self.log("train_skipped_steps", float(self.skipped_steps), batch_size=1)
            return False
        raise NonFiniteLossError(
            f"{type(self).__name__}: loss {name!r} is {value} at global step {self.global_step} (epoch "
            f"{self.current_epoch}); no weights were updated with it. Lower model.lr, "
            "check the data, or set model.nonfinite: skip to skip such steps."
        )

    def finite_or_none(self, name: str, loss: Tensor) -> Tensor | None:
        """``training_step`` helper: the loss, or ``None`` (Lightning skips the step) when non-finite."""
        return loss if self.check_finite(name, loss) else None

    def head_modules(self) -> list[nn.Module]:
        """Hook: the classification heads, trained at ``head_lr`` (default: none)."""
        return []

    def trainable_parameters(self) -> list[nn.Parameter] | list[dict[str, Any]]:
        """The parameters to optimise; two groups, the heads' at ``head_lr`` and the rest at ``lr``, when set."""
        params = [p for p in self.parameters() if p.requires_grad]
        head_lr = self.hparams.get("head_lr")
        if head_lr is None:
            return params
        in_heads = {id(p) for head in self.head_modules() for p in head.parameters()}
        if not in_heads:  # a method without classification heads: one group
            return params
        return [
            {"params": [p for p in params if id(p) not in in_heads]},
            {"params": [p for p in params if id(p) in in_heads], "lr": head_lr},
        ]

    def configure_optimizers(self) -> Any:
        return self.optimizer_and_scheduler(self.trainable_parameters())

    def optimizer_and_scheduler(self, params: Any, lr: float | None = None) -> dict[str, Any]:
        """Optimizer over ``params`` with the configured warm-up and step decay (epochs)."""
        hp = self.hparams
        lr = hp["lr"] if lr is None else lr
        opt: torch.optim.Optimizer
        if hp["optimizer"] == "sgd":
            opt = torch.optim.SGD(params, lr=lr, momentum=hp["momentum"], weight_decay=hp["weight_decay"])
        elif hp["optimizer"] == "adamw":
            opt = torch.optim.AdamW(params, lr=lr, weight_decay=hp["weight_decay"])
        else:
            raise ValueError(f"model.optimizer must be 'sgd' or 'adamw', got {hp['optimizer']!r}")
        return self.with_schedule(opt)

    def with_schedule(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """``optimizer`` with the configured warm-up and step decay (epochs), as ``configure_optimizers`` returns it."""
        hp = self.hparams
        milestones, gamma, warmup = sorted(hp["milestones"] or []), hp["lr_gamma"], hp["warmup_epochs"]

        def factor(epoch: int) -> float:
            ramp = min(1.0, (epoch + 1) / warmup) if warmup > 0 else 1.0
            return ramp * gamma ** sum(epoch >= m for m in milestones)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # -------------------------------------------------------------------------------------- evaluation
    def eval_embed_hr(self, images: Tensor) -> Tensor:
        return self._flip_embed(self.embed_hr, images)

    def eval_embed_lr(self, images: Tensor, lr_size: Tensor) -> Tensor:
        return self._flip_embed(lambda x: self.embed_lr(x, lr_size), images)

    def _flip_embed(self, fn: Any, images: Tensor) -> Tensor:
        embeddings = fn(images)
        if self.hparams["flip_test"]:
            embeddings = embeddings + fn(torch.flip(images, dims=[-1]))
        return F.normalize(embeddings.float(), dim=1)

    def reference_embedder(self) -> Callable[[Tensor], Tensor] | None:
        """The frozen HR network the method starts from (its teacher, guide, recogniser or trunk), or ``None``.

        Evaluation scores it beside the method on the same batches: HR gallery and bicubic probe both through it,
        rows in :attr:`reference_results`. Methods override this with one line, e.g. ``return self.teacher.embed``.
        """
        return None

    def sr_probe(self, images: Tensor, protocol: str) -> Tensor | None:
        """The super-resolved face of LR probes, scored by PSNR / SSIM against the HR face beside the bicubic probe
        (rows in :attr:`sr_quality`); ``None`` (the default) where the method does not super-resolve, or does not
        score this protocol.

        Args:
            images: ``(B, 3, H, W)`` LR probes, degraded and upsampled back to the HR size.
            protocol: their evaluation protocol (e.g. ``14px``).
        """
        return None

    def _metric(self, split: str, pair_set: str, comparison: str, protocol: str = "") -> VerificationMetric:
        key = "__".join(k for k in (split, pair_set, comparison, protocol) if k)
        if key not in self.eval_metrics:
            self.eval_metrics[key] = VerificationMetric().to(self.device)
        return self.eval_metrics[key]  # type: ignore[return-value]

    def eval_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Hook: the validation/test batch as this method scores it (default: unchanged)."""
        return batch

    def cross_score(self, hr: Tensor, lr: Tensor, lr_images: Tensor) -> Tensor:
        """Hook: HR-LR scores of pairs from normalised embeddings (default: their cosine).

        Args:
            hr: ``(B, D)`` embeddings of the HR faces.
            lr: ``(B, D)`` embeddings of the LR faces.
            lr_images: the LR faces ``lr`` embeds.

        Returns:
            ``(B,)`` scores.
        """
        return (hr * lr).sum(1)

    def _eval_step(self, split: str, batch: dict[str, Any]) -> None:
        batch = self.eval_batch(batch)
        self._score(split, batch, self.eval_embed_hr, self.eval_embed_lr)
        self._reference_step(split, batch)
        self._sr_quality_step(split, batch)

    def _sr_quality_step(self, split: str, batch: dict[str, Any]) -> None:
        for protocol, lr in batch["lr1"].items():
            sr = self.sr_probe(lr, protocol)
            if sr is None:
                continue
            for kind, image in (("sr", sr.clamp(0, 1)), ("bicubic", lr.clamp(0, 1))):
                for measure, metric_class in _SR_MEASURES:
                    key = f"{split}__{protocol}__{measure}_{kind}"
                    if key not in self.sr_metrics:
                        self.sr_metrics[key] = metric_class().to(self.device)
                    cast(Metric, self.sr_metrics[key]).update(image, batch["hr1"])

    def _sr_quality_epoch_end(self, split: str) -> None:
        protocols: dict[str, dict[str, float]] = {}
        for key, module in self.sr_metrics.items():
            own_split, protocol, kind = key.split("__")
            metric = cast(Metric, module)
            if own_split == split and metric.update_count:
                protocols.setdefault(protocol, {})[kind] = value = float(metric.compute())
                metric.reset()
                self.log(f"{split}_{kind}_{protocol}", value, batch_size=1, sync_dist=True)
        if protocols:
            self.sr_quality[split] = [{"split": split, "protocol": p} | v for p, v in sorted(protocols.items())]

    def _reference_step(self, split: str, batch: dict[str, Any]) -> None:
        """Score :meth:`reference_embedder` on ``batch`` (nothing if the method has no reference network)."""
        reference = self.reference_embedder()
        if reference is None:
            return

        def embed(images: Tensor) -> Tensor:
            return self._flip_embed(reference, images)

        self._score(split, batch, embed, lambda images, size: embed(images), model="reference")

    def _score(self, split: str, batch: dict[str, Any], embed_hr: Any, embed_lr: Any, model: str = "method") -> None:
        """Update the metrics of ``model`` with the batch's HR-HR, LR-LR and HR-LR scores, each image embedded once."""
        name, issame, pair_id = batch["pair_set"], batch["issame"], batch["pair_id"]
        split = split if model == "method" else f"{model}:{split}"  # metric keys "reference:val__synthetic__..."
        hr1, hr2 = embed_hr(batch["hr1"]), embed_hr(batch["hr2"])
        self._metric(split, name, "hr_hr").update((hr1 * hr2).sum(1), issame, pair_id)
        for protocol, lr1 in batch["lr1"].items():
            size = batch["lr_size"][protocol]
            lr1 = embed_lr(lr1, size)
            lr2 = embed_lr(batch["lr2"][protocol], size)
            self._metric(split, name, "lr_lr", protocol).update((lr1 * lr2).sum(1), issame, pair_id)
            # Knoche et al. §3.4: both pair orders, (LR, HR) and (HR, LR); accuracies averaged.
            cross_score = self.cross_score if model == "method" else _cosine
            lr_hr = cross_score(hr2, lr1, batch["lr1"][protocol])
            self._metric(split, name, "lr_hr", protocol).update(lr_hr, issame, pair_id)
            hr_lr = cross_score(hr1, lr2, batch["lr2"][protocol])
            self._metric(split, name, "hr_lr", protocol).update(hr_lr, issame, pair_id)

    def _eval_epoch_end(self, split: str) -> None:
        rows, scores = self._results(split, "method")
        for comparison, label in _COMPARISONS.items():
            accs = [float(r["acc"]) for r in rows if r["comparison"] == label]
            if accs:
                self.log(
                    f"{split}_acc_{comparison}", sum(accs) / len(accs), batch_size=1, prog_bar=True, sync_dist=True
                )
        self.eval_results[split] = rows
        self.eval_scores[split] = scores
        reference, _ = self._results(split, "reference")
        if reference:
            self.reference_results[split] = reference
        self._sr_quality_epoch_end(split)

    def _results(self, split: str, model: str) -> tuple[list[dict[str, Any]], dict[str, Tensor]]:
        """Compute and reset ``model``'s metrics of ``split``: result rows (logged) and per-pair scores."""
        results: dict[tuple[str, str, str], dict[str, float]] = {}
        scores: dict[str, Tensor] = {}
        for key, module in self.eval_metrics.items():
            metric = cast(VerificationMetric, module)
            owner, _, key = key.rpartition(":")
            parts = key.split("__")
            if parts[0] != split or (owner or "method") != model:
                continue
            if metric.update_count == 0:
                continue
            pair_set, comparison, protocol = parts[1], parts[2], parts[3] if len(parts) > 3 else ""
            results[(pair_set, comparison, protocol)] = metric.compute()
            pair_id, pair_scores, issame = metric.last_scores
            name = "__".join(parts[1:])
            scores |= {
                f"{name}__scores": pair_scores.cpu(),
                f"{name}__pair_id": pair_id.cpu(),
                f"{name}__issame": issame.cpu(),
            }
            metric.reset()
        rows: list[dict[str, Any]] = []
        for (pair_set, comparison, protocol), values in sorted(results.items()):
            if comparison == "lr_hr":
                continue
            if comparison == "hr_lr":
                other = results[(pair_set, "lr_hr", protocol)]
                values = {k: (values[k] + other[k]) / 2 for k in values}
            rows.append(
                {"split": split, "model": model, "pair_set": pair_set, "comparison": _COMPARISONS[comparison]}
                | {"protocol": protocol}
                | {k: float(v) for k, v in values.items()}
            )
            suffix = f"{pair_set}_{comparison}" + (f"_{protocol}" if protocol else "")
            prefix = split if model == "method" else f"{split}_{model}"  # val_reference_acc_synthetic_hr_lr_16px
            self.log(f"{prefix}_acc_{suffix}", float(values["acc"]), batch_size=1, sync_dist=True)
            if comparison == "hr_lr":
                self.log(f"{prefix}_tar_{suffix}", float(values["tar_at_far"]), batch_size=1, sync_dist=True)
        return rows, scores

    def on_validation_start(self) -> None:
        # Under DDP each rank updates its own BatchNorm running statistics (DDP broadcasts rank 0's only at the next
        # training forward): evaluate rank 0's model, the one the checkpoint holds, on every rank.
        if self.trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            for buffer in _model_buffers(self):
                torch.distributed.broadcast(buffer, src=0)

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("test", batch)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """Normalised embeddings of both images of every pair, HR and at every protocol's LR size."""
        out: dict[str, Any] = {
            "pair_set": batch["pair_set"],
            "pair_id": batch["pair_id"],
            "issame": batch["issame"],
            "hr1": self.eval_embed_hr(batch["hr1"]),
            "hr2": self.eval_embed_hr(batch["hr2"]),
        }
        for protocol, lr1 in batch["lr1"].items():
            size = batch["lr_size"][protocol]
            out[f"lr1_{protocol}"] = self.eval_embed_lr(lr1, size)
            out[f"lr2_{protocol}"] = self.eval_embed_lr(batch["lr2"][protocol], size)
        return out


def _cosine(hr: Tensor, lr: Tensor, lr_images: Tensor) -> Tensor:
    return (hr * lr).sum(1)


_BACKBONE_MODULES = ("crossres.nn.backbones", "crossres.nn.dlib_resnet", "crossres.nn.distillation")


class _ExpectedEvalModeFilter(pl.Callback):
    """Silences Lightning's "module(s) in eval mode at the start of training" warning when it only counts frozen
    networks (a guide, a teacher, a trunk: eval mode, no trainable parameter), which are in eval mode on purpose.
    """

    def __init__(self) -> None:
        self._silenced: warnings.catch_warnings | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        in_eval = [module for module in pl_module.modules() if not module.training]
        frozen = [
            module
            for module in in_eval
            if any(True for _ in module.parameters()) and not any(p.requires_grad for p in module.parameters())
        ]
        if not in_eval or not all(any(_is_inside(module, root) for root in frozen) for module in in_eval):
            return  # nothing in eval mode, or something in eval mode that trains: Lightning's warning stands
        self._silenced = warnings.catch_warnings()
        self._silenced.__enter__()
        message = rf"Found {len(in_eval)} module\(s\) in eval mode at the start of training"
        warnings.filterwarnings("ignore", message=message, category=PossibleUserWarning)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._remove()  # the warning has been given (or not) by now

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._remove()

    def _remove(self) -> None:
        if self._silenced is not None:
            self._silenced.__exit__(None, None, None)
        self._silenced = None


def _listing(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _model_buffers(module: nn.Module) -> list[Tensor]:
    """Buffers of the networks (BatchNorm statistics, ...), not of the metrics' states."""
    if isinstance(module, Metric):
        return []
    own = list(module.buffers(recurse=False))
    return own + [b for child in module.children() for b in _model_buffers(child)]


def _is_inside(module: nn.Module, outer: nn.Module) -> bool:
    return any(module is m for m in outer.modules())


def _rng_state() -> dict[str, Any]:
    kind, keys, *rest = cast(tuple[Any, ...], np.random.get_state(legacy=True))
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), *rest),  # tensors: loads with weights_only
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.int64).astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def load_method(path: str | Path, map_location: str | torch.device = "cpu", **kwargs: Any) -> CrossResMethod:
    """Load a checkpoint written by ``crossres fit`` or a ``Trainer`` as its own method class.

    ``Baseline.load_from_checkpoint`` needs the class up front; this reads it from the checkpoint, where the CLI
    stores it as ``_class_path`` among the hyper-parameters. A checkpoint of a plain ``Trainer`` has no class path:
    load it with its class's own ``load_from_checkpoint``. The file is read with ``weights_only=True``, so nothing
    in it is executed.

    Args:
        path: the ``.ckpt`` file.
        map_location: where to put the tensors.
        **kwargs: hyper-parameters to override, as for ``load_from_checkpoint``.

    Returns:
        The method, in eval mode.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the checkpoint does not name a crossres method.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    class_path = checkpoint.get("hyper_parameters", {}).get("_class_path")
    if not isinstance(class_path, str) or "." not in class_path:
        raise ValueError(
            f"{path} does not name its method (no hyper_parameters._class_path, as `crossres fit` writes); "
            "load it with its class, e.g. crossres.methods.Baseline.load_from_checkpoint(path)"
        )
    module_name, class_name = class_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, CrossResMethod)):
        raise ValueError(f"{path}: {class_path} is not a crossres method")
    model = cls.load_from_checkpoint(path, map_location=map_location, weights_only=True, **kwargs)
    return model.eval()


# ------------------------------------------------------------------------------ parts several methods share
def built_pretrained(backbone_kwargs: dict[str, Any] | None) -> bool:
    """Whether backbone arguments build a network with its own pretrained weights (``pretrained: true``)."""
    return bool((backbone_kwargs or {}).get("pretrained", False))


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


def retention_loss(method: CrossResMethod) -> RetentionLoss | None:
    """The retention term of a method that fine-tunes its ``backbone`` (``retain_weight`` > 0), else ``None``.

    ``M₀`` is built like the backbone and frozen; the method sets it with ``start_from(self.backbone)`` when a fresh
    fit starts (a resumed fit restores it from the checkpoint).
    """
    if method.hparams.get("retain_weight", 0.0) <= 0:
        return None
    return RetentionLoss(freeze(recogniser_backbone(method)))


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
        head_init: ``random``, or ``imprint``: before a fresh fit, each class's weight is the normalised mean
            embedding of its training faces by the (pretrained) backbone (weight imprinting, Qi et al. 2018), so a
            new head over a pretrained recogniser starts near its optimum instead of pulling the features apart.
            Needs a cosine head (``arcface``, ``cosface``).
        retain_weight: ``λ_r`` of the retention term ``λ_r · (1 − cos(M(I_HR), M₀(I_HR)))`` added to the method's
            loss, ``M₀`` a frozen copy of the recogniser as the fit starts
            (:class:`~crossres.losses.retention.RetentionLoss`): it holds the HR embeddings, and so HR-HR
            matching, where they were. ``0`` (default): no term and no copy.
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
        head_init: Literal["random", "imprint"] = "random",
        retain_weight: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if retain_weight < 0:
            raise ValueError(f"model.retain_weight must be >= 0, got {retain_weight}")
        if head_init not in ("random", "imprint"):
            raise ValueError(f"model.head_init must be 'random' or 'imprint', got {head_init!r}")
        if head_init == "imprint" and head == "softmax":
            raise ValueError("model.head_init: imprint needs a cosine head (model.head: arcface or cosface)")

    def on_train_start(self) -> None:
        if self.trainer.ckpt_path is not None or self.global_step != 0:
            return  # a resumed fit keeps its head and its M₀ (in the checkpoint)
        if self.retention is not None:
            self.retention.start_from(self.backbone)  # M₀: the recogniser as the fit starts
        if self.hparams["head_init"] == "imprint":
            self.imprint_head()

    @torch.no_grad()
    def imprint_head(self) -> None:
        """Set each class's head weight to the normalised mean embedding of its training faces (``head_init``)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        loader = getattr(datamodule, "plain_train_dataloader", None)
        if loader is None:
            raise TypeError("model.head_init: imprint reads the training faces through FaceDataModule")
        weight = cast(Tensor, self.head.weight)
        sums, counts = torch.zeros_like(weight, dtype=torch.float32), torch.zeros(len(weight), device=weight.device)
        was_training = self.backbone.training
        self.backbone.eval()
        for batch in loader():
            images = to_float(batch["image"].to(self.device))
            labels = batch["label"].to(self.device)
            sums.index_add_(0, labels, F.normalize(self.backbone(images).float(), dim=1))
            counts.index_add_(0, labels, torch.ones_like(labels, dtype=torch.float32))
        self.backbone.train(was_training)
        seen = counts > 0
        weight[seen] = F.normalize(sums[seen], dim=1).to(weight.dtype)

    def build(self) -> None:
        hp = self.hparams
        self.backbone = recogniser_backbone(self)
        self.head = build_head(
            hp["head"], hp["embedding_size"], hp["num_classes"], scale=hp["scale"], margin=hp["margin"]
        )
        self.retention = retention_loss(self)

    def head_modules(self) -> list[nn.Module]:
        return [self.head]

    def embed(self, images: Tensor) -> Tensor:
        return self.backbone(images)
