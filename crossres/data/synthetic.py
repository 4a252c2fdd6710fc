"""Procedurally rendered face identities: the embedded default data set that needs no download.

Every image is a deterministic function of ``(seed, identity, index)``. An identity fixes coarse geometry (face and jaw
shape; eye, brow, nose and mouth placement, size and shape; skin, hair, iris colours; hair style; beard) and fine detail
(moles, freckles and scars at fixed face-relative positions, an iris pattern, a fine skin texture), so downsampling to
7-14 px destroys the fine part of the identity and keeps part of the coarse one, as with real faces. Each image adds
nuisance: pose (in-plane rotation, shift, scale and a mild yaw), illumination, expression, background clutter and sensor
noise, each scaled by a knob (0 = none, 1 = default). A sixth knob, ``diversity`` (default 0.25, calibrated), scales
the between-identity spread of the global appearance that survives even at 7 px (skin tone, hair colour and style,
beard) and so sets how much identity is left at very low resolution.

Fine detail lives in a per-identity texture tile over the canonical face frame (skin texture; moles, freckles and scars
as a multiplicative layer with the radial face shading) that follows the face with the in-plane pose and a linearised
yaw; the iris is a per-identity sprite.

Faces are laid out like ArcFace 112x112 crops (eyes near ``y = 0.46 H``, ``x = 0.34 W / 0.66 W``; mouth corners near
``y = 0.82 H``) before the pose jitter; for other sizes the face scales with the height and is centred horizontally
(112x96 gives the SphereFace crop). The 68 iBUG landmarks are where the features are drawn: features are rendered from
the landmark geometry with the polygons of :func:`crossres.data.priors.face_part_polygons`, and the parsing map is
rasterised from the same polygons plus the identity's hair.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from crossres.data.pairs import PairSet
from crossres.data.priors import (
    HAIR,
    INNER_MOUTH,
    LEFT_BROW,
    LEFT_EYE,
    LOWER_LIP,
    NOSE,
    NUM_LANDMARKS,
    RIGHT_BROW,
    RIGHT_EYE,
    SKIN,
    UPPER_LIP,
    face_frame,
    face_part_polygons,
    rasterise_polygons,
)

__all__ = ["DEFAULT_DIVERSITY", "SyntheticFaces", "synthetic_pair_set"]

# Domain tags keep the identity, image and pair-sampling random streams apart (numpy SeedSequence pads short
# entropy with zeros, so streams are told apart by a non-zero tag rather than by length).
#: The calibrated default ``diversity``: an HR-trained iresnet18 (experiments/baseline.yaml) reaches >= 95 % HR-HR
#: verification while HR-vs-7 px falls to about 60 % (docs/design.md, "Calibration"); at 1.0 the skin, hair and beard
#: spread alone keeps HR-vs-7 px near 70 %.
DEFAULT_DIVERSITY = 0.25

_IDENTITY_TAG = 0x1D
_IMAGE_TAG = 0x1A6
_PAIRS_TAG = 0x9A1
_SUPERSAMPLE = 2
_NOISE_SEED = 0x5E1F
_TEXTURE_CELLS = 104
_TEXTURE_SPAN = 1.1  # the texture tile covers u in [-0.55, 0.55], v in [-0.05, 1.05] (image heights)
_TEXTURE_TOP = -0.05
_MOLE, _FRECKLE, _SCAR = 0, 1, 2
_GAIN_ONE = 200.0  # tile value of a unit gain (headroom for lighter scars)
_SKIN_FOREHEAD = 1.1  # skin dome height (half face widths); the hair front covers its top
_CYLINDER_RADIUS = 0.46  # head radius for the yaw model, in image heights

_SKIN_TONES = np.array(
    [[252, 224, 204], [238, 198, 166], [220, 172, 134], [188, 136, 98], [140, 94, 64], [96, 64, 44]], dtype=np.float64
)
_HAIR_COLOURS = np.array(
    [[22, 18, 16], [52, 36, 26], [92, 62, 40], [142, 102, 64], [200, 164, 108], [152, 70, 36], [160, 156, 152]],
    dtype=np.float64,
)
_HAIR_WEIGHTS = np.array([0.34, 0.34, 0.14, 0.05, 0.05, 0.02, 0.06])
_IRIS_COLOURS = np.array(
    [[64, 38, 20], [104, 66, 34], [122, 100, 52], [78, 108, 66], [72, 112, 164], [112, 130, 148], [40, 26, 16]],
    dtype=np.float64,
)
# Per-landmark height above the head cylinder (image heights) for the yaw model: jaw on the cylinder, nose most raised.
_DEPTH = np.concatenate(
    [
        np.zeros(17),
        np.full(10, 0.03),
        [0.04, 0.06, 0.08, 0.10],
        [0.05, 0.06, 0.065, 0.06, 0.05],
        np.full(12, 0.02),
        np.full(12, 0.05),
        np.full(8, 0.045),
    ]
)


@dataclass
class _Identity:
    """Everything that is fixed for one identity (canonical units: image heights, x from the centre line)."""

    jaw_w: float
    jaw_y: float
    chin_y: float
    jaw_p: float
    jaw_taper: float
    eye_dx: float
    eye_y: float
    eye_w: float
    eye_h: float
    eye_tilt: float
    lid_skew: float
    brow_gap: float
    brow_inner: float
    brow_outer: float
    brow_arch: float
    brow_slant: float
    brow_thickness: float
    nose_len: float
    nose_w: float
    nose_base: float
    mouth_y: float
    mouth_w: float
    upper_lip: float
    lower_lip: float
    cupid: float
    jitter: np.ndarray  # (68, 2) idiosyncratic landmark offsets
    skin: np.ndarray
    hair: np.ndarray
    brow: np.ndarray
    lip: np.ndarray
    iris: np.ndarray
    iris_inner: np.ndarray
    iris_inner_frac: float
    iris_size: float
    limbus: float
    crypts: np.ndarray  # (k, 3): angle, radius fraction, size
    hairline: float
    hair_tilt: float
    hair_drop: float
    widow_peak: float
    hair_side: float
    hair_top: float
    hair_length: float
    beard: int  # 0 none, 1 stubble, 2 full beard, 3 moustache
    marks: np.ndarray  # (m, 6): kind, u, v, size, angle, length
    ink: dict[str, tuple[int, ...]]  # PIL fill colours, precomputed
    strand_offsets: np.ndarray  # (6,) strands drawn in the back hair, between the head and the hair's outline
    strand_inks: list[tuple[int, ...]]
    tile: Image.Image  # LA over the canonical frame: L skin texture (128 = 0), A shading x marks (_GAIN_ONE = 1)
    texture_amp: float
    iris_sprites: dict[int, Image.Image] = field(default_factory=dict)  # per image height, see _iris_sprite
    basis: np.ndarray = field(default_factory=lambda: np.zeros((6, NUM_LANDMARKS, 2)))  # see _expression_basis


def _rgb(colour: np.ndarray, factor: float = 1.0, alpha: int | None = None) -> tuple[int, ...]:
    c = tuple(min(255, max(0, int(v * factor))) for v in colour.tolist())
    return c if alpha is None else (*c, alpha)


def _tn(rng: np.random.Generator, mean: float, std: float) -> float:
    """Normal draw clipped to 2.5 standard deviations."""
    return mean + std * min(2.5, max(-2.5, float(rng.standard_normal())))


def _colour(
    rng: np.random.Generator, palette: np.ndarray, weights: np.ndarray | None, jitter: float, spread: float = 0.0
) -> np.ndarray:
    """A palette colour plus jitter: with ``weights`` one entry; otherwise a blend of two neighbours at a position
    drawn uniformly, or (``spread > 0``) normally around the palette's second entry with that standard deviation.
    """
    if weights is None:
        last = len(palette) - 1
        t = min(last, max(0.0, 1.0 + spread * rng.standard_normal())) if spread > 0 else rng.uniform(0, last)
        lo = int(t)
        hi = min(lo + 1, len(palette) - 1)
        base = palette[lo] + (t - lo) * (palette[hi] - palette[lo])
    else:
        base = palette[rng.choice(len(palette), p=weights)]
    return np.clip(base + rng.normal(0, jitter, 3), 0, 255)


def _inks(
    skin: np.ndarray,
    hair: np.ndarray,
    brow: np.ndarray,
    lip: np.ndarray,
    iris: np.ndarray,
    iris_inner: np.ndarray,
    beard_alpha: float,
) -> dict[str, tuple[int, ...]]:
    return {
        "skin": _rgb(skin),
        "neck": _rgb(skin, 0.78),
        "crease": _rgb(skin, 0.8),
        "lower_lid": _rgb(skin, 0.75),
        "bridge": _rgb(skin, 0.7, 110),
        "tip": _rgb(skin, 1.12, 110),
        "nose_crease": _rgb(skin, 0.66),
        "nostril": _rgb(skin, 0.35),
        "hair": _rgb(hair),
        "beard": _rgb(hair, 0.9, int(255 * beard_alpha)),
        "brow": _rgb(brow),
        "lash": _rgb(brow, 0.5),
        "iris": _rgb(iris),
        "iris_dark": _rgb(iris, 0.45),
        "crypt": _rgb(iris, 0.6),
        "iris_inner": _rgb(iris_inner),
        "upper_lip": _rgb(lip, 0.9),
        "lower_lip": _rgb(lip),
        "lip_line": _rgb(lip, 0.55),
        "lip_highlight": _rgb(lip, 1.15, 140),
    }


def _mark_layer(marks: np.ndarray) -> np.ndarray:
    """Moles, freckles and scars as a multiplicative factor over the canonical texture frame (drawn at 4x, reduced)."""
    up = 4
    cells = _TEXTURE_CELLS * up
    per_unit = cells / _TEXTURE_SPAN  # 4x cells per image height
    layer = Image.new("L", (cells, cells), 100)
    draw = ImageDraw.Draw(layer)
    for kind, u, v, size, angle, length in marks.tolist():
        x = (u + 0.5 * _TEXTURE_SPAN) * per_unit - 0.5
        y = (v - _TEXTURE_TOP) * per_unit - 0.5
        if kind == _SCAR:
            dx, dy = 0.5 * length * per_unit * math.cos(angle), 0.5 * length * per_unit * math.sin(angle)
            draw.line([x - dx, y - dy, x + dx, y + dy], fill=110, width=max(1, round(size / 112 * per_unit)))
        else:
            radius = 0.5 * size / 112 * per_unit
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=42 if kind == _MOLE else 78)
    return np.asarray(layer.reduce(up), dtype=np.float64) / 100.0


@lru_cache(maxsize=64)
def _shading_tile(jaw_w: float) -> np.ndarray:
    """Radial darkening of the face towards its outline (in units of ``1 / _GAIN_ONE``) over the canonical frame."""
    centres = (np.arange(_TEXTURE_CELLS) + 0.5) / _TEXTURE_CELLS * _TEXTURE_SPAN
    u, v = centres[None, :] - 0.5 * _TEXTURE_SPAN, centres[:, None] + _TEXTURE_TOP
    r2 = np.minimum((u / (jaw_w + 0.02)) ** 2 + ((v - 0.62) * 2.0) ** 2, 1.2)
    return _GAIN_ONE * (1.0 - 0.17 * r2**2)


@lru_cache(maxsize=2048)  # ~30 KB each; a miss costs about half a render
def _identity(seed: int, identity: int, diversity: float) -> _Identity:
    rng = np.random.default_rng([seed, identity, _IDENTITY_TAG])

    def mix(typical: Any, value: Any) -> Any:
        """Shrink a global-appearance attribute towards its typical value (``diversity`` = 1 keeps it)."""
        return typical + diversity * (value - typical)

    # Global appearance (visible even at 7 px): skin tone, hair colour, hair style, beard; scaled by ``diversity``.
    skin = mix(_SKIN_TONES[1], _colour(rng, _SKIN_TONES, None, 5.0, spread=0.9))  # most share a light-medium tone
    hair = mix(_HAIR_COLOURS[1], _colour(rng, _HAIR_COLOURS, _HAIR_WEIGHTS, 8.0))
    brow = np.clip(hair * 0.75 + skin * 0.1, 0, 255) if hair.mean() > 120 else hair * 0.9
    lip = np.clip(skin * np.array([0.86, 0.6, 0.6]) + np.array([18, 0, 4]) + rng.normal(0, 6, 3), 0, 255)
    iris = _colour(rng, _IRIS_COLOURS, None, 10.0)
    iris_inner = np.clip(iris * rng.uniform(0.6, 1.5) + rng.normal(0, 18, 3), 0, 255)

    num_crypts = int(rng.integers(2, 6))
    crypts = np.stack(
        [rng.uniform(0, 2 * np.pi, num_crypts), rng.uniform(0.55, 0.9, num_crypts), rng.uniform(0.6, 1.2, num_crypts)],
        1,
    )

    # Marks (kind, u, v, size, angle, length): 1-4 moles, freckles over nose and cheeks (30 %), a scar (20 %).
    num_moles = int(rng.integers(1, 5))
    num_freckles = int(rng.integers(10, 26)) if rng.random() < 0.3 else 0
    num_scars = int(rng.random() < 0.2)
    draws = rng.random((num_moles + num_freckles + num_scars, 5))
    kinds = np.repeat([_MOLE, _FRECKLE, _SCAR], [num_moles, num_freckles, num_scars])
    low = np.array([[-0.3, 0.3, 0.55, 0, 0], [-0.25, 0.53, 0.35, 0, 0], [-0.28, 0.3, 0.6, 0, 0.03]])[kinds]
    high = np.array([[0.3, 0.92, 1.2, 0, 0], [0.25, 0.67, 0.6, 0, 0], [0.28, 0.85, 0.6, np.pi, 0.08]])[kinds]
    marks = np.column_stack([kinds, low + (high - low) * draws])

    jaw_w = _tn(rng, 0.375, 0.018)
    cells = _TEXTURE_CELLS
    noise = rng.standard_normal((cells + 2, cells + 2), dtype=np.float32)
    texture = noise[1:-1, 1:-1] * 0.5 + 0.125 * (
        noise[:-2, 1:-1] + noise[2:, 1:-1] + noise[1:-1, :-2] + noise[1:-1, 2:]
    )
    tile = np.empty((cells, cells, 2), dtype=np.uint8)
    tile[..., 0] = np.clip(128 + 64 * texture, 0, 255)  # texture std ~0.61 -> ~39 levels
    tile[..., 1] = np.clip(np.round(_shading_tile(round(jaw_w, 3)) * _mark_layer(marks)), 0, 255)

    beard_draw = 1.0 - diversity * (1.0 - rng.random())  # diversity 0: never a beard
    beard = 0 if beard_draw < 0.85 else 1 if beard_draw < 0.92 else 2 if beard_draw < 0.97 else 3
    beard_alpha = rng.uniform(0.15, 0.3) if beard == 1 else rng.uniform(0.6, 0.9)
    person = _Identity(
        jaw_w=jaw_w,
        jaw_y=_tn(rng, 0.47, 0.015),
        chin_y=_tn(rng, 0.94, 0.015),
        jaw_p=rng.uniform(1.9, 3.4),
        jaw_taper=rng.uniform(0.0, 0.22),
        eye_dx=_tn(rng, 0.157, 0.01),
        eye_y=_tn(rng, 0.461, 0.008),
        eye_w=_tn(rng, 0.118, 0.01),
        eye_h=_tn(rng, 0.044, 0.007),
        eye_tilt=_tn(rng, 0.0, 0.007),
        lid_skew=_tn(rng, 0.0, 0.12),
        brow_gap=_tn(rng, 0.082, 0.01),
        brow_inner=_tn(rng, 0.055, 0.01),
        brow_outer=_tn(rng, 0.265, 0.015),
        brow_arch=rng.uniform(0.004, 0.028),
        brow_slant=_tn(rng, 0.0, 0.01),
        brow_thickness=rng.uniform(0.18, 0.46),
        nose_len=_tn(rng, 0.175, 0.013),
        nose_w=_tn(rng, 0.062, 0.008),
        nose_base=_tn(rng, 0.034, 0.006),
        mouth_y=_tn(rng, 0.823, 0.012),
        mouth_w=_tn(rng, 0.128, 0.012),
        upper_lip=_tn(rng, 0.026, 0.006),
        lower_lip=_tn(rng, 0.034, 0.007),
        cupid=rng.uniform(0.05, 0.35),
        jitter=rng.normal(0, 0.0025, (NUM_LANDMARKS, 2)),
        skin=skin,
        hair=hair,
        brow=brow,
        lip=lip,
        iris=iris,
        iris_inner=iris_inner,
        iris_inner_frac=rng.uniform(0.45, 0.8),
        iris_size=rng.uniform(0.21, 0.26),
        limbus=rng.uniform(0.08, 0.22),
        crypts=crypts,
        hairline=mix(0.7, rng.uniform(0.45, 1.05)),
        hair_tilt=mix(0.0, _tn(rng, 0.0, 0.15)),
        hair_drop=mix(0.25, rng.uniform(0.0, 0.5)),
        widow_peak=mix(0.0, rng.uniform(0.0, 0.25) if rng.random() < 0.25 else 0.0),
        hair_side=mix(0.1, rng.uniform(0.02, 0.2)),
        hair_top=mix(0.25, rng.uniform(0.1, 0.45)),
        hair_length=mix(0.1, float(rng.choice([rng.uniform(-0.1, 0.3), rng.uniform(0.3, 1.6)], p=[0.6, 0.4]))),
        beard=beard,
        marks=marks,
        ink=_inks(skin, hair, brow, lip, iris, iris_inner, beard_alpha),
        strand_offsets=rng.uniform(0.2, 0.8, 6),
        strand_inks=[_rgb(hair, shade) for shade in rng.uniform(0.7, 1.3, 6).tolist()],
        tile=Image.fromarray(tile, mode="LA"),
        texture_amp=rng.uniform(2.5, 7.0) / 39.0,
    )
    person.basis = _expression_basis(person)
    return person


@dataclass
class _Nuisance:
    rotation: float
    scale: float
    shift: np.ndarray
    yaw: float
    mouth_open: float
    smile: float
    brow_raise: float
    blink: float
    gaze: np.ndarray


def _canonical_landmarks(p: _Identity, expression: np.ndarray) -> np.ndarray:
    """68 iBUG landmarks ``(u, v)`` in image heights (``u`` from the centre line) before pose, without the jitter.

    Args:
        p: the identity.
        expression: ``(E, 5)`` rows of (mouth opening, smile, squint, brow raise, blink); squint stands for
            ``max(smile, 0)`` so that the result is linear in the row (see :func:`_expression_basis`).

    Returns:
        ``(E, 68, 2)``.
    """
    mouth_open, smile, squint, brow_raise, blink = (expression[:, i : i + 1] for i in range(5))  # each (E, 1)
    pts = np.empty((expression.shape[0], NUM_LANDMARKS, 2))
    open_h = 0.07 * mouth_open

    # Jaw 0-16: superellipse from the left temple over the chin; the chin drops when the mouth opens.
    e = 2.0 / p.jaw_p
    v_rel = _JAW_SIN**e
    pts[:, 0:17, 0] = -p.jaw_w * np.sign(_JAW_COS) * np.abs(_JAW_COS) ** e * (1 - p.jaw_taper * v_rel**2)
    pts[:, 0:17, 1] = p.jaw_y + (p.chin_y - p.jaw_y) * v_rel + 0.5 * open_h * v_rel**3

    # Brows 17-21 (image left, outer -> inner) and 22-26 (inner -> outer), on their centre lines.
    f = _BROW_F
    brow_u = p.brow_inner + (1 - f) * (p.brow_outer - p.brow_inner)
    brow_v = (
        p.eye_y - p.brow_gap - p.brow_arch * _BROW_ARCH + p.brow_slant * (1 - f) - 0.018 * brow_raise * (0.6 + 0.4 * f)
    )
    pts[:, 17:22, 0] = -brow_u
    pts[:, 17:22, 1] = brow_v
    pts[:, 22:27, 0] = brow_u[::-1]
    pts[:, 22:27, 1] = brow_v[:, ::-1]

    # Nose: bridge 27-30 down to the tip, base 31-35.
    tip = p.eye_y + p.nose_len
    pts[:, 27:31, 0] = 0.0
    pts[:, 27:31, 1] = p.eye_y - 0.004 + (tip - p.eye_y + 0.004) * _THIRDS
    pts[:, 31:36, 0] = p.nose_w * _NOSE_BASE_U
    pts[:, 31:36, 1] = tip + p.nose_base * _NOSE_BASE_V

    # Eyes: 36-41 (image left: outer corner, 2 upper, inner corner, 2 lower), 42-47 mirrored.
    top = -0.5 * p.eye_h * (1 - blink)
    bottom = 0.42 * p.eye_h * (1 - 0.25 * squint)
    skew = p.lid_skew
    eye_fr = np.array([-0.5, -0.2 + 0.2 * skew, 0.17 + 0.2 * skew, 0.5, 0.15, -0.2])
    pts[:, 36:42, 0] = -p.eye_dx + p.eye_w * eye_fr
    pts[:, 36, 1] = p.eye_y - p.eye_tilt
    pts[:, 37:38, 1] = p.eye_y + top - 0.1 * p.eye_h * skew
    pts[:, 38:39, 1] = p.eye_y + top + 0.1 * p.eye_h * skew
    pts[:, 39, 1] = p.eye_y
    pts[:, 40:42, 1] = p.eye_y + bottom
    mirror = [39, 38, 37, 36, 41, 40]  # 42 <-> 39, 43 <-> 38, ..., 47 <-> 40
    pts[:, 42:48, 0] = -pts[:, mirror, 0]
    pts[:, 42:48, 1] = pts[:, mirror, 1]

    # Mouth: outer 48-59, inner 60-67; opening moves the lower lip with the jaw, a smile lifts and widens the corners.
    ul, ll = p.upper_lip, p.lower_lip
    outer_v = np.array(
        [0.0, -0.72 * ul, -ul, -(1 - p.cupid) * ul, -ul, -0.72 * ul, 0.0, 0.7 * ll, 0.95 * ll, ll, 0.95 * ll, 0.7 * ll]
    )
    widen = p.mouth_w * (1 + 0.12 * smile)
    pts[:, 48:60, 0] = _OUTER_U * widen
    pts[:, 48:60, 1] = p.mouth_y + outer_v + _OUTER_OPEN * open_h - 0.022 * _OUTER_LIFT * smile
    pts[:, 60:68, 0] = _INNER_U * widen
    pts[:, 60:68, 1] = p.mouth_y + 0.06 * ul + _INNER_OPEN * open_h - 0.022 * _INNER_LIFT * smile
    return pts


_JAW_COS, _JAW_SIN = np.cos(np.pi * np.arange(17) / 16), np.abs(np.sin(np.pi * np.arange(17) / 16))
_BROW_F = np.linspace(0.0, 1.0, 5)
_BROW_ARCH = np.sin(np.pi * (0.75 * _BROW_F + 0.1))
_THIRDS = np.linspace(0.0, 1.0, 4)
_NOSE_BASE_U = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
_NOSE_BASE_V = np.array([0.55, 0.9, 1.0, 0.9, 0.55])
_OUTER_U = np.array([-1.0, -0.6, -0.22, 0.0, 0.22, 0.6, 1.0, 0.6, 0.25, 0.0, -0.25, -0.6])
_OUTER_OPEN = np.array([0.3, -0.15, -0.15, -0.15, -0.15, -0.15, 0.3, 0.85, 0.85, 0.85, 0.85, 0.85])
_OUTER_LIFT = np.array([1.0, 0.45, 0.0, 0.0, 0.0, 0.45, 1.0, 0.45, 0.0, 0.0, 0.0, 0.45])
_INNER_U = np.array([-0.78, -0.3, 0.0, 0.3, 0.78, 0.3, 0.0, -0.3])
_INNER_OPEN = np.array([0.3, -0.15, -0.15, -0.15, 0.3, 0.85, 0.85, 0.85])
_INNER_LIFT = np.array([1.0, 0.4, 0.0, 0.4, 1.0, 0.4, 0.0, 0.4])


def _expression_basis(p: _Identity) -> np.ndarray:
    """``(6, 68, 2)``: neutral landmarks (with the identity's jitter) and the change per unit of mouth opening, smile,
    squint, brow raise and blink.
    """
    pts = _canonical_landmarks(p, np.concatenate([np.zeros((1, 5)), np.eye(5)]))
    pts[1:] -= pts[0]
    pts[0] += p.jitter
    return pts


def _similarity(n: _Nuisance, size: tuple[int, int]) -> tuple[float, float, float, float, float, float]:
    """Centre ``(cx, cy)``, scaled rotation ``(cos, sin)`` and shift ``(tx, ty)`` in pixels of the in-plane pose."""
    height, width = size
    return (
        (width - 1) / 2,
        0.6 * height - 0.5,
        math.cos(n.rotation) * n.scale,
        math.sin(n.rotation) * n.scale,
        float(n.shift[0]) * height,
        float(n.shift[1]) * height,
    )


def _pose_points(uv: np.ndarray, depth: np.ndarray | float, n: _Nuisance, size: tuple[int, int]) -> np.ndarray:
    """Canonical ``(u, v)`` -> pixel ``(x, y)``: yaw on a head cylinder, then a similarity about the face centre."""
    height, width = size
    r = _CYLINDER_RADIUS
    angle = np.arcsin(np.clip(uv[:, 0] / r, -0.999, 0.999))
    u = r * np.sin(angle + n.yaw) + np.asarray(depth) * math.sin(n.yaw)
    cx, cy, cos, sin, tx, ty = _similarity(n, size)
    dx = (width - 1) / 2 + height * u - cx
    dy = height * uv[:, 1] - 0.5 - cy
    return np.stack([cx + cos * dx - sin * dy + tx, cy + sin * dx + cos * dy + ty], 1)


def _tile_transform(n: _Nuisance, size: tuple[int, int]) -> tuple[float, ...]:
    """PIL ``AFFINE`` coefficients mapping output pixels to texture-tile cells (inverse pose, yaw linearised)."""
    height, width = size
    cx, cy, cos, sin, tx, ty = _similarity(n, size)
    det = cos * cos + sin * sin
    r = _CYLINDER_RADIUS
    cells = _TEXTURE_CELLS / _TEXTURE_SPAN

    def to_tile(x: float, y: float) -> tuple[float, float]:
        dx, dy = x - cx - tx, y - cy - ty
        xc = cx + (cos * dx + sin * dy) / det
        yc = cy + (-sin * dx + cos * dy) / det
        u = ((xc - (width - 1) / 2) / height - r * math.sin(n.yaw)) / math.cos(n.yaw)
        return (u + 0.5 * _TEXTURE_SPAN) * cells, ((yc + 0.5) / height - _TEXTURE_TOP) * cells

    # PIL samples the input at coefficients applied to the output pixel's centre (x + 0.5, y + 0.5).
    c0, f0 = to_tile(-0.5, -0.5)
    ax, dx_ = (v - w for v, w in zip(to_tile(0.5, -0.5), (c0, f0), strict=True))
    by, ey = (v - w for v, w in zip(to_tile(-0.5, 0.5), (c0, f0), strict=True))
    return (ax, by, c0, dx_, ey, f0)


@lru_cache(maxsize=16)
def _grid(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(ys, xs)``, each ``float32 (h, w)``."""
    ys, xs = np.mgrid[0 : size[0], 0 : size[1]].astype(np.float32)
    ys.flags.writeable = False
    xs.flags.writeable = False
    return ys, xs


@lru_cache(maxsize=16)
def _noise_bank(size: tuple[int, int]) -> np.ndarray:
    """Fixed standard-normal noise ``(2h, 2w, 3)``; images take a random crop of it (4x faster than fresh draws)."""
    bank = np.random.default_rng(_NOISE_SEED).standard_normal((2 * size[0], 2 * size[1], 3), dtype=np.float32)
    bank.flags.writeable = False
    return bank


def _flat(points: np.ndarray) -> list[float]:
    return points.ravel().tolist()


_ARC_THETA = np.linspace(0.0, np.pi, 17)
_ARC_COS, _ARC_SIN = np.cos(_ARC_THETA), np.sin(_ARC_THETA)
_STRAND_COS, _STRAND_SIN = np.cos(np.linspace(0.15, np.pi - 0.15, 9)), np.sin(np.linspace(0.15, np.pi - 0.15, 9))


def _hair_polygons(lm: np.ndarray, p: _Identity) -> tuple[np.ndarray, np.ndarray]:
    """Back hair (drawn behind the face) and hair front (over the forehead), from the posed landmarks."""
    origin, half_width, up = face_frame(lm)
    up = up * float(np.linalg.norm(half_width))
    a = _ARC_COS
    side = 1.0 + p.hair_side
    arc = origin + np.outer(side * a, half_width) + np.outer((_SKIN_FOREHEAD + p.hair_top) * _ARC_SIN, up)
    bottom = origin - p.hair_length * up
    back = np.concatenate(
        [
            [bottom + 0.7 * half_width, bottom + 0.98 * side * half_width],
            arc,
            [bottom - 0.98 * side * half_width, bottom - 0.7 * half_width],
        ]
    )
    dome_h = _SKIN_FOREHEAD * _ARC_SIN
    line = p.hairline + p.hair_tilt * a - p.hair_drop * a**2 - p.widow_peak * np.exp(-((a / 0.12) ** 2))
    line = np.clip(line, 0.0, dome_h)
    width = np.outer(a, half_width) + origin
    front = np.concatenate([width + np.outer(dome_h, up), (width + np.outer(line, up))[::-1]])
    return back, front


def _beard_polygon(lm: np.ndarray, kind: int) -> np.ndarray:
    if kind == 3:  # moustache: between the nose base and the upper lip
        upper = lm[31:36] + 0.3 * (lm[[49, 50, 51, 52, 53]] - lm[31:36])
        return np.concatenate([upper, lm[[54, 53, 52, 51, 50, 49, 48]]])
    cheek_r = lm[14] + 0.3 * (lm[30] - lm[14])
    cheek_l = lm[2] + 0.3 * (lm[30] - lm[2])
    return np.concatenate([lm[2:15], [cheek_r, lm[35], lm[33], lm[31], cheek_l]])


def _sample_nuisance(rng: np.random.Generator, pose: float, expression: float) -> _Nuisance:
    z = np.clip(rng.standard_normal(5), -2.5, 2.5)
    e = rng.random(8)
    return _Nuisance(
        rotation=math.radians(pose * 6.0 * z[0]),
        scale=math.exp(pose * 0.04 * z[1]),
        shift=pose * 0.018 * z[2:4],
        yaw=pose * 0.14 * float(np.clip(z[4], -2.2, 2.2)),
        mouth_open=expression * (0.15 + 0.85 * e[1] if e[0] < 0.3 else 0.0),
        smile=expression * (-0.3 + 1.3 * e[2]),
        brow_raise=expression * (-0.6 + 1.6 * e[3]),
        blink=min(0.7, expression * (0.3 + 0.4 * e[5] if e[4] < 0.12 else 0.0)),
        gaze=expression * (-0.1 + 0.2 * e[6:8]),
    )


def _draw_background(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: tuple[int, int], clutter: float
) -> None:
    """Plain grey at ``clutter = 0``; otherwise a random colour and a Poisson number of random shapes."""
    height, width = size
    grey = np.full(3, 128.0)
    base = grey + clutter * (rng.uniform(20, 235, 3) - grey)
    draw.rectangle([0, 0, width, height], fill=_rgb(base))
    if clutter <= 0:
        return
    count = int(rng.poisson(7.0 * clutter))
    shapes = rng.random((count, 15))
    colours = np.clip(grey + min(clutter, 1.0) * (255 * shapes[:, 0:3] - grey), 0, 255).astype(np.int64).tolist()
    scale = np.array([width, height])
    centres = (shapes[:, 3:5] * 1.2 - 0.1) * scale
    radii = (0.04 + 0.31 * shapes[:, 5:7]) * scale
    boxes = np.concatenate([centres - radii, centres + radii], axis=1).tolist()
    kinds = (shapes[:, 7] * 4).astype(np.int64).tolist()
    triangles = (centres[:, None, :] + (shapes[:, 8:14].reshape(-1, 3, 2) * 2 - 1) * radii[:, None, :] * 1.5).reshape(
        -1, 6
    )
    widths = np.maximum(1, ((0.01 + 0.03 * shapes[:, 14]) * width).astype(np.int64)).tolist()
    for kind, box, colour, triangle, line_width in zip(kinds, boxes, colours, triangles.tolist(), widths, strict=True):
        fill = tuple(colour)
        if kind == 0:
            draw.ellipse(box, fill=fill)
        elif kind == 1:
            draw.rectangle(box, fill=fill)
        elif kind == 2:
            draw.polygon(triangle, fill=fill)
        else:
            draw.line(box, fill=fill, width=line_width)


def _iris_sprite(p: _Identity, height: int) -> Image.Image:
    """The identity's iris (limbal ring, inner ring, crypts, pupil, highlight) as an RGBA sprite at 2x scale."""
    sprite = p.iris_sprites.get(height)
    if sprite is not None:
        return sprite
    ink = p.ink
    k = _SUPERSAMPLE * height / 112.0
    r = p.iris_size * p.eye_w * height * _SUPERSAMPLE
    side = int(math.ceil(2 * r)) + 2
    sprite = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    draw = ImageDraw.Draw(sprite)
    c = (side - 1) / 2

    def disc(radius: float, colour: tuple[int, ...], x: float = c, y: float = c) -> None:
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour)

    disc(r, (*ink["iris_dark"], 255))
    disc(r * (1 - p.limbus), (*ink["iris"], 255))
    disc(r * p.iris_inner_frac, (*ink["iris_inner"], 255))
    for angle, frac, size in p.crypts.tolist():
        disc(size * k * 0.5, (*ink["crypt"], 255), c + frac * r * math.cos(angle), c + frac * r * math.sin(angle))
    disc(r * 0.38, (12, 10, 10, 255))
    disc(max(0.6, 0.11 * r), (250, 250, 250, 255), c - 0.35 * r, c - 0.35 * r)
    p.iris_sprites[height] = sprite
    return sprite


