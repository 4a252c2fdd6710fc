"""The resolution degradation and the occlusions, defined once.

Knoche et al. (004, §3.3) simulate a low-resolution face by bicubic down- and up-sampling with antialiasing:

    Eq. (1): I_LR = F_up,112(F_down,r(I_HR))

Guided-CNN (000, §3.2) corrupts faces by zeroing a random contiguous block of 20 % of the image, or the upper or
lower half (50 %).

All functions take float images ``(B, C, H, W)`` in ``[0, 1]`` on any device; sizes are ``(h, w)``. ``degrade`` also
takes uint8 images with the ``"pil"`` backend and then computes in uint8 as PIL does (rounded after each step).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from crossres.transforms.threads import caller_modes, thread_pool

__all__ = [
    "Backend",
    "OcclusionMode",
    "degrade",
    "downsample",
    "occlude",
    "occlusion_mask",
    "resolve_size",
    "to_float",
    "to_uint8",
    "upsample",
]

Backend = Literal["pil", "kornia", "no_antialias"]
OcclusionMode = Literal["block", "upper", "lower", "half"]

SizeLike = int | Sequence[int]


def resolve_size(size: SizeLike, hr_size: tuple[int, int], name: str = "lr_size") -> tuple[int, int]:
    """Turn an ``lr_size`` into an explicit ``(h, w)`` for an image of ``hr_size`` and check it.

    An int ``s`` means ``(s, round(s * W / H))`` (at least 1), so ``14`` is ``14 x 14`` on a square face and
    ``16`` is ``16 x 14`` on ``112 x 96``.

    Args:
        size: int or ``(h, w)``.
        hr_size: ``(H, W)`` of the high-resolution image.
        name: argument name used in error messages.

    Returns:
        ``(h, w)`` with ``1 <= h <= H`` and ``1 <= w <= W``.

    Raises:
        ValueError: if the size is not an int or a pair, or lies outside ``[1, H] x [1, W]``.
    """
    height, width = hr_size
    if isinstance(size, bool):
        raise ValueError(f"{name} must be an int or an (h, w) pair, got {size!r}")
    if isinstance(size, int):
        pair = (size, max(1, round(size * width / height)))
    elif isinstance(size, Tensor) and size.ndim == 0:
        return resolve_size(int(size.item()), hr_size, name)
    else:
        values = [int(v) for v in size]
        if len(values) != 2:
            raise ValueError(f"{name} must be an int or an (h, w) pair, got {size!r}")
        pair = (values[0], values[1])
    if not (1 <= pair[0] <= height and 1 <= pair[1] <= width):
        raise ValueError(
            f"{name}={size!r} resolves to (h, w)={pair}, outside the valid range h in [1, {height}], "
            f"w in [1, {width}] for an input of size (H, W)=({height}, {width})"
        )
    return pair


def _check_images(images: Tensor, allow_uint8: bool = False) -> tuple[int, int]:
    if not isinstance(images, Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, C, H, W) tensor, got {shape}")
    if not images.is_floating_point() and not (allow_uint8 and images.dtype == torch.uint8):
        raise TypeError(f"images must be float in [0, 1], got dtype {images.dtype} (use to_float for uint8)")
    return int(images.shape[-2]), int(images.shape[-1])


def _check_backend(backend: str) -> None:
    if backend not in get_args(Backend):
        raise ValueError(f"backend must be one of {get_args(Backend)}, got {backend!r}")


def _resize(images: Tensor, size: tuple[int, int], backend: Backend) -> Tensor:
    """One bicubic resize with the backend's antialiasing; the only place that resamples faces."""
    if backend == "pil":
        # Antialiased bicubic (a = -0.5, kernel widened by the scale), as PIL's Image.resize(BICUBIC).
        return F.interpolate(images, size=size, mode="bicubic", antialias=True, align_corners=False)
    if backend == "kornia":
        from kornia.geometry.transform import resize

        # Gaussian pre-blur (sigma = (scale - 1) / 2) followed by plain bicubic.
        return resize(images, size, interpolation="bicubic", antialias=True, align_corners=False)
    return F.interpolate(images, size=size, mode="bicubic", antialias=False, align_corners=False)


