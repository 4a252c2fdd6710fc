"""An independent judge of identity: dlib's ResNet face recogniser (the optional ``crossres[dlib]`` extra).

SR methods (IPU-Net, RIM) are trained against a recogniser; judging their outputs with that same recogniser
rewards fooling it. dlib's recogniser (``dlib_face_recognition_resnet_model_v1``, a ResNet-29 trained by Davis
King on about 3 million faces, 99.38 % on LFW) was never seen by crossres, so it serves as an evaluator, never a
training target: the Euclidean distance between the 128-D descriptors of an SR or LR face and of its HR
original, and the share of pairs under dlib's same-person threshold 0.6.

dlib computes a descriptor on its own 150 x 150 face chip, cut with 68 landmarks. :class:`IdentityJudge` takes
the landmarks of the *reference* (HR) face for both faces of a pair: the SR/LR face has the same size and
geometry (crossres degrades and re-upsamples to the HR size), so the distance measures identity drift, not a
landmark detector failing on a 7 px face.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from crossres.data.align import arcface_template
from crossres.data.detect import dlib_shape, load_dlib_model, predict_landmarks, require_dlib, to_dlib_image

__all__ = ["DLIB_SAME_PERSON_THRESHOLD", "IdentityJudge", "descriptor_distance", "share_same"]

#: dlib's documented threshold: descriptors closer than this are the same person (99.38 % on LFW).
DLIB_SAME_PERSON_THRESHOLD = 0.6

# The dlib HOG box of a face relative to its eye centres, in inter-ocular distances (measured on the
# astronaut photo: box 179..266 x 83..170 around eyes at x 203.2 / 246.8, y 102.8): the shape predictor's
# starting box for aligned crops.
_BOX_LEFT, _BOX_RIGHT, _BOX_TOP, _BOX_BOTTOM = 0.55, 0.55, 0.42, 1.56


def descriptor_distance(a: Tensor, b: Tensor) -> Tensor:
    """Euclidean distance between descriptors, row by row.

    Args:
        a: ``(B, D)`` descriptors.
        b: ``(B, D)`` descriptors.

    Returns:
        ``(B,)`` distances.
    """
    return (a - b).norm(dim=-1)


def share_same(distances: Tensor, threshold: float = DLIB_SAME_PERSON_THRESHOLD) -> float:
    """Share of pairs judged the same person (distance strictly under ``threshold``).

    Args:
        distances: ``(B,)`` descriptor distances.
        threshold: same-person threshold.

    Returns:
        A fraction in ``[0, 1]`` (``nan`` for no pairs).
    """
    return float((distances < threshold).double().mean()) if distances.numel() else float("nan")


def template_box(size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The face box ``(left, top, right, bottom)`` of an ArcFace-aligned crop of ``(h, w)`` px."""
    template = arcface_template(size)
    (left_x, left_y), (right_x, right_y) = template[0].tolist(), template[1].tolist()
    iod, eye_y = right_x - left_x, 0.5 * (left_y + right_y)
    return (
        left_x - _BOX_LEFT * iod,
        eye_y - _BOX_TOP * iod,
        right_x + _BOX_RIGHT * iod,
        eye_y + _BOX_BOTTOM * iod,
    )


