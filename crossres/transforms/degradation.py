"""Batch-level degradation: which resolution each face gets, and the module that makes ``{"hr", "lr", "lr_size"}``.

The module runs on whatever device the images are on (``FaceDataModule.on_after_batch_transfer`` calls it on the
GPU); it holds no tensors that need ``.to()``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, get_args

import kornia.augmentation as K
import torch
from torch import Tensor, nn

from crossres.transforms.functional import Backend, degrade, resolve_size, to_float

__all__ = ["BatchDegradation", "CameraDegradation", "DegradedViews", "ResolutionSampler"]

Policy = Literal["fixed", "choice", "range"]
Per = Literal["sample", "batch"]


class ResolutionSampler:
    """Draws the ``lr_size`` ``(h, w)`` of every face in a batch.

    Policies: ``"fixed"`` always uses ``sizes[0]`` (004 BT-r / ST-r: one LR size per network); ``"choice"`` draws
    uniformly from ``sizes`` (e.g. ``[7, 14, 28, 56, 112]`` for multi-resolution training; IPU-Net's
    ``[(7, 6), (11, 8), (14, 12), (16, 12), ...]``); ``"range"`` draws an integer ``r`` uniformly from
    ``[sizes[0], sizes[1]]`` inclusive and uses ``(r, round(r * W / H))``. Int sizes mean
    ``(s, round(s * W / H))`` of ``hr_size``; pairs are explicit ``(h, w)``.

    ``lr_prob`` decides who is degraded at all; the rest keep ``hr_size``. With ``per="sample"`` exactly
    ``round(lr_prob * B)`` (half rounded up) samples, a uniformly random subset, are LR, and each draws its own size:
    004 §5.1 "randomly select half of the HR images per batch" (``lr_prob=0.5``), not a Bernoulli count. With
    ``per="batch"`` one size is drawn for the whole batch, which is LR with probability ``lr_prob``.

    Args:
        policy: ``"fixed"``, ``"choice"`` or ``"range"``.
        sizes: ints or ``(h, w)`` pairs; one for ``"fixed"``, at least one for ``"choice"``, two ints ``[lo, hi]``
            for ``"range"``.
        per: ``"sample"`` (independent draws) or ``"batch"`` (one draw shared by the batch).
        lr_prob: fraction (per sample) or probability (per batch) of degraded faces, in ``[0, 1]``.
        hr_size: ``(H, W)`` of the high-resolution faces.

    Raises:
        ValueError: for an unknown ``policy``/``per``, a wrong number of ``sizes``, a size outside
            ``[1, H] x [1, W]``, ``lo > hi``, or ``lr_prob`` outside ``[0, 1]``.
    """

    def __init__(
        self,
        policy: Policy = "fixed",
        sizes: Sequence[int | Sequence[int]] = (14,),
        per: Per = "sample",
        lr_prob: float = 1.0,
        hr_size: tuple[int, int] = (112, 112),
    ) -> None:
        if policy not in get_args(Policy):
            raise ValueError(f"policy must be one of {get_args(Policy)}, got {policy!r}")
        if per not in get_args(Per):
            raise ValueError(f"per must be one of {get_args(Per)}, got {per!r}")
        if not 0.0 <= float(lr_prob) <= 1.0:
            raise ValueError(f"lr_prob must be a probability in [0, 1], got {lr_prob}")
        hr_values = [int(v) for v in hr_size]
        if len(hr_values) != 2 or min(hr_values) < 1:
            raise ValueError(f"hr_size must be a pair (H, W) of positive ints, got {hr_size!r}")
        self.policy: Policy = policy
        self.per: Per = per
        self.lr_prob = float(lr_prob)
        self.hr_size = (hr_values[0], hr_values[1])
        sizes = list(sizes)
        if policy == "fixed" and len(sizes) != 1:
            raise ValueError(f"policy='fixed' takes exactly one entry in sizes, got {sizes!r} (use 'choice')")
        if policy == "choice" and not sizes:
            raise ValueError("policy='choice' needs at least one entry in sizes, got none")
        if policy == "range":
            if len(sizes) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in sizes):
                raise ValueError(f"policy='range' takes sizes=[lo, hi] as two ints, got {sizes!r}")
            low, high = sizes
            if low > high:  # type: ignore[operator]
                raise ValueError(f"policy='range' needs sizes=[lo, hi] with lo <= hi, got {sizes!r}")
        #: the candidate sizes as explicit (h, w); for "range" the two ends.
        self.sizes: list[tuple[int, int]] = [resolve_size(s, self.hr_size, name="sizes") for s in sizes]
        self._range = (int(sizes[0]), int(sizes[1])) if policy == "range" else None  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(policy={self.policy!r}, sizes={self.sizes}, per={self.per!r}, "
            f"lr_prob={self.lr_prob}, hr_size={self.hr_size})"
        )

    def _draw(self, count: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        """``count`` LR sizes ``(count, 2)`` on ``device`` under the policy."""
        if self.policy == "fixed":
            return torch.tensor(self.sizes[0], dtype=torch.long, device=device).expand(count, 2).clone()
        if self.policy == "choice":
            table = torch.tensor(self.sizes, dtype=torch.long, device=device)
            pick = torch.randint(0, len(self.sizes), (count,), generator=generator, device=device)
            return table[pick]
        assert self._range is not None
        low, high = self._range
        height, width = self.hr_size
        heights = torch.randint(low, high + 1, (count,), generator=generator, device=device)
        # Int sizes keep the HR aspect ratio: w = round(r * W / H), at least 1.
        widths = torch.round(heights.double() * width / height).long().clamp_(1, width)
        return torch.stack([heights, widths], dim=1)

    def sample(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw the per-sample ``lr_size`` of a batch.

        Args:
            batch_size: number of faces ``B``.
            generator: random generator; the draws are made on its device (default: the global CPU RNG).
            device: device of the result (default CPU).

        Returns:
            Long tensor ``(B, 2)`` of ``(h, w)``; rows equal to ``hr_size`` are the faces left in high resolution.

        Raises:
            ValueError: for a negative ``batch_size``.
        """
        if batch_size < 0:
            raise ValueError(f"batch_size must be >= 0, got {batch_size}")
        draw_device = generator.device if generator is not None else torch.device("cpu")
        out_device = torch.device(device) if device is not None else torch.device("cpu")
        sizes = torch.tensor(self.hr_size, dtype=torch.long, device=draw_device).repeat(batch_size, 1)
        if batch_size == 0:
            return sizes.to(out_device)
        if self.per == "batch":
            shared = self._draw(1, generator, draw_device)
            degraded = bool(torch.rand(1, generator=generator, device=draw_device).item() < self.lr_prob)
            if degraded:
                sizes[:] = shared
            return sizes.to(out_device)
        # 004 §5.1: "randomly select half of the HR images per batch" -- an exact count, a random subset.
        num_lr = min(batch_size, math.floor(self.lr_prob * batch_size + 0.5))
        chosen = torch.randperm(batch_size, generator=generator, device=draw_device)[:num_lr]
        sizes[chosen] = self._draw(num_lr, generator, draw_device)
        return sizes.to(out_device)