def downsample(images: Tensor, size: SizeLike, backend: Backend = "pil") -> Tensor:
    """Eq. (1) of 004, inner step: ``F_down,r``, antialiased bicubic down to ``size``.

    Args:
        images: float ``(B, C, H, W)`` in ``[0, 1]``.
        size: int ``r`` (see :func:`resolve_size`) or ``(h, w)``; one size for the whole batch.
        backend: ``"pil"`` (torch antialiased bicubic, matches PIL), ``"kornia"`` or ``"no_antialias"``.

    Returns:
        The small images ``(B, C, h, w)``, not clamped. A size equal to ``(H, W)`` returns ``images`` itself.

    Raises:
        ValueError: for a size outside ``[1, H] x [1, W]``, an unknown backend or a non-4-D input.
        TypeError: for non-float images.
    """
    hr_size = _check_images(images)
    _check_backend(backend)
    lr_size = resolve_size(size, hr_size)
    if lr_size == hr_size:
        return images
    return _resize(images, lr_size, backend)


def upsample(images: Tensor, out_size: Sequence[int], backend: Backend = "pil") -> Tensor:
    """Eq. (1) of 004, outer step: ``F_up,112``, bicubic back up to ``out_size``.

    Args:
        images: float ``(B, C, h, w)``.
        out_size: ``(H, W)`` to resize to.
        backend: as in :func:`downsample`.

    Returns:
        ``(B, C, H, W)``, not clamped. An ``out_size`` equal to the input size returns ``images`` itself.

    Raises:
        ValueError: for an ``out_size`` that is not a pair of positive ints, an unknown backend or a non-4-D input.
        TypeError: for non-float images.
    """
    in_size = _check_images(images)
    _check_backend(backend)
    values = [int(v) for v in out_size]
    if len(values) != 2 or min(values) < 1:
        raise ValueError(f"out_size must be a pair (H, W) of positive ints, got {out_size!r}")
    target = (values[0], values[1])
    if target == in_size:
        return images
    return _resize(images, target, backend)


def _per_sample_sizes(size: Tensor, batch_size: int, hr_size: tuple[int, int]) -> Tensor:
    if size.ndim != 2 or size.shape != (batch_size, 2) or size.is_floating_point() or size.is_complex():
        raise ValueError(
            f"lr_size as a tensor must be an integer (B, 2) tensor of (h, w) with B={batch_size}, "
            f"got dtype {size.dtype} shape {tuple(size.shape)}"
        )
    sizes = size.detach().to("cpu", torch.long)
    height, width = hr_size
    bad = (sizes[:, 0] < 1) | (sizes[:, 0] > height) | (sizes[:, 1] < 1) | (sizes[:, 1] > width)
    if bool(bad.any()):
        index = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"lr_size[{index}]={tuple(sizes[index].tolist())} is outside the valid range h in [1, {height}], "
            f"w in [1, {width}] for an input of size (H, W)=({height}, {width})"
        )
    return sizes


