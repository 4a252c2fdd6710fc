import math

import numpy as np
import pytest
import torch

from crossres.data.priors import (
    NUM_LANDMARKS,
    PARSING_CLASSES,
    face_part_polygons,
    landmarks_to_heatmaps,
    landmarks_to_parsing,
)

CLASS = {name: i for i, name in enumerate(PARSING_CLASSES)}


def template(size: int = 112, mouth_open: float = 0.03) -> np.ndarray:
    """A hand-built frontal 68-point iBUG face laid out like an ArcFace 112x112 crop, mouth slightly open."""
    pts = np.zeros((NUM_LANDMARKS, 2))
    phi = np.linspace(0, np.pi, 17)
    pts[0:17] = np.stack([0.5 - 0.38 * np.cos(phi), 0.46 + 0.47 * np.sin(phi) ** 1.3], 1)  # jaw
    brow_x = np.linspace(0.23, 0.44, 5)
    brow_y = 0.38 - 0.015 * np.sin(np.linspace(0.2, 2.6, 5))
    pts[17:22] = np.stack([brow_x, brow_y], 1)
    pts[22:27] = np.stack([1 - brow_x[::-1], brow_y[::-1]], 1)
    pts[27:31] = np.stack([np.full(4, 0.5), np.linspace(0.46, 0.63, 4)], 1)  # nose bridge
    pts[31:36] = np.stack([0.5 + np.array([-0.06, -0.03, 0, 0.03, 0.06]), [0.655, 0.665, 0.67, 0.665, 0.655]], 1)
    eye = np.array([[-0.06, 0], [-0.02, -0.021], [0.02, -0.021], [0.06, 0], [0.02, 0.018], [-0.02, 0.018]])
    pts[36:42] = eye + [0.34, 0.46]
    pts[42:48] = pts[[39, 38, 37, 36, 41, 40]] * [-1, 1] + [1, 0]  # mirror 36-41 onto 42-47
    outer = [[-0.13, 0], [-0.08, -0.024], [-0.03, -0.03], [0, -0.025], [0.03, -0.03], [0.08, -0.024], [0.13, 0]]
    outer += [[0.08, 0.028], [0.03, 0.037], [0, 0.038], [-0.03, 0.037], [-0.08, 0.028]]
    pts[48:60] = np.array(outer) + [0.5, 0.82]
    inner = [[-0.1, 0], [-0.03, -0.004], [0, -0.004], [0.03, -0.004], [0.1, 0]]
    inner += [[0.03, mouth_open], [0, mouth_open], [-0.03, mouth_open]]
    pts[60:68] = np.array(inner) + [0.5, 0.82]
    return pts * size - 0.5  # fractions of the image -> pixel (x, y), centres at integers


def naive_heatmap(x: float, y: float, height: int, width: int, sigma: float) -> np.ndarray:
    out = np.zeros((height, width))
    for i in range(height):
        for j in range(width):
            out[i, j] = math.exp(-((j - x) ** 2 + (i - y) ** 2) / (2 * sigma**2))
    return out


def test_heatmap_matches_naive_gaussian():
    landmarks = torch.tensor([[[3.0, 4.0], [10.3, 2.7], [-1.5, 8.2]]], dtype=torch.float64)
    heat = landmarks_to_heatmaps(landmarks, (12, 15), sigma=1.7)
    assert heat.shape == (1, 3, 12, 15) and heat.dtype == torch.float64
    for n, (x, y) in enumerate(landmarks[0].tolist()):
        np.testing.assert_allclose(heat[0, n].numpy(), naive_heatmap(x, y, 12, 15, 1.7), rtol=1e-12, atol=1e-15)


def test_heatmap_peak_is_one_at_integer_landmark():
    landmarks = torch.tensor([[20.0, 31.0], [0.0, 0.0], [55.0, 63.0]])
    heat = landmarks_to_heatmaps(landmarks, (64, 56), sigma=2.0)
    assert heat.shape == (3, 64, 56) and heat.dtype == torch.float32
    for n, (x, y) in enumerate(landmarks.long().tolist()):
        i, j = divmod(int(heat[n].argmax()), 56)
        assert (j, i) == (x, y)
        assert heat[n, y, x] == pytest.approx(1.0)
        # one sigma away along x: exp(-1/2)
        if x + 2 < 56:
            assert heat[n, y, x + 2] == pytest.approx(math.exp(-0.5), rel=1e-6)


def test_heatmap_batch_dims_and_errors():
    landmarks = torch.rand(2, 3, 5, 2) * 10
    heat = landmarks_to_heatmaps(landmarks, (8, 9))
    assert heat.shape == (2, 3, 5, 8, 9)
    torch.testing.assert_close(heat[1, 2], landmarks_to_heatmaps(landmarks[1, 2], (8, 9)))
    with pytest.raises(ValueError, match="landmarks"):
        landmarks_to_heatmaps(torch.zeros(5, 3), (8, 8))
    with pytest.raises(ValueError, match="sigma"):
        landmarks_to_heatmaps(torch.zeros(5, 2), (8, 8), sigma=0.0)
    with pytest.raises(ValueError, match="size"):
        landmarks_to_heatmaps(torch.zeros(5, 2), (8, 0))