class CameraDegradation(nn.Module):
    """Camera-like corruptions applied after the resolution step (the "arbitrary blur kernels" that 004 §6 leaves
    to future work), with ``kornia.augmentation``. Every probability defaults to 0, which makes it the identity.

    Each corruption is drawn independently per sample, in the order Gaussian blur, motion blur, noise, JPEG; the
    result is clamped to ``[0, 1]``.

    Args:
        blur_prob: probability of a Gaussian blur.
        blur_sigma: ``(min, max)`` of its standard deviation in pixels (kernel size ``2 * ceil(3 * max) + 1``).
        motion_prob: probability of a linear motion blur.
        motion_kernel_size: ``(min, max)`` odd kernel sizes of the motion blur.
        motion_angle: the blur direction is drawn uniformly from ``[-motion_angle, motion_angle]`` degrees.
        noise_prob: probability of additive Gaussian noise.
        noise_std: standard deviation of the noise (image range ``[0, 1]``).
        jpeg_prob: probability of JPEG compression (needs ``kornia.augmentation.RandomJPEG``).
        jpeg_quality: ``(min, max)`` JPEG quality in ``[1, 100]``. kornia's codec needs ``H`` and ``W`` that are
            multiples of 16 (112 x 112 and 112 x 96 are).

    Raises:
        ValueError: for a probability outside ``[0, 1]`` or an invalid range.
        ImportError: if ``jpeg_prob > 0`` and the installed kornia has no ``RandomJPEG``.
    """

    def __init__(
        self,
        blur_prob: float = 0.0,
        blur_sigma: tuple[float, float] = (0.5, 2.0),
        motion_prob: float = 0.0,
        motion_kernel_size: tuple[int, int] = (3, 9),
        motion_angle: float = 90.0,
        noise_prob: float = 0.0,
        noise_std: float = 0.02,
        jpeg_prob: float = 0.0,
        jpeg_quality: tuple[float, float] = (30.0, 90.0),
    ) -> None:
        super().__init__()
        for name, prob in [
            ("blur_prob", blur_prob),
            ("motion_prob", motion_prob),
            ("noise_prob", noise_prob),
            ("jpeg_prob", jpeg_prob),
        ]:
            if not 0.0 <= prob <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {prob}")
        if not 0.0 < blur_sigma[0] <= blur_sigma[1]:
            raise ValueError(f"blur_sigma must be (min, max) with 0 < min <= max, got {blur_sigma}")
        low_k, high_k = motion_kernel_size
        if not (3 <= low_k <= high_k and low_k % 2 == 1 and high_k % 2 == 1):
            raise ValueError(
                f"motion_kernel_size must be odd (min, max) with 3 <= min <= max, got {motion_kernel_size}"
            )
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        if not 1.0 <= jpeg_quality[0] <= jpeg_quality[1] <= 100.0:
            raise ValueError(f"jpeg_quality must be (min, max) with 1 <= min <= max <= 100, got {jpeg_quality}")
        augmentations: list[nn.Module] = []
        if blur_prob > 0:
            kernel = 2 * math.ceil(3 * blur_sigma[1]) + 1
            augmentations.append(
                K.RandomGaussianBlur((kernel, kernel), (float(blur_sigma[0]), float(blur_sigma[1])), p=blur_prob)
            )
        if motion_prob > 0:
            augmentations.append(
                K.RandomMotionBlur((low_k, high_k), angle=float(motion_angle), direction=0.0, p=motion_prob)
            )
        if noise_prob > 0 and noise_std > 0:
            augmentations.append(K.RandomGaussianNoise(mean=0.0, std=noise_std, p=noise_prob))
        if jpeg_prob > 0:
            if not hasattr(K, "RandomJPEG"):
                raise ImportError("jpeg_prob > 0 needs kornia.augmentation.RandomJPEG (kornia >= 0.7.1)")
            augmentations.append(
                K.RandomJPEG(jpeg_quality=(float(jpeg_quality[0]), float(jpeg_quality[1])), p=jpeg_prob)
            )
        self.augmentations = nn.ModuleList(augmentations)

    @property
    def is_identity(self) -> bool:
        """True when no corruption can fire."""
        return len(self.augmentations) == 0

    def forward(self, images: Tensor, mask: Tensor | None = None) -> Tensor:
        """Corrupt the selected faces.

        Args:
            images: float ``(B, C, H, W)`` in ``[0, 1]``.
            mask: bool ``(B,)``; only samples where it is True are touched (default: all).

        Returns:
            A new tensor; unselected samples are copied bit for bit.

        Raises:
            ValueError: for a mask that is not ``(B,)``.
        """
        if mask is not None and tuple(mask.shape) != (images.shape[0],):
            raise ValueError(f"mask must be a bool tensor of shape ({images.shape[0]},), got {tuple(mask.shape)}")
        if self.is_identity:
            return images.clone()
        index = None if mask is None else mask.to(images.device, torch.bool).nonzero().squeeze(1)
        selected = images if index is None else images.index_select(0, index)
        if selected.shape[0] == 0:
            return images.clone()
        for augmentation in self.augmentations:
            selected = augmentation(selected)
        selected = selected.clamp(0.0, 1.0).to(images.dtype)
        if index is None:
            return selected
        return images.index_copy(0, index, selected)


