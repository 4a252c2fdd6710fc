"""Five-point face alignment onto the ArcFace template (similarity transform, Umeyama 1991), or dlib's chip.

The 112 x 112 template is insightface's ``arcface_dst`` (eyes, nose tip, mouth corners, ``(x, y)`` px); the
112 x 96 template is the same points shifted by 8 px to the left. The transform from the detected landmarks to
the template is the least-squares similarity of Umeyama, "Least-squares estimation of transformation
parameters between two point patterns", IEEE TPAMI 13(4), 1991, Eqs. (40)-(42); the warp is bilinear
(``kornia.geometry.transform.warp_affine``), with pixel centres at integer coordinates as in OpenCV.

The ``"dlib150"`` template is the 150 x 150 chip of dlib's face recogniser instead (:mod:`crossres.data.chip`), cut
from five landmarks in dlib's 5-point order.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

import torch
from kornia.geometry.transform import warp_affine
from torch import Tensor
from torchvision.io import encode_jpeg, encode_png

from crossres.data.chip import face_chip
from crossres.data.codec import IMAGE_EXTENSIONS, decode_image_bytes
from crossres.data.landmarks import load_landmarks
from crossres.data.similarity import (
    ARCFACE_TEMPLATE_112,
    ARCFACE_TEMPLATE_112x96,
    arcface_template,
    estimate_similarity,
)

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "ARCFACE_TEMPLATE_112x96",
    "DLIB150",
    "TEMPLATES",
    "Template",
    "align_faces",
    "align_folder",
    "arcface_template",
    "cut_face",
    "estimate_similarity",
    "load_landmarks",
    "output_file",
    "write_image",
]

log = logging.getLogger(__name__)

#: ``"arcface"``: five ArcFace points (eye centres, nose tip, mouth corners) onto insightface's template, any
#: ``output_size``; ``"dlib150"``: ``dlib.get_face_chip(image, shape, 150, 0.25)`` from dlib's five points.
Template = Literal["arcface", "dlib150"]
TEMPLATES: tuple[str, ...] = get_args(Template)
#: Side and padding of the chip dlib's face recogniser embeds (``"dlib150"``).
DLIB150 = (150, 0.25)


def align_faces(
    images: Tensor,
    landmarks: Tensor,
    output_size: tuple[int, int] = (112, 112),
    template: Tensor | None = None,
    weights: Sequence[float] | Tensor | None = None,
) -> Tensor:
    """Warp faces so their five landmarks land on the ArcFace template.

    Args:
        images: ``(B, 3, H, W)`` or ``(3, H, W)``, ``uint8`` or float; any input size.
        landmarks: ``(B, 5, 2)`` or ``(5, 2)`` ``(x, y)`` pixel coordinates in ``images`` (eyes, nose, mouth
            corners, subject's left first as in insightface's detectors' output order).
        output_size: ``(h, w)`` of the aligned crops.
        template: ``(5, 2)`` target points; default :func:`arcface_template` of ``output_size``.
        weights: per-point weights of the fit (:func:`estimate_similarity`); ``None``: all equal.

    Returns:
        ``(B, 3, h, w)`` (or ``(3, h, w)``) aligned faces in the input dtype (``uint8`` rounded); pixels that
        come from outside the input are 0.

    Raises:
        ValueError: on mismatched batch sizes or landmark shapes.
    """
    single = images.ndim == 3
    batch = images[None] if single else images
    points = landmarks[None] if landmarks.ndim == 2 else landmarks
    if batch.ndim != 4 or points.ndim != 3 or points.shape[0] != batch.shape[0] or points.shape[-1] != 2:
        raise ValueError(
            f"images must be (B, 3, H, W) or (3, H, W) and landmarks (B, N, 2) or (N, 2) with the same B, got "
            f"{tuple(images.shape)} and {tuple(landmarks.shape)}"
        )
    target = arcface_template(output_size) if template is None else torch.as_tensor(template, dtype=torch.float64)
    if target.shape != points.shape[1:]:
        raise ValueError(f"template has shape {tuple(target.shape)}, landmarks have {tuple(points.shape[1:])}")
    matrix = estimate_similarity(points.double().cpu(), target.expand_as(points).cpu(), weights)
    source = batch.float() if not batch.is_floating_point() else batch
    warped = warp_affine(
        source,
        matrix.to(device=source.device, dtype=source.dtype),
        dsize=(int(output_size[0]), int(output_size[1])),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )
    if batch.dtype == torch.uint8:
        warped = warped.round().clamp(0, 255).to(torch.uint8)
    return warped[0] if single else warped


def cut_face(
    image: Tensor,
    five: Tensor,
    template: Template = "arcface",
    output_size: tuple[int, int] | None = None,
    weights: Sequence[float] | Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One aligned face and the matrix that maps the photo onto it.

    Args:
        image: ``(3, H, W)`` ``uint8`` photo.
        five: ``(5, 2)`` ``(x, y)`` photo pixels: the ArcFace five (eye centres, nose tip, mouth corners, subject's
            left first) for ``"arcface"``; dlib's five (:data:`~crossres.data.chip.DLIB5_TEMPLATE`: eye corners
            and nose base) for ``"dlib150"``.
        template: ``"arcface"`` or ``"dlib150"``.
        output_size: ``(h, w)``; default ``(112, 112)`` for ``"arcface"``; ``"dlib150"`` is always 150 x 150.
        weights: per-point weights of the ArcFace fit (:func:`estimate_similarity`); ``"dlib150"`` fits unweighted.

    Returns:
        ``(crop, matrix)``: ``uint8`` ``(3, h, w)`` and the float64 ``2 x 3`` matrix from photo to crop pixels.

    Raises:
        ValueError: on an unknown template, or ``"dlib150"`` with another size or with weights.
    """
    if template == "dlib150":
        size, padding = DLIB150
        if output_size not in (None, (size, size)) or weights is not None:
            raise ValueError(
                f"template dlib150 is dlib's {size} x {size} chip, fitted unweighted; drop the size/weights"
            )
        return face_chip(image, five, size, padding)
    if template != "arcface":
        raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
    size_hw = (112, 112) if output_size is None else output_size
    target = arcface_template(size_hw)
    matrix = estimate_similarity(five.double(), target, weights).double()
    return align_faces(image, five, output_size=size_hw, template=target, weights=weights), matrix


def output_file(relative: Path, ext: str | None = None) -> Path:
    """The aligned file of ``relative``: the same path, or with the suffix ``.<ext>`` (``"png"``, ``"jpg"``).

    Args:
        relative: the photo's path relative to the source folder.
        ext: the output format; ``None`` keeps the photo's (PNG for ``.png``, else JPEG).

    Returns:
        The path relative to the output folder.
    """
    return relative if ext is None else relative.with_suffix("." + ext.lstrip(".").lower())


def write_image(path: Path, image: Tensor, quality: int = 95) -> None:
    """Write ``uint8`` ``(3, H, W)`` as PNG (``.png``) or JPEG (any other suffix), creating the folder.

    Args:
        path: the file.
        image: the image.
        quality: JPEG quality.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded = encode_png(image) if path.suffix.lower() == ".png" else encode_jpeg(image, quality=quality)
    path.write_bytes(encoded.numpy().tobytes())


def align_folder(
    src_dir: str | Path,
    dst_dir: str | Path,
    landmarks_file: str | Path,
    output_size: tuple[int, int] = (112, 112),
    overwrite: bool = False,
    quality: int = 95,
    weights: Sequence[float] | None = None,
    template: Template = "arcface",
    ext: str | None = None,
) -> dict[str, int]:
    """Align every image of ``src_dir`` that has landmarks into ``dst_dir``, mirroring the folder layout.

    ``src_dir/<identity>/<file>`` becomes ``dst_dir/<identity>/<file>`` (JPEG, or PNG for ``.png`` files; ``ext``
    forces one), ready for :class:`~crossres.data.folder.ImageFolderFaces`. All outputs are checked before
    anything is written. An image that does not decode or align is skipped and listed in ``dst_dir/skipped.csv``
    (``path,reason,faces``, as :func:`~crossres.data.detect.detect_align_folder` writes it).

    Args:
        src_dir: input images (any depth).
        dst_dir: output root.
        landmarks_file: see :func:`load_landmarks`; paths relative to ``src_dir`` (or absolute inside it); five
            points per image, in the template's order (:func:`cut_face`).
        output_size: ``(h, w)`` of the aligned crops (``"arcface"`` only).
        overwrite: replace existing output files instead of raising.
        quality: JPEG quality.
        weights: five point weights of the fit (:func:`estimate_similarity`); ``None``: all equal.
        template: ``"arcface"`` or ``"dlib150"`` (dlib's recogniser chip, :func:`cut_face`).
        ext: write every crop as ``"png"`` or ``"jpg"``; ``None`` keeps each photo's format.

    Returns:
        ``{"aligned": written images, "missing_landmarks": images of src_dir without landmarks,
        "missing_images": landmark entries whose image does not exist, "skipped": images in skipped.csv}``.

    Raises:
        FileNotFoundError: if ``src_dir`` or the landmarks file is missing.
        FileExistsError: if an output exists and ``overwrite`` is false.
        ValueError: if a landmark path points outside ``src_dir``.
    """
    src, dst = Path(src_dir).resolve(), Path(dst_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"source folder {src_dir} not found")
    landmarks = load_landmarks(landmarks_file)
    jobs: list[tuple[Path, Path, Tensor]] = []
    missing_images = 0
    covered: set[Path] = set()
    for name, points in landmarks.items():
        image_path = (src / name).resolve()
        if not image_path.is_relative_to(src):
            raise ValueError(f"{landmarks_file}: image {name!r} lies outside the source folder {src}")
        if not image_path.is_file():
            missing_images += 1
            log.warning("align_folder: %s listed in %s does not exist", image_path, landmarks_file)
            continue
        covered.add(image_path)
        jobs.append((image_path, dst / output_file(image_path.relative_to(src), ext), points))
    existing = [out for _, out, _ in jobs if out.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{len(existing)} output file(s) already exist, e.g. {existing[0]}; pass overwrite=True to replace them"
        )
    size = None if template == "dlib150" else output_size
    skipped: list[tuple[str, str, int]] = []
    for image_path, out_path, points in jobs:
        name = image_path.relative_to(src).as_posix()
        try:
            image = decode_image_bytes(image_path.read_bytes())
        except (RuntimeError, OSError) as err:
            skipped.append((name, f"unreadable: {err}".replace("\n", " "), 0))
            log.warning("align_folder: skipping %s: %s", image_path, err)
            continue
        try:
            aligned, _ = cut_face(image, points, template, size, weights)
        except (RuntimeError, ValueError) as err:  # e.g. degenerate landmarks
            skipped.append((name, f"not aligned: {err}".replace("\n", " "), 1))
            log.warning("align_folder: skipping %s: %s", image_path, err)
            continue
        write_image(out_path, aligned, quality)
    dst.mkdir(parents=True, exist_ok=True)
    with (dst / "skipped.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "reason", "faces"])
        writer.writerows(skipped)
    all_images = {p.resolve() for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS}
    return {
        "aligned": len(jobs) - len(skipped),
        "missing_landmarks": len(all_images - covered),
        "missing_images": missing_images,
        "skipped": len(skipped),
    }