def _draw_eye(
    image: Image.Image,
    draw: ImageDraw.ImageDraw,
    outline: np.ndarray,
    p: _Identity,
    n: _Nuisance,
    up: np.ndarray,
    k: float,
    height: int,
) -> None:
    """Sclera, the identity's iris sprite, skin bands over what leaves the lids, then crease, lids and lashes."""
    ink = p.ink
    draw.polygon(_flat(outline), fill=(232, 226, 220))
    corner_a, corner_b = outline[0], outline[6]  # the outline starts at a corner; the other corner is its 7th point
    eye_w = math.hypot(*(corner_b - corner_a).tolist())
    cx, cy = (0.5 * (corner_a + corner_b) + n.gaze * eye_w * np.array([1.0, 0.4])).tolist()
    sprite = _iris_sprite(p, height)
    half = (sprite.width - 1) / 2
    image.paste(sprite, (round(cx - half), round(cy - half)), sprite)
    upper = outline[:7]
    lower = np.concatenate([outline[6:], outline[:1]])
    band = up * (half + 1.0)
    skin = ink["skin"]
    draw.polygon(_flat(np.concatenate([upper, (upper + band)[::-1]])), fill=skin)
    draw.polygon(_flat(np.concatenate([lower, (lower - band)[::-1]])), fill=skin)
    draw.line(_flat(upper + up * 0.13 * eye_w), fill=ink["crease"], width=max(1, round(0.8 * k)))
    draw.line(_flat(lower), fill=ink["lower_lid"], width=1)
    draw.line(_flat(upper), fill=ink["lash"], width=max(1, round(1.4 * k)))


