"""IPU-Net (002): identity-preserving U-Net super-resolution in front of a frozen face recogniser."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from typing_extensions import Self

from crossres.losses.identity import IdentityPreservingLoss
from crossres.methods.base import HR_MODEL_PATH, CrossResMethod, load_pretrained
from crossres.nn.backbones import build_backbone
from crossres.nn.unet import UNet
from crossres.transforms.functional import downsample, upsample

__all__ = ["IPUNet"]


class IPUNet(CrossResMethod):
    """A U-Net super-resolves the bicubic-upsampled LR face; a frozen HR recogniser embeds the result.

    Paper:
        Identity-preserving U-Net super-resolution for low-resolution face recognition (002). §3.1: a U-Net with 7
        stride-2 down blocks (conv, BN, LeakyReLU) and 7 up blocks (transposed conv, BN, dropout, ReLU) with skip
        concatenation, translating the bicubic-upsampled 128x128 LR face to its SR version. §3.2, Eq. 3.3:
        ``L_total = L_embedding + β·L_pixel``, ``β = 5``: MSE between the pre-trained recogniser's embeddings of
        SR and HR (Eq. 3.2) plus pixel MSE (Eq. 3.1). §3.3: LR sizes drawn with equal probability from 7x6, 11x8,
        14x12, 16x12, 16x14, 16x16, 18x16, 21x15, 32x32 and 112x96. Test (§4): the probe is super-resolved and
        embedded by the recogniser, the HR gallery embedded directly, compared by cosine; §4.3 concatenates the
        embeddings of the upsampled face and of its SR version.

    Deviations:
        * The embedding loss back-propagates through the frozen recogniser into the U-Net (the public code's
          version computed it on detached embeddings, so only the pixel loss trained the U-Net); the recogniser's
          weights never change and it stays in eval mode (BatchNorm statistics never move).
        * Embeddings are L2-normalised before the MSE (``normalize_embeddings``), as the FaceNet recogniser of
          002 [17] outputs unit-length embeddings; the recogniser is any crossres backbone (the paper's is an
          Inception-ResNet trained on MS-Celeb), by default the HR Baseline (``HR_MODEL_PATH``).
        * Faces are 112 px here, the U-Net takes ``sr_size`` (128): the data module's bicubic-upsampled LR face is
          resized 112 -> 128 with :func:`~crossres.transforms.functional.upsample` (bicubic) and the SR output
          128 -> 112 with :func:`~crossres.transforms.functional.downsample` (antialiased bicubic), the library's
          only resizing. ``L_pixel`` and the recogniser see the SR face at the HR size; the paper resized its
          VGGFace2 faces to 128 and compared there.
        * The multi-scale sizes are the data module's (``data.lr_policy: choice``); on 112x112 faces
          ``experiments/ipunet.yaml`` scales the paper's 112x96 list by ``(H/112, W/96)`` (7x6 -> 7x7, ...,
          112x96 -> 112x112, i.e. no degradation).
        * Kernel sizes (4x4), LeakyReLU slope (0.2), dropout (0.5) and the tanh output are pix2pix's; the paper
          gives none. Dropout is off at test time (eval mode).
        * Optimiser: AdamW, lr 2e-4, no weight decay (the paper gives none).
        * ``concat_bicubic`` (§4.3) embeds *both* sides as ``[rec(x)/|.|, rec(SR(x))/|.|]`` so that the HR
          gallery and the probe share one embedding space.

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
        self.recognizer.requires_grad_(False)
        self.recognizer.eval()
        self.identity_loss = IdentityPreservingLoss(beta=hp["beta"], normalize=hp["normalize_embeddings"])

    # ------------------------------------------------------------------------------------ the recogniser
    def train(self, mode: bool = True) -> Self:
        super().train(mode)
        self.recognizer.eval()  # frozen: pre-trained on HR faces, never updated, BatchNorm included
        return self

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.trainer.ckpt_path is None:
            load_pretrained(self.recognizer, self.hparams["recognizer_weights"], "model.recognizer_weights")

    # ------------------------------------------------------------------------------ super-resolution
    def super_resolve(self, images: Tensor) -> Tensor:
        """SR faces at the HR size from bicubic-upsampled LR faces at the HR size (both in ``[0, 1]``).

        Args:
            images: ``(B, 3, H, W)`` LR faces, degraded and upsampled back to the HR size by the data module.

        Returns:
            ``(B, 3, H, W)`` super-resolved faces.
        """
        x = upsample(images, self.sr_size)  # 112 -> 128 (bicubic): the U-Net's input size
        sr = self.unet(x)
        return downsample(sr, self.image_size).clamp(0.0, 1.0)  # 128 -> 112 (antialiased bicubic)

    # ---------------------------------------------------------------------------------------- embedding
    def reference_embedder(self) -> Callable[[Tensor], Tensor]:
        return self.recognizer  # the frozen HR recogniser on HR and bicubic faces

    def sr_probe(self, images: Tensor) -> Tensor:
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
