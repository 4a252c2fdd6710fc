"""dlib's face chip: the crop dlib's face recogniser embeds (150 x 150, padding 0.25), cut from five landmarks.

The geometry of dlib's ``get_face_chip_details`` and ``extract_image_chip``
(``dlib/image_transforms/interpolation.h``), in torch and without dlib:

* **Template.** dlib's five normalised points (:data:`DLIB5_TEMPLATE`, dlib's 5-point order) are padded,
  ``(padding + p) / (1 + 2 padding)``, and scaled by the chip size.
* **Fit.** The least-squares similarity (Umeyama, unweighted) from the template to the landmarks gives a rotation
  angle, a scale ``s`` and the photo point of the chip position ``(cols / 2, rows / 2)``; dlib keeps them as a
  rectangle of ``cols * s`` by ``rows * s`` pixels centred there (its ``centered_drect``: inclusive extent
  ``cols * s - 1``) and the angle.
* **Sampling.** Chip pixels ``0`` and ``cols - 1`` land on the rectangle's left and right edges, rotated about
  its centre, so chip pixels are ``(cols * s - 1) / (cols - 1)`` photo pixels apart. Each chip pixel is the
  bilinear mix of the four photo pixels around it, truncated to an integer; pixels whose four neighbours are not
  all inside the photo are 0.
* **Pyramid.** When the rectangle halved still has more pixels than the chip, dlib first halves the photo region
  around it (as often as that holds) with its 5 x 5 binomial filter ``[1, 4, 6, 4, 1]^2 / 256`` (integer sums,
  truncated), maps the rectangle into the halved image with its ``point_down`` (``p / 2 - (1.25, 0.75)``, while
  the filter puts output pixel ``q`` at input ``2 q + 2``) and samples there.

:func:`face_chip` reproduces ``dlib.get_face_chip(image, shape, size, padding)`` and also returns the matrix from
photo pixels to chip pixels where the photo content actually lands (including the pyramid's offset).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from crossres.data.similarity import arcface_template, estimate_similarity

__all__ = [
    "DLIB5_FROM_68",
    "DLIB5_TEMPLATE",
    "ChipDetails",
    "chip_to_photo",
    "dlib5_from_68",
    "dlib_chip_template",
    "extract_image_chip",
    "face_chip",
    "face_chip_details",
    "knoche_scale",
    "pyramid_depth",
]

#: dlib's normalised 5-point face template (``get_face_chip_details``), in dlib's 5-point order: outer and inner
#: corner of the image-right eye (the subject's left eye), outer and inner corner of the image-left eye, the base
#: of the nose (between the nostrils). ``(x, y)`` in ``[0, 1]`` before padding.
DLIB5_TEMPLATE = torch.tensor(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ],
    dtype=torch.float64,
)
#: The iBUG 68-point indices (0-based) nearest dlib's five points: eye corners 45, 42, 36, 39 and nose base 33.
DLIB5_FROM_68 = (45, 42, 36, 39, 33)

_FILTER = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])


def dlib5_from_68(landmarks: Tensor) -> Tensor:
    """The five points of dlib's 5-point order approximated by iBUG 68 landmarks (:data:`DLIB5_FROM_68`).

    dlib's 5-point predictor was trained on its own annotations, so its points are near these, not equal to them.

    Args:
        landmarks: ``(..., 68, 2)`` ``(x, y)`` points.

    Returns:
        ``(..., 5, 2)`` points in dlib's 5-point order.

    Raises:
        ValueError: if ``landmarks`` is not ``(..., 68, 2)``.
    """
    if landmarks.ndim < 2 or tuple(landmarks.shape[-2:]) != (68, 2):
        raise ValueError(f"landmarks must have shape (..., 68, 2), got {tuple(landmarks.shape)}")
    return landmarks[..., list(DLIB5_FROM_68), :]


def dlib_chip_template(size: int = 150, padding: float = 0.25) -> Tensor:
    """The five points of dlib's face template in chip pixels for a ``size`` x ``size`` chip.

    Args:
        size: chip side in pixels.
        padding: dlib's padding, a share of the template's extent added on every side (0.25 for the recogniser).

    Returns:
        ``(5, 2)`` float64 ``(x, y)``.
    """
    return (padding + DLIB5_TEMPLATE) / (2 * padding + 1) * size


def knoche_scale(size: int = 150, padding: float = 0.25) -> float:
    """Factor from a face size on a 112 px ArcFace crop to the same face on a dlib chip: the eye-distance ratio.

    Knoche et al.'s protocol sizes are sides of 112 px ArcFace crops; ``data.knoche_scale`` multiplies them by this
    factor, so that a probe keeps as many pixels between the eyes as the protocol gives it (dlib's eye centres are
    the means of its two corner points per eye).

    Args:
        size: chip side in pixels.
        padding: dlib's padding.
    """
    chip = dlib_chip_template(size, padding)
    chip_distance = float((chip[0:2].mean(0) - chip[2:4].mean(0)).norm())
    arcface = arcface_template((112, 112))
    return chip_distance / float((arcface[1] - arcface[0]).norm())


@dataclass(frozen=True)
class ChipDetails:
    """Where a chip lies in the photo, as dlib's ``chip_details``.

    Attributes:
        rect: ``(left, top, right, bottom)`` of the unrotated rectangle in photo pixels (inclusive extent: chip
            pixels ``0`` and ``cols - 1`` sit on ``left`` and ``right``).
        angle: rotation of the rectangle about its centre, radians.
        rows: chip height in pixels.
        cols: chip width in pixels.
    """

    rect: tuple[float, float, float, float]
    angle: float
    rows: int
    cols: int


def face_chip_details(five: Tensor, size: int = 150, padding: float = 0.25) -> ChipDetails:
    """Where dlib's ``get_face_chip_details`` puts the chip of five landmarks.

    Args:
        five: ``(5, 2)`` ``(x, y)`` photo pixels in dlib's 5-point order (:data:`DLIB5_TEMPLATE`).
        size: chip side in pixels (at least 2).
        padding: dlib's padding (``>= 0``).

    Returns:
        The chip's rectangle and angle.

    Raises:
        ValueError: on a wrong shape, ``size < 2``, a negative padding, or coinciding landmarks.
    """
    if tuple(five.shape) != (5, 2):
        raise ValueError(f"five must be (5, 2) points in dlib's 5-point order, got {tuple(five.shape)}")
    if size < 2 or padding < 0:
        raise ValueError(f"size must be >= 2 and padding >= 0, got size={size}, padding={padding}")
    template = dlib_chip_template(size, padding)
    matrix = estimate_similarity(template, five.double())  # chip -> photo
    cos_s, sin_s = float(matrix[0, 0]), float(matrix[1, 0])
    scale = math.hypot(cos_s, sin_s)
    centre_x, centre_y = (matrix @ torch.tensor([size / 2.0, size / 2.0, 1.0], dtype=torch.float64)).tolist()
    half_w, half_h = (size * scale - 1) / 2, (size * scale - 1) / 2  # dlib's centered_drect
    return ChipDetails(
        rect=(centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h),
        angle=math.atan2(sin_s, cos_s),
        rows=size,
        cols=size,
    )


def chip_to_photo(details: ChipDetails, rect: tuple[float, float, float, float] | None = None) -> Tensor:
    """The ``2 x 3`` affine matrix dlib samples with: chip pixel ``(u, v, 1)`` to photo pixel ``(x, y)``.

    Args:
        details: the chip.
        rect: the rectangle to use instead of ``details.rect`` (dlib's rectangle in a pyramid level).

    Returns:
        float64 ``(2, 3)``.
    """
    left, top, right, bottom = details.rect if rect is None else rect
    cos_a, sin_a = math.cos(details.angle), math.sin(details.angle)
    rotation = torch.tensor([[cos_a, -sin_a], [sin_a, cos_a]], dtype=torch.float64)
    spacing = torch.tensor(
        [(right - left) / max(details.cols - 1, 1), (bottom - top) / max(details.rows - 1, 1)], dtype=torch.float64
    )
    linear = rotation * spacing  # R @ diag(spacing)
    centre = torch.tensor([(left + right) / 2, (top + bottom) / 2], dtype=torch.float64)
    offset = centre - linear @ torch.tensor([(details.cols - 1) / 2, (details.rows - 1) / 2], dtype=torch.float64)
    return torch.cat([linear, offset[:, None]], dim=1)


def _area(rect: tuple[float, float, float, float]) -> float:
    left, top, right, bottom = rect
    return (right - left + 1) * (bottom - top + 1)  # dlib's drectangle area (inclusive extent)


def _rect_down(rect: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    left, top, right, bottom = rect
    return (left / 2 - 1.25, top / 2 - 0.75, right / 2 - 1.25, bottom / 2 - 0.75)  # dlib's pyramid_down<2>


def pyramid_depth(details: ChipDetails) -> int:
    """How often dlib halves the photo before sampling the chip (0: the chip is sampled from the photo itself).

    Args:
        details: the chip.

    Returns:
        The number of halvings after which the rectangle still has more pixels than the chip.
    """
    depth, rect = 0, _rect_down(details.rect)
    while _area(rect) > details.rows * details.cols:
        rect, depth = _rect_down(rect), depth + 1
    return depth


def _pyramid_down(image: Tensor) -> Tensor:
    """One level of dlib's ``pyramid_down<2>`` on float ``(C, H, W)`` integer-valued pixels."""
    channels, height, width = image.shape
    if height <= 8 or width <= 8:
        return image.new_zeros(channels, 0, 0)
    kernel = (_FILTER[:, None] * _FILTER[None, :]).to(image)[None, None].expand(channels, 1, 5, 5)
    summed = F.conv2d(image[None], kernel, stride=2, groups=channels)[0]  # exact: sums < 2^16
    return torch.div(summed, 256, rounding_mode="floor")


def _bilinear(image: Tensor, points: Tensor) -> Tensor:
    """Sample as dlib's ``interpolate_bilinear`` on float64 ``(C, H, W)`` at ``(N, 2)`` points: truncated, 0 outside."""
    channels, height, width = image.shape
    x, y = points[:, 0], points[:, 1]
    left, top = torch.floor(x), torch.floor(y)
    inside = (left >= 0) & (top >= 0) & (left + 1 < width) & (top + 1 < height)
    lr, tb = x - left, y - top
    col = left.clamp(0, max(width - 2, 0)).long()
    row = top.clamp(0, max(height - 2, 0)).long()
    flat = image.reshape(channels, -1)

    def pixel(r: Tensor, c: Tensor) -> Tensor:
        return flat[:, r * width + c] if width and height else torch.zeros(channels, len(r), dtype=image.dtype)

    tl, tr = pixel(row, col), pixel(row, col + 1)
    bl, br = pixel(row + 1, col), pixel(row + 1, col + 1)
    value = (1 - tb) * ((1 - lr) * tl + lr * tr) + tb * ((1 - lr) * bl + lr * br)
    return torch.where(inside, torch.trunc(value), torch.zeros_like(value))


def extract_image_chip(image: Tensor, details: ChipDetails) -> tuple[Tensor, Tensor]:
    """Cut a chip as dlib's ``extract_image_chip`` does (bilinear, with its image pyramid).

    Args:
        image: ``(3, H, W)`` (or ``(C, H, W)``) ``uint8`` photo.
        details: the chip (:func:`face_chip_details`).

    Returns:
        ``(chip, matrix)``: the ``uint8`` ``(C, rows, cols)`` chip and the float64 ``2 x 3`` matrix from photo
        pixels to chip pixels, where the photo content lands in the chip (pixel centres at integers).

    Raises:
        ValueError: if ``image`` is not ``(C, H, W)`` ``uint8``.
    """
    if image.ndim != 3 or image.dtype != torch.uint8:
        raise ValueError(f"image must be uint8 (C, H, W), got {image.dtype} {tuple(image.shape)}")
    channels, height, width = image.shape
    depth = pyramid_depth(details)
    left, top, right, bottom = details.rect
    centre = ((left + right) / 2, (top + bottom) / 2)
    cos_a, sin_a = math.cos(details.angle), math.sin(details.angle)
    corners = [
        (
            centre[0] + cos_a * (x - centre[0]) - sin_a * (y - centre[1]),
            centre[1] + sin_a * (x - centre[0]) + cos_a * (y - centre[1]),
        )
        for x, y in ((left, top), (right, top), (left, bottom), (right, bottom))
    ]
    grow = 4 * 2**depth - 2  # dlib: 2 pixels of border per level, doubled at every level
    box = (
        max(min(x for x, _ in corners) - grow, 0.0),
        max(min(y for _, y in corners) - grow, 0.0),
        min(max(x for x, _ in corners) + grow, float(width - 1)),
        min(max(y for _, y in corners) + grow, float(height - 1)),
    )
    box_left, box_top, box_right, box_bottom = (math.floor(v + 0.5) for v in box)  # std::lround, v >= 0
    chip = torch.zeros(channels, details.rows, details.cols, dtype=torch.uint8)
    rect = (left - box_left, top - box_top, right - box_left, bottom - box_top)
    for _ in range(depth):
        rect = _rect_down(rect)
    to_level = chip_to_photo(details, rect)
    # Where level pixel q lies in the photo: each halving puts q at 2 q + 2 of the level below.
    factor = 2.0**depth
    level_to_photo = torch.tensor(
        [[factor, 0.0, box_left + 2 * (factor - 1)], [0.0, factor, box_top + 2 * (factor - 1)]], dtype=torch.float64
    )
    chip_to_content = level_to_photo[:, :2] @ to_level
    chip_to_content[:, 2] += level_to_photo[:, 2]
    matrix = _invert(chip_to_content)
    if box_right < box_left or box_bottom < box_top:  # the chip lies outside the photo
        return chip, matrix
    level = image[:, box_top : box_bottom + 1, box_left : box_right + 1].double()
    for _ in range(depth):
        level = _pyramid_down(level)
    v, u = torch.meshgrid(
        torch.arange(details.rows, dtype=torch.float64), torch.arange(details.cols, dtype=torch.float64), indexing="ij"
    )
    grid = torch.stack([u.flatten(), v.flatten()], dim=1)
    points = grid @ to_level[:, :2].T + to_level[:, 2]
    values = _bilinear(level, points)
    return values.reshape(channels, details.rows, details.cols).to(torch.uint8), matrix


def _invert(matrix: Tensor) -> Tensor:
    linear = torch.linalg.inv(matrix[:, :2])
    return torch.cat([linear, -(linear @ matrix[:, 2:])], dim=1)


def face_chip(image: Tensor, five: Tensor, size: int = 150, padding: float = 0.25) -> tuple[Tensor, Tensor]:
    """``dlib.get_face_chip(image, shape, size, padding)`` for five landmarks in dlib's 5-point order.

    Args:
        image: ``(3, H, W)`` ``uint8`` RGB photo.
        five: ``(5, 2)`` ``(x, y)`` photo pixels: dlib's 5-point predictor's output (or :func:`dlib5_from_68`).
        size: chip side (150: what dlib's face recogniser expects).
        padding: dlib's padding (0.25 for the recogniser).

    Returns:
        ``(chip, matrix)``: ``uint8`` ``(3, size, size)`` and the float64 ``2 x 3`` matrix from photo pixels to
        chip pixels (see :func:`extract_image_chip`).
    """
    return extract_image_chip(image, face_chip_details(five, size, padding))