def _draw_nose(
    draw: ImageDraw.ImageDraw, blend: ImageDraw.ImageDraw, lm: np.ndarray, outline: np.ndarray, p: _Identity, k: float
) -> None:
    """Region shading, a bridge shadow, a tip highlight, alar creases and nostrils, all from points 27-35."""
    ink = p.ink
    blend.polygon(_flat(outline), fill=(60, 30, 20, 22))
    alar = lm[35] - lm[31]
    width = float(np.linalg.norm(alar))
    across = alar / max(width, 1e-6)
    down = np.array([-across[1], across[0]])
    blend.line(_flat(lm[27:31] - 0.22 * alar), fill=ink["bridge"], width=max(1, round(1.2 * k)))
    tr = 0.13 * width
    tip = lm[30]
    blend.ellipse([tip[0] - tr, tip[1] - tr, tip[0] + tr, tip[1] + tr], fill=ink["tip"])
    crease = ink["nose_crease"]
    stroke = max(1, round(0.9 * k))
    for sign, outer, inner in ((-1.0, lm[31], lm[32]), (1.0, lm[35], lm[34])):
        wing = np.stack([outer - 0.3 * width * down + 0.05 * sign * alar, outer + 0.08 * sign * alar, inner])
        draw.line(_flat(wing), fill=crease, width=stroke)
        centre = 0.5 * (outer + inner) - 0.07 * width * down
        rx, ry = 0.12 * width, 0.06 * width
        draw.ellipse([centre[0] - rx, centre[1] - ry, centre[0] + rx, centre[1] + ry], fill=ink["nostril"])