class BatchDegradation(nn.Module):
    """Turn a batch of HR faces into ``{"hr", "lr", "lr_size"}`` on the images' device.

    Order: optional flip / colour jitter of the HR faces (kornia, on the device), then the resolution step
    (Eq. (1) of 004, :func:`~crossres.transforms.functional.degrade`) with sizes from ``sampler``, then optional
    camera corruptions on the degraded samples only.

    Randomness: with ``seed`` set, one ``torch.Generator`` per device is created lazily and seeded with it; sizes
    are drawn with the CPU generator (so a seed gives the same sizes on CPU and GPU, and the sizes are on the host
    where ``degrade`` needs them), and kornia's draws run under a forked RNG seeded from the images' device
    generator, so the global RNG is not disturbed. With ``seed=None`` the global RNG is used. Under DDP give each
    rank its own seed. The generators are not saved in ``state_dict`` or pickles.

    Args:
        sampler: resolution sampler; default ``ResolutionSampler()`` (every face at 14 px on 112 x 112).
        backend: resampling backend of ``degrade``: ``"pil"``, ``"kornia"`` or ``"no_antialias"``.
        camera: optional camera corruptions of the LR faces.
        flip_prob: probability of a horizontal flip of each face (applied to ``hr``, so ``lr`` follows it). Only the
            images are flipped: keep 0 when landmarks or parsing maps travel with the batch.
        color_jitter: brightness, contrast and saturation jitter strength (each factor in ``[1 - c, 1 + c]``).
        seed: seed of the per-device generators; ``None`` uses the global RNG.

    Raises:
        ValueError: for ``flip_prob`` outside ``[0, 1]`` or a negative ``color_jitter``.
    """

    def __init__(
        self,
        sampler: ResolutionSampler | None = None,
        backend: Backend = "pil",
        camera: CameraDegradation | None = None,
        flip_prob: float = 0.0,
        color_jitter: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if backend not in get_args(Backend):
            raise ValueError(f"backend must be one of {get_args(Backend)}, got {backend!r}")
        if not 0.0 <= flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be a probability in [0, 1], got {flip_prob}")
        if color_jitter < 0:
            raise ValueError(f"color_jitter must be >= 0, got {color_jitter}")
        self.sampler = sampler if sampler is not None else ResolutionSampler()
        self.backend: Backend = backend
        self.camera = camera
        self.seed = seed
        hr_augmentations: list[nn.Module] = []
        if flip_prob > 0:
            hr_augmentations.append(K.RandomHorizontalFlip(p=flip_prob))
        if color_jitter > 0:
            hr_augmentations.append(
                K.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter, p=1.0)
            )
        self.hr_augmentations = nn.ModuleList(hr_augmentations)
        self._generators: dict[str, torch.Generator] = {}

    def extra_repr(self) -> str:
        return f"sampler={self.sampler!r}, backend={self.backend!r}, seed={self.seed}"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_generators"] = {}  # torch.Generator state is per process and per device; recreated lazily.
        return state

    def generator(self, device: torch.device | str) -> torch.Generator | None:
        """The seeded generator of ``device`` (created on first use), or None when ``seed`` is None.

        Args:
            device: the device the random draws are made on.

        Returns:
            A ``torch.Generator`` on ``device``, or None.
        """
        if self.seed is None:
            return None
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]

    def _with_rng(self, device: torch.device, module: nn.Module, images: Tensor, *args: Any) -> Tensor:
        """Run a kornia module, drawing from this module's generators instead of the global RNG."""
        generator = self.generator(device)
        if generator is None:
            return module(images, *args)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
        cuda_devices = [device.index] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_devices):
            torch.random.default_generator.manual_seed(seed)
            if device.type == "cuda":
                with torch.cuda.device(device):
                    torch.cuda.manual_seed(seed)
            return module(images, *args)

    @torch.no_grad()
    def reseed(self, seed: int | None) -> None:
        """Start every device's generator afresh from ``seed`` (e.g. ``seed + rank`` under DDP)."""
        self.seed = seed
        self._generators.clear()

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Degrade a batch.

        Args:
            images: float ``(B, 3, H, W)`` in ``[0, 1]`` (``uint8`` is converted with ``to_float``), any device;
                ``(H, W)`` must equal ``sampler.hr_size``.

        Returns:
            ``{"hr": float (B, 3, H, W), "lr": float (B, 3, H, W) degraded and re-upsampled, "lr_size": long (B, 2)}``
            on the images' device.

        Raises:
            ValueError: if the images are not ``(B, C, H, W)`` or their size differs from ``sampler.hr_size``.
        """
        if images.ndim != 4:
            raise ValueError(f"images must be a (B, C, H, W) tensor, got shape {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            images = to_float(images)
        hr_size = (int(images.shape[-2]), int(images.shape[-1]))
        if hr_size != self.sampler.hr_size:
            raise ValueError(
                f"images have (H, W)={hr_size} but sampler.hr_size={self.sampler.hr_size}; "
                "set ResolutionSampler(hr_size=...) to the image size"
            )
        device = images.device
        hr = images
        for augmentation in self.hr_augmentations:
            hr = self._with_rng(device, augmentation, hr)
        hr = hr.clamp(0.0, 1.0) if len(self.hr_augmentations) else hr
        lr_size = self.sampler.sample(images.shape[0], generator=self.generator("cpu"))
        lr = degrade(hr, lr_size, backend=self.backend)
        if self.camera is not None and not self.camera.is_identity:
            is_lr = (lr_size != torch.tensor(hr_size)).any(dim=1)
            lr = self._with_rng(device, self.camera, lr, is_lr.to(device))
        return {"hr": hr, "lr": lr, "lr_size": lr_size.to(device, non_blocking=True)}


class DegradedViews(Mapping[str, Tensor]):
    """Protocol name -> degraded images, computed when read (never all at once).

    Evaluation batches carry one LR view per protocol; a 108-size sweep would otherwise hold 108 degraded
    copies of every batch. Each read degrades afresh (Knoche et al. Eq. (1)); nothing is cached.

    Args:
        images: float HR images ``(B, C, H, W)`` in ``[0, 1]``.
        sizes: protocol name -> long ``(B, 2)`` per-sample LR sizes ``(h, w)``.
        backend: resampling backend of :func:`~crossres.transforms.functional.degrade`.
    """

    def __init__(self, images: Tensor, sizes: Mapping[str, Tensor], backend: Backend = "pil") -> None:
        self.images = images
        self.sizes = sizes
        self.backend = backend

    def __getitem__(self, name: str) -> Tensor:
        return degrade(self.images, self.sizes[name], backend=self.backend)

    def __iter__(self) -> Iterator[str]:
        return iter(self.sizes)

    def __len__(self) -> int:
        return len(self.sizes)