def degrade(
    images: Tensor,
    size: SizeLike | Tensor,
    out_size: tuple[int, int] | None = None,
    backend: Backend = "pil",
) -> Tensor:
    """Reduce the resolution of faces, Eq. (1) of 004: ``I_LR = F_up,112(F_down,r(I_HR))``, then clamp to [0, 1].

    With per-sample sizes the batch is grouped by unique size and each group is resampled by one call, so the cost
    grows with the number of distinct sizes, not with the batch. Samples whose size is the input size and whose
    ``out_size`` is the input size are copied bit for bit (the HR half of a mixed batch).

    uint8 images (``"pil"`` backend only) are resampled by torch's uint8 antialiased kernels, which round to uint8
    after the down- and after the up-sampling like ``PIL.Image.resize(BICUBIC)`` applied twice: the result is PIL's
    to within 2 grey levels (mean 0.001-0.007/255 on a real photo at 7-56 px, ``tests/test_transforms.py``; the
    float path: up to 0.4/255). On a CPU the groups of a uint8 batch run in parallel, one per torch thread, and a
    channels-last batch (decoded HWC images stacked and permuted, no copy) takes torch's vectorised kernels: 4-6x
    the per-image PIL loop on 2 cores (``benchmarks/bench_degradation.py``). Training keeps the float path (the
    batch is float on the device anyway).

    Args:
        images: float ``(B, C, H, W)`` in ``[0, 1]``, any device; or uint8 ``(B, C, H, W)`` with ``backend="pil"``.
        size: int ``r`` (``(r, round(r * W / H))``), ``(h, w)`` (also as a 0-d or ``(2,)`` tensor), or an integer
            tensor ``(B, 2)`` of per-sample ``(h, w)`` (any device; it is read on the host, which synchronises a GPU
            stream).
        out_size: ``(H', W')`` of the result; default the input ``(H, W)``.
        backend: ``"pil"`` (default; torch ``interpolate(bicubic, antialias=True)``, within 0.4/255 of PIL
            ``Image.resize(BICUBIC)``), ``"kornia"`` (Gaussian pre-blur then bicubic, as some published seeds) or
            ``"no_antialias"`` (plain bicubic both ways).

    Returns:
        ``(B, C, H', W')`` with the dtype, device and memory layout of ``images``: float in ``[0, 1]``, or uint8.

    Raises:
        ValueError: if a size lies outside ``[1, H] x [1, W]`` (the message names ``lr_size`` and the range), the
            size tensor is not ``(B, 2)``, ``out_size`` is not a positive pair, or the backend is unknown.
        TypeError: for images that are neither float nor uint8, or uint8 images with a backend other than ``"pil"``.
    """
    hr_size = _check_images(images, allow_uint8=True)
    _check_backend(backend)
    quantised = images.dtype == torch.uint8
    if quantised and backend != "pil":
        raise TypeError(
            f"uint8 images are degraded with backend='pil' only (PIL's uint8 arithmetic), got backend={backend!r}; "
            "convert them with to_float first"
        )
    target = hr_size if out_size is None else (int(out_size[0]), int(out_size[1]))
    if min(target) < 1:
        raise ValueError(f"out_size must be a pair (H, W) of positive ints, got {out_size!r}")

    def down_up(members: Tensor, lr_size: tuple[int, int]) -> Tensor:
        small = members if lr_size == hr_size else _resize(members, lr_size, backend)
        if lr_size == target:
            return small if quantised else small.clamp(0.0, 1.0)
        big = _resize(small, target, backend)
        return big if quantised else big.clamp(0.0, 1.0)  # uint8 kernels saturate by themselves

    if not isinstance(size, Tensor) or size.ndim < 2:
        lr_size = resolve_size(size, hr_size)  # type: ignore[arg-type]
        if lr_size == hr_size and target == hr_size:
            return images.clone()
        return down_up(images, lr_size)

    sizes = _per_sample_sizes(size, images.shape[0], hr_size)
    # One resampling call per distinct size on a batch sorted by size: the groups are slices (no per-group
    # gather or scatter), and two gathers in all put the batch in and out of that order.
    keys = sizes[:, 0] * (hr_size[1] + 1) + sizes[:, 1]
    unique, counts = torch.unique(keys, return_counts=True)
    if len(unique) == 1:
        return degrade(images, tuple(sizes[0].tolist()), out_size=out_size, backend=backend)
    # The batch is put in order of size, each group is resampled by one call into its slice of ``by_size``, and
    # the result is put back in the batch's order.
    order = torch.argsort(keys, stable=True).to(images.device, non_blocking=True)
    inverse = torch.argsort(order)
    layout = torch.channels_last if _is_channels_last(images) else torch.contiguous_format
    shape = (*images.shape[:2], *target)
    by_size = torch.empty(shape, dtype=images.dtype, device=images.device, memory_format=layout)
    stops = torch.cumsum(counts, 0).tolist()
    groups = [
        (divmod(key, hr_size[1] + 1), stop - count, stop)
        for key, count, stop in zip(unique.tolist(), counts.tolist(), stops, strict=True)
    ]
    # Largest LR size first: it costs the most, and a pool takes the groups in this order.
    groups.sort(key=lambda group: group[0][0] * group[0][1], reverse=True)
    modes = (torch.is_inference_mode_enabled(), torch.is_grad_enabled())

    def fill(group: tuple[tuple[int, int], int, int]) -> None:
        lr_size, start, stop = group
        with caller_modes(*modes):
            members = _gather(images, order[start:stop])
            if lr_size == hr_size and target == hr_size:
                by_size[start:stop].copy_(members)
            else:
                by_size[start:stop].copy_(down_up(members, lr_size))

    # torch's uint8 kernel parallelises a group of small images poorly (few output rows per image); groups run
    # in parallel do (timings: benchmarks/README.md). The float kernels gain nothing.
    workers = min(torch.get_num_threads(), len(groups)) if quantised and images.device.type == "cpu" else 1
    if workers == 1:
        for group in groups:
            fill(group)
        return _gather(by_size, inverse)  # differentiable: the float path may carry gradients

    out = torch.empty(shape, dtype=images.dtype, device=images.device, memory_format=layout)

    def unsort(bounds: tuple[int, int]) -> None:
        with caller_modes(*modes):
            _gather(by_size, inverse[bounds[0] : bounds[1]], out=out[bounds[0] : bounds[1]])

    pool = thread_pool(workers)
    list(pool.map(fill, groups))
    half = len(images) // 2
    list(pool.map(unsort, [(0, half), (half, len(images))]))
    return out


