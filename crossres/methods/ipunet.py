"""IPU-Net (002): identity-preserving U-Net super-resolution in front of a frozen face recogniser."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from crossres.losses.identity import IdentityPreservingLoss
from crossres.methods.base import HR_MODEL_PATH, CrossResMethod, built_pretrained, freeze, load_pretrained
from crossres.nn.backbones import build_backbone
from crossres.nn.unet import UNet
from crossres.transforms.functional import downsample, upsample

__all__ = ["IPUNet"]


class IPUNet(CrossResMethod):
    """A U-Net super-resolves the bicubic-upsampled LR face; a frozen HR recogniser embeds the result.

    Paper: Identity-preserving U-Net super-resolution for low-resolution face recognition (002).
    The paper's notes, the equations-to-code map and the deviations: ``docs/methods/ipunet.md``.

    Args:
        backbone: recogniser architecture, as the HR Baseline's (``iresnet18`` ... or a timm name).
        backbone_kwargs: recogniser arguments, as the HR Baseline's (e.g. ``{"width": 16}``).
        embedding_size: recogniser embedding size, as the HR Baseline's.
        recognizer_weights: the pretrained HR recogniser (crossres ``.ckpt`` or insightface ``backbone.pth``).
        sr_size: U-Net input side (128 in 002; any power of two that is a multiple of ``2**unet_depth``).
        unet_depth: down blocks = up blocks (7 in 002; smaller for tiny inputs, e.g. 5 for 32 px).
        unet_width: channels of the first down block (64 as pix2pix; 16 for CPU runs).
        unet_dropout: dropout in the first three up blocks.
        beta: ``β`` of Eq. 3.3, weight of the pixel loss.
        normalize_embeddings: L2-normalise the embeddings inside ``L_embedding``.
        concat_bicubic: §4.3: concatenate the embeddings of the upsampled face and its SR version.
        optimizer: ``"adamw"`` or ``"sgd"``.
        lr: learning rate.
        weight_decay: weight decay.
        **kwargs: other optimisation and evaluation arguments of :class:`CrossResMethod`.
    """

    def __init__(
        self,
        backbone: str = "iresnet18",
        backbone_kwargs: dict[str, Any] | None = None,
        embedding_size: int = 512,
        recognizer_weights: str | None = HR_MODEL_PATH,
        sr_size: int = 128,
        unet_depth: int = 7,
        unet_width: int = 64,
        unet_dropout: float = 0.5,
        beta: float = 5.0,
        normalize_embeddings: bool = True,
        concat_bicubic: bool = False,
        optimizer: Literal["sgd", "adamw"] = "adamw",
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(optimizer=optimizer, lr=lr, weight_decay=weight_decay, **kwargs)

    def build(self) -> None:
        hp = self.hparams
        size, depth = int(hp["sr_size"]), int(hp["unet_depth"])
        if size < 1 or size & (size - 1) or size % 2**depth:
            raise ValueError(
                f"model.sr_size must be a power of two and a multiple of 2**unet_depth = {2**depth} "
                f"(128 with depth 7, as in 002), got sr_size={size}"
            )
        self.sr_size = (size, size)
        self.unet = UNet(depth=depth, width=hp["unet_width"], dropout=hp["unet_dropout"])
        self.recognizer = build_backbone(
            hp["backbone"], embedding_size=hp["embedding_size"], image_size=self.image_size,
            **(hp["backbone_kwargs"] or {}),
        )  # fmt: skip
        freeze(self.recognizer)  # pre-trained on HR faces, never updated, BatchNorm included
        self.identity_loss = IdentityPreservingLoss(beta=hp["beta"], normalize=hp["normalize_embeddings"])

    # ------------------------------------------------------------------------------------ the recogniser
    def setup(self, stage: str) -> None:
        super().setup(stage)  # the data needs
        if stage == "fit" and self.trainer.ckpt_path is None:
            load_pretrained(
                self.recognizer,
                self.hparams["recognizer_weights"],
                "model.recognizer_weights",
                built_pretrained=built_pretrained(self.hparams["backbone_kwargs"]),
            )

    # ------------------------------------------------------------------------------ super-resolution
    def super_resolve(self, images: Tensor) -> Tensor:
        """SR faces at the HR size from bicubic-upsampled LR faces at the HR size (both in ``[0, 1]``).

        Args:
            images: ``(B, 3, H, W)`` LR faces, degraded and upsampled back to the HR size by the data module.

        Returns:
            ``(B, 3, H, W)`` super-resolved faces.
        """
        x = _resize(images, self.sr_size)  # 112 -> 128: the U-Net's input size
        sr = self.unet(x)
        return _resize(sr, self.image_size).clamp(0.0, 1.0)  # 128 -> 112

    # ---------------------------------------------------------------------------------------- embedding
    def reference_embedder(self) -> Callable[[Tensor], Tensor]:
        return self.recognizer  # the frozen HR recogniser on HR and bicubic faces

    def sr_probe(self, images: Tensor, protocol: str) -> Tensor:
        return self.super_resolve(images)  # PSNR / SSIM against the HR face, every protocol

    def embed(self, images: Tensor) -> Tensor:
        """HR gallery faces: the recogniser (with ``concat_bicubic``: ``[rec(x), rec(SR(x))]``, each normalised)."""
        if self.hparams["concat_bicubic"]:
            return self._concat(images)
        return self.recognizer(images)

    def embed_lr(self, images: Tensor, lr_size: Tensor) -> Tensor:
        """LR probes: ``rec(SR(x))`` (with ``concat_bicubic``: ``[rec(x), rec(SR(x))]``, each normalised)."""
        if self.hparams["concat_bicubic"]:
            return self._concat(images)
        return self.recognizer(self.super_resolve(images))

    def _concat(self, images: Tensor) -> Tensor:
        # §4.3: "We concatenated the embeddings of both upsampled face and super-resolved version".
        bicubic = F.normalize(self.recognizer(images), dim=1)
        return torch.cat([bicubic, F.normalize(self.recognizer(self.super_resolve(images)), dim=1)], dim=1)

    # ------------------------------------------------------------------------------------------ training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        hr, n = batch["hr"], batch["label"].numel()
        sr = self.super_resolve(batch["lr"])
        with torch.no_grad():
            hr_embedding = self.recognizer(hr)
        # Gradient flows through the frozen recogniser into the U-Net (the public code detached it).
        sr_embedding = self.recognizer(sr)
        terms = self.identity_loss(sr, hr, sr_embedding, hr_embedding)  # Eq. 3.3: L_embedding + β·L_pixel
        self.log("train_loss_embedding", terms["embedding"], batch_size=n)
        self.log("train_loss_pixel", terms["pixel"], batch_size=n)
        self.log("train_loss", terms["loss"], prog_bar=True, batch_size=n)
        return self.finite_or_none("ipunet", terms["loss"])


def _resize(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Antialiased bicubic to a smaller ``size`` (a 150 px dlib chip into the 128 px U-Net), bicubic to a larger."""
    if images.shape[-2] >= size[0] and images.shape[-1] >= size[1]:
        return downsample(images, size)
    return upsample(images, size)
