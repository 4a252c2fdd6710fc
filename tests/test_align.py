from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from kornia.geometry.transform import warp_affine
from torchvision.io import decode_image, encode_jpeg, encode_png

from crossres.data.align import (
    ARCFACE_TEMPLATE_112,
    ARCFACE_TEMPLATE_112x96,
    align_faces,
    align_folder,
    arcface_template,
    estimate_similarity,
)


def similarity(angle: float, scale: float, tx: float, ty: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]], dtype=torch.float64)


def apply(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    return points @ matrix[:, :2].T + matrix[:, 2]


def naive_umeyama(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Reference: the 2-D similarity as complex least squares, dst = a * src + b with a, b complex."""
    z, w = torch.complex(src[:, 0], src[:, 1]), torch.complex(dst[:, 0], dst[:, 1])
    zc, wc = z - z.mean(), w - w.mean()
    a = (zc.conj() * wc).sum() / (zc.conj() * zc).sum()
    b = w.mean() - a * z.mean()
    return torch.tensor([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]], dtype=torch.float64)


def smooth_face(size: tuple[int, int] = (112, 112)) -> torch.Tensor:
    h, w = size
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    image = torch.stack([xx, yy, 0.5 + 0.4 * torch.sin(6 * xx) * torch.cos(5 * yy)])
    return (image * 255).round().to(torch.uint8)


def test_templates():
    assert ARCFACE_TEMPLATE_112.shape == (5, 2)
    assert ARCFACE_TEMPLATE_112[0].tolist() == [38.2946, 51.6963]
    assert torch.allclose(ARCFACE_TEMPLATE_112x96[:, 0], ARCFACE_TEMPLATE_112[:, 0] - 8)
    assert torch.equal(arcface_template((112, 96)), ARCFACE_TEMPLATE_112x96)
    assert torch.allclose(arcface_template((224, 224)), 2 * ARCFACE_TEMPLATE_112)


def test_identity_on_template():
    matrix = estimate_similarity(ARCFACE_TEMPLATE_112, ARCFACE_TEMPLATE_112)
    assert matrix.shape == (2, 3)
    assert torch.allclose(matrix, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=torch.float64), atol=1e-10)
    image = smooth_face()
    assert torch.equal(align_faces(image, ARCFACE_TEMPLATE_112.float()), image)


def test_recovers_known_similarity_batched():
    truths = torch.stack([similarity(0.3, 1.7, 20.0, -5.0), similarity(-1.2, 0.4, 3.0, 80.0)])
    src = ARCFACE_TEMPLATE_112.expand(2, 5, 2)
    dst = torch.stack([apply(m, ARCFACE_TEMPLATE_112) for m in truths])
    estimated = estimate_similarity(src.float(), dst.float())
    assert estimated.shape == (2, 2, 3) and estimated.dtype == torch.float32
    assert torch.allclose(estimated.double(), truths, atol=1e-4)
    # noisy points: agrees with the closed-form complex least-squares reference
    g = torch.Generator().manual_seed(0)
    noisy = dst + torch.randn(dst.shape, generator=g, dtype=torch.float64)
    estimated = estimate_similarity(src, noisy)
    for b in range(2):
        assert torch.allclose(estimated[b], naive_umeyama(src[b], noisy[b]), atol=1e-9)


def test_weighted_fit_equals_the_fit_of_repeated_points():
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(5, 2, generator=g, dtype=torch.float64)
    dst = apply(similarity(0.2, 1.3, 4.0, 9.0), ARCFACE_TEMPLATE_112) + noise
    counts = [4, 4, 1, 1, 1]
    # A point of integer weight k fits as k copies of it (the naive reference has no weights).
    repeated = torch.repeat_interleave(torch.arange(5), torch.tensor(counts))
    reference = naive_umeyama(ARCFACE_TEMPLATE_112[repeated], dst[repeated])
    assert torch.allclose(estimate_similarity(ARCFACE_TEMPLATE_112, dst, counts), reference, atol=1e-9)
    equal = estimate_similarity(ARCFACE_TEMPLATE_112, dst, [1.0] * 5)
    assert torch.allclose(equal, naive_umeyama(ARCFACE_TEMPLATE_112, dst))

    # weights move the eyes nearer their targets
    def eye_error(weights):
        m = estimate_similarity(ARCFACE_TEMPLATE_112, dst, weights)
        return (apply(m, ARCFACE_TEMPLATE_112)[:2] - dst[:2]).norm(dim=1).sum()

    assert eye_error(counts) < eye_error(None)
    for bad in ([1, 1, 1, 1], [1, 1, 1, 1, -1], [0, 0, 0, 0, 0], [1, 1, float("nan"), 1, 1]):
        with pytest.raises(ValueError, match="point weights"):
            estimate_similarity(ARCFACE_TEMPLATE_112, dst, bad)


def test_no_reflection_and_degenerate():
    mirrored = ARCFACE_TEMPLATE_112 * torch.tensor([-1.0, 1.0], dtype=torch.float64)
    linear = estimate_similarity(ARCFACE_TEMPLATE_112, mirrored)[:, :2]
    assert torch.linalg.det(linear) > 0  # a rotation, never a reflection
    with pytest.raises(ValueError, match="coincide"):
        estimate_similarity(torch.ones(5, 2), ARCFACE_TEMPLATE_112)


def test_align_undoes_known_warp():
    face = smooth_face()
    forward = similarity(0.25, 1.6, 60.0, 10.0)  # template frame -> inside a 260 x 250 photo
    photo = warp_affine(face[None].float(), forward[None].float(), dsize=(260, 250), align_corners=True)
    landmarks = apply(forward, ARCFACE_TEMPLATE_112)
    aligned = align_faces(photo.round().to(torch.uint8), landmarks.float())
    assert aligned.shape == (1, 3, 112, 112) and aligned.dtype == torch.uint8
    error = (aligned[0].float() - face.float()).abs()[:, 4:-4, 4:-4]
    assert float(error.mean()) < 0.5 and float(error.max()) <= 2  # two bilinear resamplings of a smooth image
    # float input keeps float; single image of another size
    single = align_faces(photo[0] / 255, landmarks, output_size=(112, 96))
    assert single.shape == (3, 112, 96) and single.dtype == torch.float32


def test_align_folder(tmp_path):
    src = tmp_path / "src"
    (src / "alice").mkdir(parents=True)
    (src / "bob").mkdir()
    face = smooth_face()
    forward = similarity(-0.2, 1.3, 30.0, 25.0)
    photo = warp_affine(face[None].float(), forward[None].float(), dsize=(230, 230), align_corners=True)
    photo = photo[0].round().to(torch.uint8)
    (src / "alice" / "a.png").write_bytes(encode_png(photo).numpy().tobytes())
    (src / "bob" / "b.jpg").write_bytes(encode_jpeg(photo, quality=95).numpy().tobytes())
    (src / "bob" / "nolm.jpg").write_bytes(encode_jpeg(photo).numpy().tobytes())
    points = apply(forward, ARCFACE_TEMPLATE_112).tolist()
    landmarks = {"alice/a.png": points, "bob/b.jpg": points, "bob/gone.jpg": points}
    (tmp_path / "lm.json").write_text(json.dumps(landmarks))
    counts = align_folder(src, tmp_path / "dst", tmp_path / "lm.json")
    assert counts == {"aligned": 2, "missing_landmarks": 1, "missing_images": 1, "skipped": 0}
    aligned = decode_image(str(tmp_path / "dst" / "alice" / "a.png"))
    assert aligned.shape == (3, 112, 112)
    assert float((aligned.float() - face.float()).abs()[:, 4:-4, 4:-4].mean()) < 1.5
    assert (tmp_path / "dst" / "bob" / "b.jpg").is_file()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        align_folder(src, tmp_path / "dst", tmp_path / "lm.json")
    # CSV landmarks with a header line, overwriting
    rows = ["path,x1,y1,x2,y2,x3,y3,x4,y4,x5,y5", "alice/a.png," + ",".join(str(v) for p in points for v in p)]
    (tmp_path / "lm.csv").write_text("\n".join(rows) + "\n")
    counts = align_folder(src, tmp_path / "dst", tmp_path / "lm.csv", overwrite=True)
    assert counts == {"aligned": 1, "missing_landmarks": 2, "missing_images": 0, "skipped": 0}
    (tmp_path / "bad.csv").write_text("alice/a.png,1,2,3\n")
    with pytest.raises(ValueError, match=r"bad\.csv:1: expected 10 coordinates"):
        align_folder(src, tmp_path / "dst2", tmp_path / "bad.csv")
    (tmp_path / "escape.json").write_text(json.dumps({"../outside.jpg": points}))
    with pytest.raises(ValueError, match="outside the source folder"):
        align_folder(src, tmp_path / "dst3", tmp_path / "escape.json")


def test_landmarks_path_type(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="landmarks file"):
        align_folder(tmp_path, tmp_path / "out", tmp_path / "none.json")
