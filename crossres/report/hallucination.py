"""Super-resolution image grids: LR | bicubic | SR (predicted landmarks) | SR parsing | HR (RIM, 001 Fig. 3)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from crossres.data.priors import PARSING_CLASSES
from crossres.metrics.image_quality import psnr
from crossres.transforms.functional import Backend, degrade, downsample, resolve_size

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from crossres.methods.rim import RIM

__all__ = ["heatmap_peaks", "rim_sr_grid", "sr_grid"]

# One colour per Helen class (background transparent).
_PARSING_COLOURS = np.array(
    [
        [0, 0, 0], [230, 190, 150], [120, 60, 20], [160, 90, 30], [30, 120, 255], [0, 200, 255], [255, 140, 0],
        [220, 20, 60], [90, 0, 40], [255, 90, 140], [60, 40, 20],
    ],
    dtype=np.float64,
) / 255  # fmt: skip


def heatmap_peaks(heatmaps: Tensor, stride: int = 1) -> Tensor:
    """Landmark positions from regressed heatmaps: the arg-max of every channel, in face pixels.

    Args:
        heatmaps: ``(B, N, h, w)`` heatmaps predicted at ``1 / stride`` of the face size.
        stride: face pixels per heatmap pixel (pixel ``j`` of the map is centred on face pixel ``s*j + (s-1)/2``).

    Returns:
        ``(B, N, 2)`` float ``(x, y)`` coordinates in face pixels.
    """
    b, n, h, w = heatmaps.shape
    index = heatmaps.reshape(b, n, h * w).argmax(-1)
    ys, xs = torch.div(index, w, rounding_mode="floor"), index % w
    offset = (stride - 1) / 2
    return torch.stack([xs * stride + offset, ys * stride + offset], dim=-1).float()


def _image(x: Tensor) -> np.ndarray:
    return x.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def sr_grid(
    lr: Tensor,
    bicubic: Tensor,
    sr: Tensor,
    hr: Tensor,
    landmarks: Tensor | None = None,
    parsing: Tensor | None = None,
    title: str | None = None,
    path: str | Path | None = None,
) -> Figure:
    """One row per face: LR (its real pixels), bicubic, SR with landmarks, SR with parsing, HR; PSNR in titles.

    Args:
        lr: ``(B, 3, h, w)`` LR faces at their own size (shown with nearest-neighbour pixels).
        bicubic: ``(B, 3, H, W)`` the LR faces bicubic-upsampled to the HR size.
        sr: ``(B, 3, H, W)`` super-resolved faces.
        hr: ``(B, 3, H, W)`` ground truth.
        landmarks: ``(B, N, 2)`` predicted landmarks ``(x, y)`` in face pixels, drawn on the SR column.
        parsing: ``(B, h', w')`` predicted parsing labels (any size; drawn over the SR face).
        title: figure title.
        path: save the figure here (PNG) when given; parent directories are created.

    Returns:
        The matplotlib figure.
    """
    from matplotlib.figure import Figure  # no pyplot: the caller's backend (a notebook's inline one) is untouched

    rows = sr.shape[0]
    columns = ["LR", "bicubic", "SR + landmarks", "SR + parsing", "HR"]
    fig = Figure(figsize=(2.0 * len(columns), 2.1 * rows + 0.4))
    axes = fig.subplots(rows, len(columns), squeeze=False)
    height, width = hr.shape[-2:]
    for r in range(rows):
        panels: list[tuple[np.ndarray, str]] = [
            (_image(lr[r]), f"LR {lr.shape[-2]}x{lr.shape[-1]}"),
            (_image(bicubic[r]), f"bicubic {psnr(bicubic[r : r + 1].clamp(0, 1), hr[r : r + 1]):.1f} dB"),
            (_image(sr[r]), f"SR {psnr(sr[r : r + 1].clamp(0, 1), hr[r : r + 1]):.1f} dB"),
            (_image(sr[r]), "SR + parsing"),
            (_image(hr[r]), "HR"),
        ]
        for c, (picture, label) in enumerate(panels):
            ax = axes[r, c]
            extent = (-0.5, width - 0.5, height - 0.5, -0.5)
            ax.imshow(picture, interpolation="nearest", extent=extent)
            if c == 2 and landmarks is not None:
                points = landmarks[r].detach().cpu().numpy()
                ax.scatter(points[:, 0], points[:, 1], s=4, c="lime", linewidths=0)
            if c == 3 and parsing is not None:
                labels = parsing[r].detach().cpu().numpy().astype(int)
                colours = _PARSING_COLOURS[np.clip(labels, 0, len(_PARSING_COLOURS) - 1)]
                overlay = np.concatenate([colours, 0.55 * (labels > 0)[..., None]], axis=-1)
                ax.imshow(overlay, interpolation="nearest", extent=extent)
            ax.set_xlim(-0.5, width - 0.5)
            ax.set_ylim(height - 0.5, -0.5)
            ax.set_title(label, fontsize=7)
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig


@torch.no_grad()
def rim_sr_grid(
    model: RIM,
    hr: Tensor,
    lr_size: int | tuple[int, int],
    path: str | Path | None = None,
    backend: Backend = "pil",
    **kwargs: Any,
) -> Figure:
    """Degrade HR faces to ``lr_size``, hallucinate them with a RIM's FHN, and draw :func:`sr_grid`.

    Args:
        model: a trained :class:`~crossres.methods.rim.RIM` with FHN.
        hr: ``(B, 3, H, W)`` HR faces in ``[0, 1]`` at the model's input size.
        lr_size: LR size (``int`` or ``(h, w)``).
        path: PNG to write.
        backend: resampling backend of the degradation (as the data module's).
        **kwargs: passed to :func:`sr_grid` (e.g. ``title``).

    Returns:
        The matplotlib figure.
    """
    from crossres.nn.hallucination import PRIOR_STRIDE

    was_training = model.training
    model.eval()
    hr = hr.to(model.device)
    size = resolve_size(lr_size, (int(hr.shape[-2]), int(hr.shape[-1])))
    lr = downsample(hr, size, backend=backend).clamp(0, 1)
    bicubic = degrade(hr, size, backend=backend)
    out = model.super_resolve(bicubic)
    model.train(was_training)
    kwargs.setdefault(
        "title", f"RIM: {size[0]}x{size[1]} -> {hr.shape[-2]}x{hr.shape[-1]} ({len(PARSING_CLASSES)} parsing classes)"
    )
    return sr_grid(
        lr,
        bicubic,
        out.sr,
        hr,
        landmarks=heatmap_peaks(out.heatmaps, PRIOR_STRIDE),
        parsing=_upscale_labels(out.parsing_logits.argmax(1), PRIOR_STRIDE),
        path=path,
        **kwargs,
    )


def _upscale_labels(labels: Tensor, stride: int) -> Tensor:
    # Label maps (not faces) to face pixels by repetition, for display.
    return labels.repeat_interleave(stride, dim=-2).repeat_interleave(stride, dim=-1)
