"""Facial priors from 68 iBUG landmarks: Gaussian heatmaps and an 11-class (Helen) parsing map.

RIM (paper 001, Sec. 3.1.1) supervises its landmark path with one 2D Gaussian heatmap per landmark (Eq. (3)) and its
parsing path with a per-pixel cross-entropy over the Helen parsing classes (Eq. (4)). Real data sets rarely ship parsing
labels, so :func:`landmarks_to_parsing` estimates a parsing map from the landmarks by rasterising part polygons. The
same polygons (:func:`face_part_polygons`) are what :class:`crossres.data.synthetic.SyntheticFaces` draws, so priors for
synthetic and real data come from one definition.

Coordinates are pixel ``(x, y)`` with integer values at pixel centres: pixel ``(row i, column j)`` is centred on
``(x=j, y=i)`` and the image spans ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

__all__ = [
    "NUM_LANDMARKS",
    "PARSING_CLASSES",
    "face_frame",
    "face_part_polygons",
    "forehead_arc",
    "landmarks_to_heatmaps",
    "landmarks_to_parsing",
    "rasterise_polygons",
]

NUM_LANDMARKS = 68

#: Helen parsing classes; "left"/"right" are the subject's (iBUG points 22-26 / 42-47 are the subject's left).
PARSING_CLASSES: tuple[str, ...] = (
    "background",
    "skin",
    "left_brow",
    "right_brow",
    "left_eye",
    "right_eye",
    "nose",
    "upper_lip",
    "inner_mouth",
    "lower_lip",
    "hair",
)
BACKGROUND, SKIN, LEFT_BROW, RIGHT_BROW, LEFT_EYE, RIGHT_EYE, NOSE, UPPER_LIP, INNER_MOUTH, LOWER_LIP, HAIR = range(11)

#: Default forehead height (hairline) above the jaw's top points, in half face widths, for real faces.
DEFAULT_FOREHEAD_HEIGHT = 0.85
#: Default brow thickness in mean eye widths.
DEFAULT_BROW_THICKNESS = 0.28
_HAIR_WIDTH = 1.12
_HAIR_HEIGHT = 1.45


def landmarks_to_heatmaps(landmarks: Tensor, size: tuple[int, int], sigma: float = 2.0) -> Tensor:
    """Render one Gaussian heatmap per landmark (RIM, Sec. 3.1.1: "a 2D Gaussian distribution centered at the
    landmark point"; the target ``H_hr`` of Eq. (3)).

    Args:
        landmarks: ``(..., N, 2)`` pixel coordinates ``(x, y)``.
        size: output ``(h, w)``.
        sigma: standard deviation of the Gaussian in pixels.

    Returns:
        ``(..., N, h, w)`` heatmaps with ``exp(-d^2 / (2 sigma^2))`` at distance ``d`` from the landmark (peak 1), in
        the floating dtype of ``landmarks`` (``float32`` for integer input) on its device.

    Raises:
        ValueError: if ``landmarks`` is not ``(..., N, 2)``, ``size`` is not two positive ints or ``sigma <= 0``.
    """
    if landmarks.ndim < 2 or landmarks.shape[-1] != 2:
        raise ValueError(f"landmarks must have shape (..., N, 2), got {tuple(landmarks.shape)}")
    height, width = _check_size(size)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if not landmarks.is_floating_point():
        landmarks = landmarks.float()
    xs = torch.arange(width, device=landmarks.device, dtype=landmarks.dtype)
    ys = torch.arange(height, device=landmarks.device, dtype=landmarks.dtype)
    # exp(-((j-x)^2 + (i-y)^2) / 2s^2) factorises into a row and a column Gaussian.
    gx = torch.exp(-((xs - landmarks[..., 0:1]) ** 2) / (2 * sigma**2))  # (..., N, W)
    gy = torch.exp(-((ys - landmarks[..., 1:2]) ** 2) / (2 * sigma**2))  # (..., N, H)
    return gy.unsqueeze(-1) * gx.unsqueeze(-2)


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    if len(size) != 2 or any(int(s) != s or s <= 0 for s in size):
        raise ValueError(f"size must be two positive ints (h, w), got {size!r}")
    return int(size[0]), int(size[1])


@lru_cache(maxsize=64)
def _catmull_rom(num_points: int, steps: int, closed: bool) -> np.ndarray:
    """Weights ``(M, K)`` that densify ``K`` control points into ``M`` points on a Catmull-Rom spline through them.

    Every control point is reproduced exactly (at ``t = 0`` of its segment), so landmarks stay on the outline.
    """
    k = num_points
    segments = k if closed else k - 1
    t = np.arange(steps) / steps
    basis = 0.5 * np.stack(
        [-t + 2 * t**2 - t**3, 2 - 5 * t**2 + 3 * t**3, t + 4 * t**2 - 3 * t**3, -(t**2) + t**3], axis=1
    )  # (steps, 4)
    rows = []
    for i in range(segments):
        idx = [i - 1, i, i + 1, i + 2]
        idx = [j % k for j in idx] if closed else [min(max(j, 0), k - 1) for j in idx]
        w = np.zeros((steps, k))
        for col, j in enumerate(idx):
            w[:, j] += basis[:, col]
        rows.append(w)
    if not closed:
        last = np.zeros((1, k))
        last[0, k - 1] = 1.0
        rows.append(last)
    return np.concatenate(rows, axis=0)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def _perp(v: np.ndarray) -> np.ndarray:
    """Rotate image-space vectors by +90 degrees: (x, y) -> (-y, x) (downwards for a rightwards vector)."""
    return np.stack([-v[..., 1], v[..., 0]], axis=-1)


def face_frame(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A face-relative frame from the jaw's top points, robust to in-plane rotation and expression.

    Args:
        landmarks: ``(..., 68, 2)`` pixel coordinates.

    Returns:
        ``(origin, half_width, up)``, each ``(..., 2)``: the midpoint of points 0 and 16, half the vector from point 0
        to point 16, and the unit vector perpendicular to it that points to the top of the head.
    """
    origin = 0.5 * (landmarks[..., 0, :] + landmarks[..., 16, :])
    half_width = 0.5 * (landmarks[..., 16, :] - landmarks[..., 0, :])
    up = -_perp(_unit(half_width))
    return origin, half_width, up


def forehead_arc(landmarks: np.ndarray, height: float, width: float = 1.0, num: int = 15) -> np.ndarray:
    """Half-ellipse over the head from the jaw's point 16 side to its point 0 side (endpoints excluded).

    Args:
        landmarks: ``(..., 68, 2)`` pixel coordinates.
        height: apex height above the jaw's top points, in half face widths (``|p16 - p0| / 2``).
        width: horizontal radius in half face widths (1 passes through points 16 and 0).
        num: number of arc points.

    Returns:
        ``(..., num, 2)`` points ordered from the subject's left (image right) to the subject's right.
    """
    origin, half_width, up = face_frame(landmarks)
    cos, sin = _arc(num)
    scale = np.linalg.norm(half_width, axis=-1, keepdims=True)[..., None]  # (..., 1, 1)
    return origin[..., None, :] + (width * cos) * half_width[..., None, :] + (height * sin) * scale * up[..., None, :]


@lru_cache(maxsize=8)
def _arc(num: int) -> tuple[np.ndarray, np.ndarray]:
    theta = np.linspace(0.0, np.pi, num + 2)[1:-1, None]
    return np.cos(theta), np.sin(theta)


def _gradient_matrix(n: int) -> np.ndarray:
    """``(n, n)`` matrix of :func:`numpy.gradient` along a polyline (one-sided at the ends)."""
    g = np.zeros((n, n))
    g[0, :2] = [-1.0, 1.0]
    g[-1, -2:] = [-1.0, 1.0]
    for i in range(1, n - 1):
        g[i, i - 1], g[i, i + 1] = -0.5, 0.5
    return g


def _pick(num_rows_total: int, index: Sequence[int]) -> np.ndarray:
    w = np.zeros((len(index), num_rows_total))
    w[np.arange(len(index)), list(index)] = 1.0
    return w


def _curve(index: Sequence[int], steps: int) -> np.ndarray:
    """``(M, 68)`` weights of an open spline through the given landmarks."""
    return _catmull_rom(len(index), steps, False) @ _pick(NUM_LANDMARKS, index)


@lru_cache(maxsize=1)
def _outline_weights() -> tuple[np.ndarray, dict[str, slice]]:
    """One ``(M, 68)`` matrix for every outline that is linear in the landmarks, and the row slice of each.

    Eyes: upper lid corner -> corner, lower lid back (sharp corners). Mouth: the outer and inner lip contours split
    it into upper lip, inner mouth and lower lip. Brows: centre lines and their tangents.
    """
    blocks: dict[str, np.ndarray] = {"jaw": _curve(range(17), 2)}
    for name, eye in (("right_eye", list(range(36, 42))), ("left_eye", list(range(42, 48)))):
        upper = _curve(eye[0:4], 3)
        lower = _curve([eye[3], eye[4], eye[5], eye[0]], 3)
        blocks[name] = np.concatenate([upper, lower[1:-1]])
    outer_upper = _curve(range(48, 55), 3)  # 48 -> 54
    outer_lower = _curve([54, 55, 56, 57, 58, 59, 48], 3)  # 54 -> 48
    inner_upper = _curve(range(60, 65), 3)  # 60 -> 64
    inner_lower = _curve([64, 65, 66, 67, 60], 3)  # 64 -> 60
    blocks["inner_mouth"] = np.concatenate([inner_upper, inner_lower[1:-1]])
    blocks["upper_lip"] = np.concatenate([outer_upper, inner_upper[::-1]])
    blocks["lower_lip"] = np.concatenate([outer_lower, inner_lower[::-1]])
    for name, brow in (("right_brow", range(17, 22)), ("left_brow", range(22, 27))):
        line = _curve(brow, 3)
        blocks[name] = line
        blocks[name + "_tangent"] = _gradient_matrix(line.shape[0]) @ line
    slices, start = {}, 0
    for name, block in blocks.items():
        slices[name] = slice(start, start + block.shape[0])
        start += block.shape[0]
    return np.concatenate(list(blocks.values())), slices


@lru_cache(maxsize=8)
def _brow_profile(n: int, outer_first: bool) -> np.ndarray:
    s = np.linspace(0.0, 1.0, n) if outer_first else np.linspace(1.0, 0.0, n)  # 0 at tail, 1 at head
    return (0.45 + 0.55 * np.minimum(1.0, 1.6 * s))[:, None]


def _brow_polygon(line: np.ndarray, tangent: np.ndarray, thickness: np.ndarray, outer_first: bool) -> np.ndarray:
    """Brow centre line -> a band that is thickest at the head (inner end) and tapers to the tail."""
    normal = _perp(_unit(tangent))
    half = (0.5 * np.asarray(thickness)[..., None, None]) * _brow_profile(line.shape[-2], outer_first) * normal
    return np.concatenate([line + half, (line - half)[..., ::-1, :]], axis=-2)


def _nose_polygon(lm: np.ndarray) -> np.ndarray:
    axis = lm[..., 30, :] - lm[..., 27, :]
    right = -_perp(_unit(axis))  # towards the image right for an upright face
    alar = 0.5 * np.linalg.norm(lm[..., 35, :] - lm[..., 31, :], axis=-1)[..., None]
    widths = np.array([0.22, 0.28, 0.42, 0.75])  # at 27, 28, 29, 30 in alar half-widths
    bridge = lm[..., 27:31, :]
    offset = widths[:, None] * alar[..., None] * right[..., None, :]
    left_side = bridge - offset
    right_side = bridge + offset
    base = lm[..., 31:36, :]
    out = 0.12 * alar * right
    return np.concatenate(
        [
            left_side,
            (base[..., 0, :] - out)[..., None, :],
            base,
            (base[..., 4, :] + out)[..., None, :],
            right_side[..., ::-1, :],
        ],
        axis=-2,
    )


def face_part_polygons(
    landmarks: np.ndarray,
    forehead_height: float = DEFAULT_FOREHEAD_HEIGHT,
    brow_thickness: float | np.ndarray | None = None,
) -> list[tuple[int, np.ndarray]]:
    """Polygons of the face parts, in drawing order (later parts cover earlier ones).

    Skin is the jaw contour (points 0-16) closed by a half-ellipse forehead over the head; the nose joins the bridge
    (27-30, widened) to the base (31-35); brows are bands around the centre lines 17-21 / 22-26; eyes are the lid
    outlines 36-41 / 42-47; the mouth is split by the outer (48-59) and inner (60-67) lip contours into upper lip,
    inner mouth and lower lip. Curves are Catmull-Rom splines through the landmarks, so every landmark lies on its
    part's outline.

    Args:
        landmarks: ``(..., 68, 2)`` pixel coordinates ``(x, y)``.
        forehead_height: forehead apex above the jaw's top points, in half face widths.
        brow_thickness: brow thickness in mean eye widths (scalar or ``(...)``); default
            :data:`DEFAULT_BROW_THICKNESS`.

    Returns:
        ``[(class_index, polygon (..., K, 2)), ...]`` in the order skin, nose, brows, eyes, inner mouth, upper lip,
        lower lip.

    Raises:
        ValueError: if ``landmarks`` is not ``(..., 68, 2)``.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim < 2 or lm.shape[-2:] != (NUM_LANDMARKS, 2):
        raise ValueError(f"landmarks must have shape (..., {NUM_LANDMARKS}, 2), got {tuple(lm.shape)}")
    weights, rows = _outline_weights()
    dense = weights @ lm
    eye_width = 0.5 * (
        np.linalg.norm(lm[..., 39, :] - lm[..., 36, :], axis=-1)
        + np.linalg.norm(lm[..., 45, :] - lm[..., 42, :], axis=-1)
    )
    thickness = eye_width * (DEFAULT_BROW_THICKNESS if brow_thickness is None else np.asarray(brow_thickness))
    skin = np.concatenate([dense[..., rows["jaw"], :], forehead_arc(lm, forehead_height)], axis=-2)
    brows = {
        name: _brow_polygon(dense[..., rows[name], :], dense[..., rows[name + "_tangent"], :], thickness, outer_first)
        for name, outer_first in (("right_brow", True), ("left_brow", False))
    }
    return [
        (SKIN, skin),
        (NOSE, _nose_polygon(lm)),
        (RIGHT_BROW, brows["right_brow"]),
        (LEFT_BROW, brows["left_brow"]),
        (RIGHT_EYE, dense[..., rows["right_eye"], :]),
        (LEFT_EYE, dense[..., rows["left_eye"], :]),
        (INNER_MOUTH, dense[..., rows["inner_mouth"], :]),
        (UPPER_LIP, dense[..., rows["upper_lip"], :]),
        (LOWER_LIP, dense[..., rows["lower_lip"], :]),
    ]


def _hair_band(landmarks: np.ndarray) -> np.ndarray:
    """Generic hair region for real faces: a wider, taller half-ellipse than the forehead, down to the jaw's top."""
    origin, half_width, _ = face_frame(landmarks)
    arc = forehead_arc(landmarks, _HAIR_HEIGHT, width=_HAIR_WIDTH)
    right = origin + _HAIR_WIDTH * half_width
    left = origin - _HAIR_WIDTH * half_width
    return np.concatenate([right[..., None, :], arc, left[..., None, :]], axis=-2)


def rasterise_polygons(polygons: Sequence[tuple[int, np.ndarray]], size: tuple[int, int]) -> np.ndarray:
    """Fill polygons in order into a label map (later polygons overwrite earlier ones; outlines are included).

    Args:
        polygons: ``[(class_index, (K, 2) pixel coordinates), ...]`` for a single image.
        size: output ``(h, w)``.

    Returns:
        ``uint8`` ``(h, w)`` label map, 0 where no polygon covers a pixel.
    """
    height, width = size
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for label, polygon in polygons:
        draw.polygon(np.asarray(polygon, dtype=np.float64).ravel().tolist(), fill=int(label))
    return np.asarray(canvas)


def landmarks_to_parsing(landmarks: Tensor, size: tuple[int, int]) -> Tensor:
    """Estimate an 11-class Helen parsing map from 68 iBUG landmarks (for data without parsing labels, RIM Eq. (4)).

    Hair is a band over an estimated forehead (its shape is not in the landmarks); everything else follows
    :func:`face_part_polygons` with its defaults.

    Args:
        landmarks: ``(68, 2)`` or ``(B, 68, 2)`` pixel coordinates ``(x, y)``.
        size: output ``(h, w)``.

    Returns:
        ``int64`` parsing map ``(h, w)`` or ``(B, h, w)`` with class indices into :data:`PARSING_CLASSES`, on the
        device of ``landmarks``.

    Raises:
        ValueError: if ``landmarks`` is not ``(68, 2)`` / ``(B, 68, 2)`` or ``size`` is not two positive ints.
    """
    if landmarks.ndim not in (2, 3) or tuple(landmarks.shape[-2:]) != (NUM_LANDMARKS, 2):
        raise ValueError(f"landmarks must have shape (68, 2) or (B, 68, 2), got {tuple(landmarks.shape)}")
    size = _check_size(size)
    lm = landmarks.detach().to("cpu", torch.float64).numpy()
    batch = lm.reshape(-1, NUM_LANDMARKS, 2)
    hair = _hair_band(batch)
    parts = face_part_polygons(batch)
    maps = np.stack(
        [
            rasterise_polygons([(HAIR, hair[b])] + [(label, poly[b]) for label, poly in parts], size)
            for b in range(batch.shape[0])
        ]
    )
    out = torch.from_numpy(maps.astype(np.int64)).to(landmarks.device)
    return out[0] if landmarks.ndim == 2 else out