def test_parsing_template_has_every_class_with_sensible_areas():
    parsing = landmarks_to_parsing(torch.tensor(template(), dtype=torch.float32), (112, 112))
    assert parsing.shape == (112, 112) and parsing.dtype == torch.int64
    area = torch.bincount(parsing.flatten(), minlength=len(PARSING_CLASSES)).float() / parsing.numel()
    assert (area > 0).all(), dict(zip(PARSING_CLASSES, area.tolist(), strict=True))
    assert area[CLASS["skin"]] > 0.25
    assert area[CLASS["hair"]] > 0.03
    assert area[CLASS["skin"]] > area[CLASS["nose"]] > area[CLASS["left_eye"]]
    for part in ("eye", "brow"):
        left, right = area[CLASS[f"left_{part}"]], area[CLASS[f"right_{part}"]]
        assert 0.002 < left < 0.03 and abs(left - right) / left < 0.15  # symmetric template
    # "left" is the subject's left: on the image's right.
    ys, xs = torch.meshgrid(torch.arange(112.0), torch.arange(112.0), indexing="ij")

    def centroid(name: str) -> tuple[float, float]:
        mask = parsing == CLASS[name]
        return float(xs[mask].mean()), float(ys[mask].mean())

    assert centroid("left_eye")[0] > 56 > centroid("right_eye")[0]
    assert centroid("left_brow")[0] > 56 > centroid("right_brow")[0]
    assert centroid("left_brow")[1] < centroid("left_eye")[1] < centroid("nose")[1] < centroid("upper_lip")[1]
    assert centroid("upper_lip")[1] < centroid("inner_mouth")[1] < centroid("lower_lip")[1]
    assert centroid("hair")[1] < centroid("right_brow")[1]


def test_parsing_landmarks_fall_in_their_parts():
    landmarks = template()
    parsing = landmarks_to_parsing(torch.tensor(landmarks), (112, 112)).numpy()

    def label(point: np.ndarray) -> int:
        x, y = np.round(point).astype(int)
        return int(parsing[y, x])

    assert label(landmarks[36:42].mean(0)) == CLASS["right_eye"]
    assert label(landmarks[42:48].mean(0)) == CLASS["left_eye"]
    assert label(landmarks[30]) == CLASS["nose"]
    assert label(landmarks[19]) == CLASS["right_brow"]
    assert label(landmarks[24]) == CLASS["left_brow"]
    assert label(landmarks[[62, 66]].mean(0)) == CLASS["inner_mouth"]
    assert label(landmarks[[51, 62]].mean(0)) == CLASS["upper_lip"]
    assert label(landmarks[[57, 66]].mean(0)) == CLASS["lower_lip"]


def test_parsing_batched_equals_per_sample_and_scales():
    rng = np.random.default_rng(0)
    batch = np.stack([template() + rng.normal(0, 1.0, (NUM_LANDMARKS, 2)) for _ in range(3)])
    batched = landmarks_to_parsing(torch.tensor(batch), (112, 96))
    assert batched.shape == (3, 112, 96)
    for b in range(3):
        torch.testing.assert_close(batched[b], landmarks_to_parsing(torch.tensor(batch[b]), (112, 96)))
    # twice the size: the large parts' areas scale by about 4 (small parts gain relatively more from the outlines)
    small = landmarks_to_parsing((torch.tensor(template()) + 0.5) / 2 - 0.5, (56, 56))
    large = landmarks_to_parsing(torch.tensor(template()), (112, 112))
    big = [CLASS["skin"], CLASS["hair"]]
    ratio = (
        torch.bincount(large.flatten(), minlength=11)[big].float() / torch.bincount(small.flatten(), minlength=11)[big]
    )
    assert ((ratio > 3.3) & (ratio < 4.7)).all(), ratio


def test_part_polygons_pass_through_landmarks():
    landmarks = template()
    parts = dict(face_part_polygons(landmarks))
    eye = parts[CLASS["right_eye"]]
    for k in range(36, 42):
        assert np.min(np.linalg.norm(eye - landmarks[k], axis=1)) < 1e-9
    jaw = parts[CLASS["skin"]]
    for k in range(17):
        assert np.min(np.linalg.norm(jaw - landmarks[k], axis=1)) < 1e-9
    # batched polygons equal per-sample ones
    batch = np.stack([landmarks, landmarks + 1.0])
    for (label_b, poly_b), (label_1, poly_1) in zip(
        face_part_polygons(batch), face_part_polygons(landmarks + 1.0), strict=True
    ):
        assert label_b == label_1
        np.testing.assert_allclose(poly_b[1], poly_1)


def test_parsing_errors():
    with pytest.raises(ValueError, match="68"):
        landmarks_to_parsing(torch.zeros(5, 2), (112, 112))
    with pytest.raises(ValueError, match="size"):
        landmarks_to_parsing(torch.tensor(template()), (112, -1))