def _render(
    p: _Identity,
    rng: np.random.Generator,
    size: tuple[int, int],
    pose: float,
    illumination: float,
    expression: float,
    clutter: float,
    noise: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    height, width = size
    ink = p.ink
    n = _sample_nuisance(rng, pose, expression)
    expression_weights = np.array([1.0, n.mouth_open, n.smile, max(n.smile, 0.0), n.brow_raise, n.blink])
    canonical = np.tensordot(expression_weights, p.basis, 1)
    lm = _pose_points(canonical, _DEPTH, n, size)
    # Keep the landmarks inside the image (pixel centres 0..W-1, 0..H-1): shrink a face that is too large for the
    # frame (narrow crops such as 112x96 with a strong yaw), then cancel part of the pose shift.
    limit = np.array([width - 1.0, height - 1.0])
    low, high = lm.min(0), lm.max(0)
    if np.any(high - low > limit):
        n.scale *= 0.999 * float(np.min(limit / (high - low)))
        lm = _pose_points(canonical, _DEPTH, n, size)
        low, high = lm.min(0), lm.max(0)
    fix = np.where(low < 0, -low, 0.0) + np.where(high > limit, limit - high, 0.0)
    if np.any(fix != 0):
        n.shift = n.shift + fix / height
        lm = np.clip(_pose_points(canonical, _DEPTH, n, size), 0.0, limit)

    parts = face_part_polygons(lm, forehead_height=_SKIN_FOREHEAD, brow_thickness=p.brow_thickness)
    back, front = _hair_polygons(lm, p)
    origin, half_width, up = face_frame(lm)
    across = lm[12] - lm[4]
    neck = np.stack([lm[4] + 0.25 * across, lm[12] - 0.25 * across, lm[12] - 2 * height * up, lm[4] - 2 * height * up])

    # Everything is drawn at 2x and box-reduced; the 1x pixel centre x sits at 2x + 0.5 at 2x.
    ss = _SUPERSAMPLE
    k = ss * height / 112.0  # stroke scale
    shift = 0.5 * (ss - 1)
    poly = {label: pts * ss + shift for label, pts in parts}
    lm2 = lm * ss + shift
    up_ss = up * ss
    image = Image.new("RGB", (width * ss, height * ss))
    draw = ImageDraw.Draw(image)
    blend = ImageDraw.Draw(image, "RGBA")  # alpha fills only: blending is ~10x slower than opaque fills
    _draw_background(draw, rng, (height * ss, width * ss), clutter)

    draw.polygon(_flat(back * ss + shift), fill=ink["hair"])
    t = p.strand_offsets
    strands = (
        origin
        + (_STRAND_COS * (1 + t * p.hair_side)[:, None])[..., None] * half_width
        + (_STRAND_SIN * (_SKIN_FOREHEAD + t * p.hair_top)[:, None])[..., None] * up * np.linalg.norm(half_width)
    ) * ss + shift
    for strand, shade in zip(strands, p.strand_inks, strict=True):
        draw.line(_flat(strand), fill=shade, width=max(1, round(0.8 * k)))
    draw.polygon(_flat(neck * ss + shift), fill=ink["neck"])
    draw.polygon(_flat(poly[SKIN]), fill=ink["skin"])

    for label in (RIGHT_EYE, LEFT_EYE):
        _draw_eye(image, draw, poly[label], p, n, up_ss, k, height)
    draw.polygon(_flat(front * ss + shift), fill=ink["hair"])
    if p.beard:
        blend.polygon(_flat(_beard_polygon(lm2, p.beard)), fill=ink["beard"])
    _draw_nose(draw, blend, lm2, poly[NOSE], p, k)
    brow = ink["brow"]
    for label in (RIGHT_BROW, LEFT_BROW):
        draw.polygon(_flat(poly[label]), fill=brow)

    # Mouth: inner mouth (teeth when open), lips, lip line, a highlight on the lower lip.
    draw.polygon(_flat(poly[INNER_MOUTH]), fill=(70, 22, 28))
    if n.mouth_open > 0.25:
        upper_in = lm2[60:65]
        lower_in = lm2[[60, 67, 66, 65, 64]]
        draw.polygon(
            _flat(np.concatenate([upper_in, (upper_in + 0.35 * (lower_in - upper_in))[::-1]])), fill=(228, 222, 206)
        )
    draw.polygon(_flat(poly[UPPER_LIP]), fill=ink["upper_lip"])
    draw.polygon(_flat(poly[LOWER_LIP]), fill=ink["lower_lip"])
    inner = poly[INNER_MOUTH]
    draw.line(_flat(np.concatenate([inner, inner[:1]])), fill=ink["lip_line"], width=max(1, round(0.8 * k)))
    hx, hy = 0.5 * (lm2[57] + lm2[66])
    blend.ellipse([hx - 0.36 * k, hy - 0.18 * k, hx + 0.36 * k, hy + 0.18 * k], fill=ink["lip_highlight"])

    image = image.reduce(ss)
    parsing = rasterise_polygons([(HAIR, back), (0, neck), parts[0], (HAIR, front), *parts[1:]], size)

    # Fine skin texture (fixed on the face surface) on the skin, a soft radial shading on the face.
    tile = np.asarray(
        p.tile.transform(
            (width, height),
            Image.Transform.AFFINE,
            _tile_transform(n, size),
            Image.Resampling.NEAREST,
            fillcolor=(128, int(_GAIN_ONE)),
        )
    )
    img = np.array(image, dtype=np.float32)
    skin = (parsing == SKIN) | (parsing == NOSE)
    face = (parsing > 0) & (parsing < HAIR)
    gain = np.where(face, tile[..., 1] * np.float32(1 / _GAIN_ONE), np.float32(1.0))
    offset = np.where(skin, (tile[..., 0] - np.float32(128.0)) * np.float32(p.texture_amp), np.float32(0.0))

    # Illumination: directional gradient, colour cast, contrast, brightness (folded into one gain and offset).
    channel_gain = np.ones(3, dtype=np.float32)
    channel_offset = np.float32(0.0)
    if illumination > 0:
        angle = rng.uniform(0, 2 * np.pi)
        strength = illumination * rng.uniform(0.0, 0.4) / (height / 2)
        ys, xs = _grid(size)
        field = (strength * math.cos(angle)) * (xs - width / 2) + (strength * math.sin(angle)) * (ys - height / 2) + 1.0
        cast = np.exp(illumination * rng.normal(0, 0.05, 3))
        z = np.clip(rng.standard_normal(2), -2.5, 2.5)
        contrast = math.exp(illumination * 0.15 * z[0])
        bright = math.exp(illumination * 0.18 * z[1])
        gain *= field
        offset *= field
        lit_mean = (img.reshape(-1, 3).T @ gain.ravel() + offset.sum()) / gain.size  # per channel, before the cast
        mean = float((lit_mean * cast).mean())
        channel_gain = (cast * contrast * bright).astype(np.float32)
        channel_offset = np.float32(mean * bright * (1 - contrast))
    img *= gain[..., None]
    img += offset[..., None]
    img *= channel_gain
    img += channel_offset + np.float32(0.5)
    if noise > 0:
        sigma = noise * rng.uniform(1.5, 7.0) * (1.0 if rng.random() < 0.5 else -1.0)
        top, left = rng.integers(height), rng.integers(width)
        img += _noise_bank(size)[top : top + height, left : left + width] * np.float32(sigma)
    out = np.clip(img, 0, 255, out=img).astype(np.uint8)
    return out, lm.astype(np.float32), parsing


class SyntheticFaces(Dataset):
    """Procedurally rendered faces with exact 68 landmarks and an 11-class parsing map; no files needed.

    Item ``i`` shows identity ``identity_offset + i // images_per_identity`` (label ``i // images_per_identity``) in
    its ``i % images_per_identity``-th image. Every image is a deterministic function of ``(seed, identity, index)``,
    bit-identical in any process or worker.

    Args:
        num_identities: number of identities (classes).
        images_per_identity: images rendered per identity.
        image_size: ``(h, w)`` or an int for square images; the face scales with ``h`` (112x112 is ArcFace-aligned,
            112x96 the SphereFace crop).
        seed: world seed; identities and their images differ between seeds.
        identity_offset: first identity; use disjoint ranges for training and evaluation.
        pose: strength of in-plane rotation, shift, scale and yaw (0 = frontal, centred).
        illumination: strength of the light gradient, brightness, contrast and colour cast (0 = none).
        expression: strength of mouth opening, smile, brow raise, blinks and gaze (0 = neutral).
        clutter: strength of background clutter (0 = plain grey background).
        noise: strength of Gaussian sensor noise (1 = sigma drawn from 1.5-7 grey levels; 0 = none).
        return_priors: also return ``"landmarks"`` and ``"parsing"``.
        diversity: between-identity spread of the global appearance that survives at 7 px (skin tone, hair colour,
            hair style, beard), from 0 (everyone shares the typical one) to 1; it sets how much identity is left at
            very low resolution. Face geometry and fine detail are not affected. The default is calibrated
            (:data:`DEFAULT_DIVERSITY`).
        cache: keep every rendered item in memory (per process: each DataLoader worker holds its own) and serve
            later epochs from it; about 50 KB per 112x112 item with priors. Items are deterministic, so a cached item
            equals a re-rendered one bit for bit.

    Raises:
        ValueError: on a non-positive count or size, a negative seed, offset or knob, or a diversity outside [0, 1].
    """

    def __init__(
        self,
        num_identities: int = 100,
        images_per_identity: int = 20,
        image_size: int | tuple[int, int] = 112,
        seed: int = 0,
        identity_offset: int = 0,
        pose: float = 1.0,
        illumination: float = 1.0,
        expression: float = 1.0,
        clutter: float = 1.0,
        noise: float = 1.0,
        return_priors: bool = True,
        diversity: float = DEFAULT_DIVERSITY,
        cache: bool = False,
    ) -> None:
        if num_identities < 1 or images_per_identity < 1:
            raise ValueError(
                f"num_identities and images_per_identity must be >= 1, got {num_identities} and {images_per_identity}"
            )
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(size) != 2 or any(int(s) != s or s < 8 for s in size):
            raise ValueError(f"image_size must be an int or (h, w) with sides >= 8, got {image_size!r}")
        if seed < 0 or identity_offset < 0:
            raise ValueError(f"seed and identity_offset must be >= 0, got {seed} and {identity_offset}")
        knobs = {
            "pose": pose,
            "illumination": illumination,
            "expression": expression,
            "clutter": clutter,
            "noise": noise,
        }
        for name, value in knobs.items():
            if value < 0:
                raise ValueError(f"{name} must be >= 0 (0 = no {name} nuisance), got {value}")
        if not 0 <= diversity <= 1:
            raise ValueError(f"diversity must be in [0, 1] (1 = full spread of skin, hair and beard), got {diversity}")
        self.num_identities = int(num_identities)
        self.images_per_identity = int(images_per_identity)
        self.image_size: tuple[int, int] = (int(size[0]), int(size[1]))
        self.seed = int(seed)
        self.identity_offset = int(identity_offset)
        self.pose = float(pose)
        self.illumination = float(illumination)
        self.expression = float(expression)
        self.clutter = float(clutter)
        self.noise = float(noise)
        self.return_priors = return_priors
        self.diversity = float(diversity)
        self.cache = cache
        self._cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    @property
    def num_classes(self) -> int:
        """Number of identities (labels are ``0 .. num_classes - 1``)."""
        return self.num_identities

    def __len__(self) -> int:
        return self.num_identities * self.images_per_identity

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for SyntheticFaces of length {len(self)}")
        label, index = divmod(int(i) % len(self), self.images_per_identity)
        return self.render(self.identity_offset + label, index)

    def render(self, identity: int, index: int) -> dict[str, Any]:
        """Render image ``index`` of ``identity`` (any identity ``>= 0``, not only this data set's range).

        Args:
            identity: global identity number (``identity_offset + label`` for this data set's items).
            index: image number within the identity (any ``>= 0``).

        Returns:
            ``{"image": uint8 (3, H, W), "label": identity - identity_offset, ["landmarks": float32 (68, 2) (x, y),
            "parsing": int64 (H, W)]}``.

        Raises:
            ValueError: if ``identity`` or ``index`` is negative.
        """
        if identity < 0 or index < 0:
            raise ValueError(f"identity and index must be >= 0, got {identity} and {index}")
        key = (int(identity), int(index))
        cached = self._cache.get(key)
        if cached is None:
            rng = np.random.default_rng([self.seed, key[0], key[1], _IMAGE_TAG])
            image, landmarks, parsing = _render(
                _identity(self.seed, key[0], self.diversity),
                rng,
                self.image_size,
                self.pose,
                self.illumination,
                self.expression,
                self.clutter,
                self.noise,
            )
            cached = (np.ascontiguousarray(image.transpose(2, 0, 1)), landmarks, parsing.astype(np.uint8))
            if self.cache:
                self._cache[key] = cached
        image, landmarks, parsing = cached
        out: dict[str, Any] = {
            "image": torch.from_numpy(image.copy() if self.cache else image),
            "label": key[0] - self.identity_offset,
        }
        if self.return_priors:
            out["landmarks"] = torch.from_numpy(landmarks.copy() if self.cache else landmarks)
            out["parsing"] = torch.from_numpy(parsing.astype(np.int64))
        return out


def synthetic_pair_set(
    name: str = "synthetic",
    num_identities: int = 50,
    images_per_identity: int = 4,
    num_pairs: int = 600,
    image_size: int | tuple[int, int] = 112,
    seed: int = 1,
    identity_offset: int = 100000,
    **nuisance: float,
) -> PairSet:
    """An LFW-style verification pair set of synthetic faces, identities disjoint from training by default.

    Identities are split into 10 groups, one per fold; fold ``f`` holds ``num_pairs / 20`` positive pairs followed by
    as many negative pairs, both drawn within group ``f`` (as LFW's 10 sets of 300 + 300), so the 10 contiguous folds
    each hold both classes and, with at least 10 identities, share no identity.

    Args:
        name: pair set name used in metric keys.
        num_identities: identities rendered (``>= 2``).
        images_per_identity: images per identity (``>= 2``).
        num_pairs: total pairs, half positive; a multiple of 20 keeps every fold exactly balanced.
        image_size: as for :class:`SyntheticFaces`.
        seed: world seed of the rendered identities and of the pair sampling.
        identity_offset: first identity (the default keeps clear of training sets of up to 100000 identities).
        **nuisance: ``pose``, ``illumination``, ``expression``, ``clutter``, ``noise`` and ``diversity`` knobs of
            :class:`SyntheticFaces` (use the training set's ``diversity``).

    Returns:
        A :class:`~crossres.data.pairs.PairSet` whose images are rendered once and stored as ``uint8`` tensors.

    Raises:
        ValueError: on fewer than 2 identities, 2 images per identity or 20 pairs, or an unknown nuisance knob.
    """
    allowed = {"pose", "illumination", "expression", "clutter", "noise", "diversity"}
    unknown = set(nuisance) - allowed
    if unknown:
        raise ValueError(f"unknown nuisance knob(s) {sorted(unknown)}; expected some of {sorted(allowed)}")
    if num_identities < 2 or images_per_identity < 2:
        raise ValueError(
            f"need num_identities >= 2 and images_per_identity >= 2 for positive and negative pairs, "
            f"got {num_identities} and {images_per_identity}"
        )
    if num_pairs < 20:
        raise ValueError(f"num_pairs must be >= 20 (10 folds with both classes), got {num_pairs}")
    data = SyntheticFaces(
        num_identities,
        images_per_identity,
        image_size,
        seed,
        identity_offset,
        return_priors=False,
        cache=False,
        **nuisance,
    )
    images = [data[i]["image"] for i in range(len(data))]
    rng = np.random.default_rng([seed, identity_offset, num_identities, _PAIRS_TAG])
    groups = np.array_split(rng.permutation(num_identities), min(10, num_identities))
    folds = 10
    positives_per_fold = [len(c) for c in np.array_split(np.arange(num_pairs // 2), folds)]
    negatives_per_fold = [len(c) for c in np.array_split(np.arange(num_pairs - num_pairs // 2), folds)]
    m = images_per_identity
    pairs: list[tuple[int, int]] = []
    issame: list[bool] = []
    repeated = False
    for fold in range(folds):
        group = groups[fold % len(groups)]
        candidates = [(g * m + a, g * m + b) for g in group for a in range(m) for b in range(a + 1, m)]
        order = rng.permutation(len(candidates))
        repeated = repeated or positives_per_fold[fold] > len(candidates)
        for j in range(positives_per_fold[fold]):
            pairs.append(candidates[order[j % len(candidates)]])
            issame.append(True)
        for _ in range(negatives_per_fold[fold]):
            ga = int(rng.choice(group))
            others = group[group != ga] if len(group) > 1 else np.delete(np.arange(num_identities), ga)
            gb = int(rng.choice(others))
            pairs.append((ga * m + int(rng.integers(m)), gb * m + int(rng.integers(m))))
            issame.append(False)
    if repeated:
        warnings.warn(
            f"synthetic pair set {name!r}: {num_pairs} pairs from {num_identities} identities x {images_per_identity} "
            "images repeat positive pairs (each fold draws them within its tenth of the identities), so the accuracy "
            "is no more precise than with fewer pairs; raise the identities (data.synthetic.pair_identities: 6 "
            "distinct positive pairs per identity at 4 images)",
            stacklevel=2,
        )
    return PairSet(name=name, images=images, pairs=torch.tensor(pairs), issame=torch.tensor(issame))
