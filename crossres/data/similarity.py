"""The geometry of five-point alignment: insightface's ArcFace template and Umeyama's similarity fit.

The 112 x 112 template is insightface's ``arcface_dst`` (eyes, nose tip, mouth corners, ``(x, y)`` px); the
112 x 96 template is the same points shifted by 8 px to the left. The transform from the detected landmarks to
the template is the least-squares similarity of Umeyama, "Least-squares estimation of transformation
parameters between two point patterns", IEEE TPAMI 13(4), 1991, Eqs. (40)-(42).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "ARCFACE_TEMPLATE_112x96",
    "arcface_template",
    "estimate_similarity",
    "point_weights",
]

#: insightface ``arcface_dst``: left eye, right eye, nose tip, left and right mouth corner, 112 x 112 px.
ARCFACE_TEMPLATE_112 = torch.tensor(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=torch.float64,
)
#: The same template for 112 x 96 (h x w) crops: ``x - 8``.
ARCFACE_TEMPLATE_112x96 = ARCFACE_TEMPLATE_112 - torch.tensor([8.0, 0.0], dtype=torch.float64)


def arcface_template(output_size: tuple[int, int] = (112, 112)) -> Tensor:
    """The five ArcFace template points for an output of ``(h, w)`` px.

    ``(112, 112)`` and ``(112, 96)`` are the published templates; a size with the 112:96 aspect ratio scales the
    96-wide template, any other size scales the 112 x 112 template per axis.

    Args:
        output_size: ``(h, w)`` of the aligned crop.

    Returns:
        ``(5, 2)`` float64 ``(x, y)`` points.
    """
    h, w = output_size
    if w * 112 == h * 96:
        return ARCFACE_TEMPLATE_112x96 * (h / 112.0)
    return ARCFACE_TEMPLATE_112 * torch.tensor([w / 112.0, h / 112.0], dtype=torch.float64)


def estimate_similarity(src: Tensor, dst: Tensor, weights: Sequence[float] | Tensor | None = None) -> Tensor:
    """Least-squares similarity transform (rotation, uniform scale, translation) mapping ``src`` onto ``dst``.

    Umeyama (1991): with the centred point sets and ``Sigma = (1/n) sum (y_i - mu_y)(x_i - mu_x)^T = U D V^T``,
    Eq. (40) ``R = U S V^T`` (``S = diag(1, -1)`` when ``det U det V < 0``, which excludes reflections),
    Eq. (42) ``c = tr(D S) / sigma_x^2``, Eq. (41) ``t = mu_y - c R mu_x``. With ``weights`` every mean, the
    covariance and the variance are weighted (``1/n`` becomes ``w_i / sum w``): the weighted least-squares fit.

    Args:
        src: ``(B, N, 2)`` or ``(N, 2)`` source points ``(x, y)``, ``N >= 2``.
        dst: target points of the same shape.
        weights: ``N`` non-negative weights of the points (``None``: all equal, as insightface's alignment);
            e.g. ``[4, 4, 1, 1, 1]`` puts the eyes nearer the ArcFace template at the mouth corners' expense.

    Returns:
        ``(B, 2, 3)`` (or ``(2, 3)``) matrices ``[c R | t]`` with ``dst ~ c R src + t``, in the input's floating
        dtype (float32 for integer input); computed in float64.

    Raises:
        ValueError: on mismatched shapes, bad weights or a degenerate ``src`` (all points equal).
    """
    if src.shape != dst.shape or src.ndim not in (2, 3) or src.shape[-1] != 2 or src.shape[-2] < 2:
        raise ValueError(
            f"src and dst must both be (B, N, 2) or (N, 2) with N >= 2, got {tuple(src.shape)} and {tuple(dst.shape)}"
        )
    single = src.ndim == 2
    out_dtype = src.dtype if src.is_floating_point() else torch.float32
    x = (src[None] if single else src).double()
    y = (dst[None] if single else dst).to(x)
    w = point_weights(weights, x.shape[1]).to(x)
    mu_x, mu_y = (w[:, None] * x).sum(dim=1), (w[:, None] * y).sum(dim=1)
    xc, yc = x - mu_x[:, None], y - mu_y[:, None]
    var_x = (w[:, None] * xc.pow(2)).sum(dim=(1, 2))  # sigma_x^2, Eq. (36)
    if bool((var_x <= 1e-12).any()):
        raise ValueError("estimate_similarity: the (weighted) source points of some item coincide; no transform exists")
    sigma = yc.transpose(1, 2) @ (w[:, None] * xc)  # Sigma_xy, Eq. (38)
    u, d, vh = torch.linalg.svd(sigma)
    sign = torch.sign(torch.linalg.det(u) * torch.linalg.det(vh))
    s = torch.ones_like(d)
    s[:, -1] = torch.where(sign < 0, -1.0, 1.0)
    rotation = u @ torch.diag_embed(s) @ vh  # Eq. (40)
    scale = (d * s).sum(dim=1) / var_x  # Eq. (42)
    translation = mu_y - scale[:, None] * (rotation @ mu_x[:, :, None]).squeeze(-1)  # Eq. (41)
    matrix = torch.cat([scale[:, None, None] * rotation, translation[:, :, None]], dim=2).to(out_dtype)
    return matrix[0] if single else matrix


def point_weights(weights: Sequence[float] | Tensor | None, n: int) -> Tensor:
    """``n`` point weights normalised to sum 1 (equal when ``None``).

    Raises:
        ValueError: on a wrong count, a negative or non-finite weight, or an all-zero list.
    """
    if weights is None:
        return torch.full((n,), 1.0 / n, dtype=torch.float64)
    w = torch.as_tensor(weights, dtype=torch.float64).flatten()
    if w.numel() != n or not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ValueError(f"point weights must be {n} finite non-negative numbers, not all 0, got {w.tolist()}")
    return w / w.sum()