class IdentityJudge:
    """dlib's 128-D face descriptor as an evaluator: distance of SR/LR faces to their HR originals.

    Args:
        threshold: same-person threshold on the descriptor distance (dlib: 0.6).
        num_jitters: dlib's test-time augmentation (``0``: none, deterministic; ``n``: mean over ``n`` random
            jitters, about ``n`` times slower).
        box: where the 68-point shape predictor starts on a reference face: ``"template"`` (the box of an
            ArcFace-aligned crop, as every crossres face is) or ``"detect"`` (dlib's HOG detector with one
            upsampling, the template box when it finds nothing; for faces that are not aligned crops).

    Raises:
        ImportError: if dlib or its models are not installed (names ``pip install 'crossres[dlib]'``).
        ValueError: on a non-positive threshold, negative ``num_jitters`` or unknown ``box``.
    """

    def __init__(
        self,
        threshold: float = DLIB_SAME_PERSON_THRESHOLD,
        num_jitters: int = 0,
        box: Literal["template", "detect"] = "template",
    ) -> None:
        if not threshold > 0:
            raise ValueError(f"threshold must be > 0, got {threshold}")
        if num_jitters < 0:
            raise ValueError(f"num_jitters must be >= 0, got {num_jitters}")
        if box not in ("template", "detect"):
            raise ValueError(f"box must be 'template' or 'detect', got {box!r}")
        self.threshold, self.num_jitters, self.box = float(threshold), int(num_jitters), box
        require_dlib("IdentityJudge (dlib's face recogniser)")
        self._recognizer = load_dlib_model("recognizer")
        load_dlib_model("landmarks68")

    def landmarks(self, references: Tensor) -> Tensor:
        """68 iBUG landmarks of reference faces (dlib's shape predictor).

        Args:
            references: ``(B, 3, H, W)`` faces, ``uint8`` or float in ``[0, 1]``.

        Returns:
            ``(B, 68, 2)`` float64 ``(x, y)``.
        """
        size = (int(references.shape[-2]), int(references.shape[-1]))
        fallback = template_box(size)
        out = []
        for image in references:
            array = to_dlib_image(image)
            box = fallback
            if self.box == "detect":
                rects = load_dlib_model("hog")(array, 1)
                if len(rects):
                    r = max(rects, key=lambda r: r.area())
                    box = (float(r.left()), float(r.top()), float(r.right()), float(r.bottom()))
            out.append(predict_landmarks(array, box))
        return torch.stack(out)

    def descriptors(self, images: Tensor, landmarks: Tensor) -> Tensor:
        """The 128-D dlib descriptors of faces, on chips cut with the given landmarks.

        Args:
            images: ``(B, 3, H, W)`` faces, ``uint8`` or float in ``[0, 1]``.
            landmarks: ``(B, 68, 2)`` ``(x, y)`` points in ``images``' pixels.

        Returns:
            ``(B, 128)`` float64 descriptors.

        Raises:
            ValueError: if the shapes disagree.
        """
        if images.ndim != 4 or landmarks.shape != (images.shape[0], 68, 2):
            raise ValueError(
                f"images must be (B, 3, H, W) and landmarks (B, 68, 2), got {tuple(images.shape)} and "
                f"{tuple(landmarks.shape)}"
            )
        out = []
        for image, points in zip(images, landmarks, strict=True):
            array = to_dlib_image(image)
            shape = dlib_shape(points)
            out.append(np.asarray(self._recognizer.compute_face_descriptor(array, shape, self.num_jitters)))
        return torch.from_numpy(np.stack(out)) if out else torch.zeros(0, 128, dtype=torch.float64)

    def distances(self, images: Tensor, references: Tensor, landmarks: Tensor | None = None) -> Tensor:
        """Descriptor distance of each face to its reference.

        Args:
            images: ``(B, 3, H, W)`` SR or LR faces (``uint8`` or float in ``[0, 1]``), at the references' size.
            references: ``(B, 3, H, W)`` HR originals.
            landmarks: ``(B, 68, 2)`` landmarks of the references; default :meth:`landmarks` of them.

        Returns:
            ``(B,)`` float64 distances; ``0`` for an image with itself.

        Raises:
            ValueError: if ``images`` and ``references`` differ in shape.
        """
        if images.shape != references.shape:
            raise ValueError(
                f"images {tuple(images.shape)} and references {tuple(references.shape)} must have the same shape "
                "(upsample LR faces to the HR size first)"
            )
        points = self.landmarks(references) if landmarks is None else landmarks
        return descriptor_distance(self.descriptors(images, points), self.descriptors(references, points))

    def __call__(self, images: Tensor, references: Tensor, landmarks: Tensor | None = None) -> dict[str, float]:
        """Mean descriptor distance and the share of pairs under the threshold.

        Args:
            images: SR or LR faces, as :meth:`distances`.
            references: their HR originals.
            landmarks: landmarks of the references (default: detected).

        Returns:
            ``{"distance": mean distance, "distance_std": its standard deviation, "share_same": share under
            the threshold, "pairs": B}``.
        """
        distances = self.distances(images, references, landmarks)
        return {
            "distance": float(distances.mean()) if distances.numel() else float("nan"),
            "distance_std": float(distances.std(unbiased=False)) if distances.numel() else float("nan"),
            "share_same": share_same(distances, self.threshold),
            "pairs": int(distances.numel()),
        }