def _is_channels_last(images: Tensor) -> bool:
    return images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()


def _gather(images: Tensor, index: Tensor, out: Tensor | None = None) -> Tensor:
    """``images[index]`` along the batch (into ``out`` when given), keeping a channels-last layout.

    Channels-last is the layout of stacked decoded HWC images; torch's uint8 antialiased kernels are vectorised
    over it, and a plain ``index_select`` would return the default layout.
    """
    if _is_channels_last(images):
        nhwc = None if out is None else out.permute(0, 2, 3, 1)
        return torch.index_select(images.permute(0, 2, 3, 1), 0, index, out=nhwc).permute(0, 3, 1, 2)
    return torch.index_select(images, 0, index, out=out)


def _block_shape(target: float, height: int, width: int, slack: float = 0.1) -> tuple[int, int]:
    """Integer sides ``(h, w)`` of a block of about ``target`` pixels with about the image's aspect ratio.

    Among heights within ``slack`` of ``sqrt(target * H / W)``, the one whose block area is closest to ``target``.
    """
    ideal_h = math.sqrt(target * height / width)
    low = max(1, math.floor(ideal_h * (1 - slack)))
    high = min(height, math.ceil(ideal_h * (1 + slack)))
    best: tuple[float, float, int, int] | None = None
    for block_h in range(low, high + 1):
        block_w = min(width, max(1, round(target / block_h)))
        key = (abs(block_h * block_w - target), abs(block_h - ideal_h), block_h, block_w)
        best = key if best is None or key < best else best
    assert best is not None
    return best[2], best[3]


def occlusion_mask(
    images: Tensor,
    mode: OcclusionMode = "block",
    area: float = 0.2,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The occlusion of Guided-CNN (000, §3.2) as a boolean mask, True where pixels are zeroed.

    ``"block"``: one rectangle with about the image's aspect ratio (square on a square face) whose area is the
    closest to ``area * H * W`` that integer sides allow, at a uniform random position fully inside the image,
    drawn per sample ("we randomly blocked 20% contiguous areas"). ``"upper"`` / ``"lower"``: the upper / lower
    ``H // 2`` rows. ``"half"``: upper or lower half, chosen per sample with probability 1/2 (the paper's 50 %
    occlusion: "we randomly blocked the upper or the bottom half").

    Args:
        images: ``(B, C, H, W)`` tensor; only its shape and device are used.
        mode: ``"block"``, ``"upper"``, ``"lower"`` or ``"half"``.
        area: fraction of the image covered by the block, in ``(0, 1]``; ignored by the half modes.
        generator: random generator (on any device; the draws are made there and moved); default the global RNG.

    Returns:
        Bool ``(B, 1, H, W)`` mask on the device of ``images``.

    Raises:
        ValueError: for an unknown mode, an ``area`` outside ``(0, 1]`` or a non-4-D input.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be a (B, C, H, W) tensor, got shape {tuple(images.shape)}")
    if mode not in get_args(OcclusionMode):
        raise ValueError(f"mode must be one of {get_args(OcclusionMode)}, got {mode!r}")
    batch, height, width = images.shape[0], int(images.shape[-2]), int(images.shape[-1])
    device = images.device
    draw_device = generator.device if generator is not None else torch.device("cpu")
    rows = torch.arange(height, device=device).view(1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, width)

    if mode in ("upper", "lower", "half"):
        if mode == "half":
            upper = torch.rand(batch, generator=generator, device=draw_device).to(device) < 0.5
        else:
            upper = torch.full((batch,), mode == "upper", device=device)
        in_upper = (rows < height // 2).expand(batch, height, width)
        mask = torch.where(upper.view(batch, 1, 1), in_upper, ~in_upper)
        return mask.unsqueeze(1)

    if not 0.0 < area <= 1.0:
        raise ValueError(f"area must be a fraction of the image in (0, 1], got {area}")
    block_h, block_w = _block_shape(area * height * width, height, width)
    top = torch.randint(0, height - block_h + 1, (batch,), generator=generator, device=draw_device).to(device)
    left = torch.randint(0, width - block_w + 1, (batch,), generator=generator, device=draw_device).to(device)
    top, left = top.view(batch, 1, 1), left.view(batch, 1, 1)
    inside_rows = (rows >= top) & (rows < top + block_h)
    inside_cols = (cols >= left) & (cols < left + block_w)
    return (inside_rows & inside_cols).unsqueeze(1)


def occlude(
    images: Tensor,
    mode: OcclusionMode = "block",
    area: float = 0.2,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Zero a random block or half of each image (Guided-CNN, 000 §3.2); the input is left untouched.

    Args:
        images: ``(B, C, H, W)``, any dtype and device.
        mode: ``"block"`` (``area`` of the image), ``"upper"``, ``"lower"`` or ``"half"`` (random upper/lower).
        area: block fraction in ``(0, 1]`` (the paper uses 0.2).
        generator: random generator; default the global RNG.

    Returns:
        A new tensor like ``images`` with the pixels of :func:`occlusion_mask` set to 0.

    Raises:
        ValueError: as :func:`occlusion_mask`.
    """
    return images.masked_fill(occlusion_mask(images, mode, area, generator), 0)


def to_float(images: Tensor) -> Tensor:
    """Convert ``uint8`` images in ``[0, 255]`` to ``float32`` in ``[0, 1]``.

    Args:
        images: ``uint8`` tensor of any shape; a floating tensor is taken to be in ``[0, 1]`` already and is
            returned as ``float32``.

    Returns:
        ``float32`` tensor of the same shape.

    Raises:
        TypeError: for other dtypes.
    """
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    if images.is_floating_point():
        return images.to(torch.float32)
    raise TypeError(f"images must be uint8 in [0, 255] or float in [0, 1], got dtype {images.dtype}")


def to_uint8(images: Tensor) -> Tensor:
    """Convert float images in ``[0, 1]`` to ``uint8`` (values are clamped and rounded to the nearest level).

    Args:
        images: floating tensor of any shape.

    Returns:
        ``uint8`` tensor of the same shape.

    Raises:
        TypeError: for non-float input.
    """
    if not images.is_floating_point():
        raise TypeError(f"images must be float in [0, 1], got dtype {images.dtype}")
    return images.mul(255.0).clamp_(0.0, 255.0).round_().to(torch.uint8)
