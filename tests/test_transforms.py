"""Tests of the degradation layer against PIL on a real photo and against naive per-sample references."""

from __future__ import annotations

import pickle

import matplotlib.cbook
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from crossres.transforms import (
    BatchDegradation,
    CameraDegradation,
    ResolutionSampler,
    degrade,
    downsample,
    occlude,
    occlusion_mask,
    resolve_size,
    to_float,
    to_uint8,
    upsample,
)

# --------------------------------------------------------------------------------------------------------------------
# Real faces: Grace Hopper's portrait ships with matplotlib.


def _photo() -> Image.Image:
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:  # type: ignore[attr-defined]
        return Image.open(handle).convert("RGB")


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return _photo()


def _face(photo: Image.Image, hr_size: tuple[int, int], left: int = 110, top: int = 40) -> Image.Image:
    """A face crop of (H, W) = hr_size, resized with PIL as an aligned 112 x 112 / 112 x 96 crop would be."""
    height = 360
    width = round(height * hr_size[1] / hr_size[0])
    return photo.crop((left, top, left + width, top + height)).resize((hr_size[1], hr_size[0]), Image.BICUBIC)


def _as_batch(image: Image.Image) -> torch.Tensor:
    return to_float(torch.from_numpy(np.array(image)).permute(2, 0, 1)[None])


def _pil_reference(image: Image.Image, lr_size: tuple[int, int], hr_size: tuple[int, int]) -> np.ndarray:
    """Eq. (1) of 004 with PIL: bicubic (antialiased) down to lr_size, bicubic back up, in uint8 as PIL does."""
    small = image.resize((lr_size[1], lr_size[0]), Image.BICUBIC)
    return np.asarray(small.resize((hr_size[1], hr_size[0]), Image.BICUBIC)).astype(np.float64)


def _mae_vs_pil(photo: Image.Image, hr_size: tuple[int, int], lr_size: tuple[int, int], backend: str) -> float:
    image = _face(photo, hr_size)
    ours = degrade(_as_batch(image), lr_size, backend=backend)  # type: ignore[arg-type]
    ours_np = ours[0].permute(1, 2, 0).double().numpy() * 255.0
    return float(np.abs(ours_np - _pil_reference(image, lr_size, hr_size)).mean())


PIL_CASES = [((112, 112), (r, r)) for r in (7, 8, 14, 16, 28, 56)] + [((112, 96), (16, 12))]


@pytest.mark.parametrize(("hr_size", "lr_size"), PIL_CASES)
def test_degrade_pil_backend_matches_pil(photo: Image.Image, hr_size, lr_size) -> None:
    mae = _mae_vs_pil(photo, hr_size, lr_size, "pil")
    assert mae < 1.0, f"MAE vs PIL {mae:.3f}/255 at {lr_size} on {hr_size}"


@pytest.mark.parametrize(("hr_size", "lr_size"), [PIL_CASES[2], PIL_CASES[-1]])
def test_other_backends_differ_more_from_pil(photo: Image.Image, hr_size, lr_size) -> None:
    pil = _mae_vs_pil(photo, hr_size, lr_size, "pil")
    kornia = _mae_vs_pil(photo, hr_size, lr_size, "kornia")
    no_antialias = _mae_vs_pil(photo, hr_size, lr_size, "no_antialias")
    # Measured at 14 px: pil 0.37, kornia 2.8, no_antialias 19 (/255).
    assert 2 * pil < 1.0 < kornia < no_antialias


@pytest.mark.parametrize(("hr_size", "lr_size"), PIL_CASES)
def test_degrade_uint8_is_pil_to_a_grey_level(photo: Image.Image, hr_size, lr_size) -> None:
    image = _face(photo, hr_size)
    batch = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]
    ours = degrade(batch, lr_size)
    assert ours.dtype == torch.uint8 and ours.shape == batch.shape
    diff = np.abs(ours[0].permute(1, 2, 0).double().numpy() - _pil_reference(image, lr_size, hr_size))
    # Measured: at most 2 grey levels off, mean 0.001-0.007 (float path: up to 0.4).
    assert diff.max() <= 2 and diff.mean() < 0.05, f"{lr_size} on {hr_size}: max {diff.max()}, mean {diff.mean():.4f}"


def test_degrade_uint8_per_sample_sizes_match_single_size_calls() -> None:
    images = torch.randint(0, 256, (5, 3, 112, 96), dtype=torch.uint8)
    sizes = torch.tensor([[16, 12], [112, 96], [7, 6], [16, 12], [28, 24]])
    out = degrade(images, sizes)
    assert out.dtype == torch.uint8
    for i, (h, w) in enumerate(sizes.tolist()):
        assert torch.equal(out[i : i + 1], degrade(images[i : i + 1], (h, w)))
    assert torch.equal(out[1], images[1])  # HR samples are copied bit for bit
    small = degrade(images, 14, out_size=(14, 12))
    assert small.dtype == torch.uint8 and small.shape == (5, 3, 14, 12)


def _mixed_uint8_batch() -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (24, 3, 112, 96), dtype=torch.uint8, generator=generator)
    sizes = torch.tensor([[7, 6], [14, 12], [28, 24], [56, 48], [112, 96]])[
        torch.randint(0, 5, (24,), generator=generator)
    ]
    return images, sizes


def test_degrade_uint8_channels_last_keeps_its_layout_and_values() -> None:
    images, sizes = _mixed_uint8_batch()
    # decoded HWC images stacked and viewed as NCHW: channels-last memory, no copy
    hwc = images.permute(0, 2, 3, 1).contiguous()
    decoded = hwc.permute(0, 3, 1, 2)
    out = degrade(decoded, sizes)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, degrade(images, sizes))
    for i, (h, w) in enumerate(sizes.tolist()):
        assert torch.equal(out[i : i + 1], degrade(images[i : i + 1], (h, w)))


def test_degrade_uint8_groups_in_parallel_equal_serial(monkeypatch: pytest.MonkeyPatch) -> None:
    images, sizes = _mixed_uint8_batch()
    parallel = degrade(images, sizes)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert torch.equal(parallel, degrade(images, sizes))


def test_degrade_uint8_groups_in_parallel_keep_the_callers_inference_mode() -> None:
    # grad and inference mode are thread-local; the pool threads must take the caller's
    images, sizes = _mixed_uint8_batch()
    expected = degrade(images, sizes)
    with torch.inference_mode():
        out = degrade(images.clone(), sizes)
        assert out.is_inference()
    assert torch.equal(out, expected)


def test_degrade_removes_detail_monotonically(photo: Image.Image) -> None:
    x = _as_batch(_face(photo, (112, 112)))
    errors = [float((degrade(x, r) - x).abs().mean()) for r in (7, 14, 28, 56, 112)]
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] == 0.0


# --------------------------------------------------------------------------------------------------------------------
# degrade: shapes, per-sample sizes, validation


def test_downsample_upsample_compose_to_degrade() -> None:
    x = torch.rand(3, 3, 112, 96)
    small = downsample(x, (16, 12))
    assert small.shape == (3, 3, 16, 12)
    assert downsample(x, 16).shape == (3, 3, 16, 14)  # int size keeps the aspect ratio: round(16 * 96 / 112)
    up = upsample(small, (112, 96))
    assert up.shape == x.shape
    torch.testing.assert_close(degrade(x, (16, 12)), up.clamp(0, 1), rtol=0, atol=0)
    torch.testing.assert_close(degrade(x, 16), degrade(x, (16, 14)), rtol=0, atol=0)
    assert degrade(x, (16, 12), out_size=(56, 48)).shape == (3, 3, 56, 48)


def test_degrade_is_bicubic_interpolate_and_clamped() -> None:
    x = torch.rand(2, 3, 112, 112, dtype=torch.float64)
    expected = F.interpolate(
        F.interpolate(x, size=(14, 14), mode="bicubic", antialias=True, align_corners=False),
        size=(112, 112),
        mode="bicubic",
        antialias=True,
        align_corners=False,
    ).clamp(0, 1)
    out = degrade(x, 14)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0


@pytest.mark.parametrize("backend", ["pil", "kornia", "no_antialias"])
def test_per_sample_sizes_equal_one_call_per_sample(backend: str) -> None:
    torch.manual_seed(0)
    x = torch.rand(9, 3, 112, 96)
    sizes = torch.tensor([[7, 6], [16, 12], [112, 96], [7, 6], [14, 12], [112, 96], [16, 12], [56, 48], [7, 6]])
    batched = degrade(x, sizes, backend=backend)  # type: ignore[arg-type]
    for i in range(len(x)):
        single = degrade(x[i : i + 1], tuple(sizes[i].tolist()), backend=backend)  # type: ignore[arg-type]
        torch.testing.assert_close(batched[i : i + 1], single, rtol=0, atol=1e-6)


def test_hr_sized_samples_are_bit_identical() -> None:
    x = torch.rand(6, 3, 112, 112) * 1.2 - 0.1  # even out-of-range values pass through untouched
    sizes = torch.tensor([[112, 112], [14, 14], [112, 112], [7, 7], [112, 112], [14, 14]])
    out = degrade(x, sizes)
    hr = sizes[:, 0] == 112
    assert torch.equal(out[hr], x[hr])
    assert not torch.equal(out[~hr], x[~hr])
    same = degrade(x, 112)
    assert torch.equal(same, x) and same.data_ptr() != x.data_ptr()


def test_degrade_groups_by_unique_size(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, ...]] = []
    interpolate = F.interpolate

    def counting(input, *args, **kwargs):  # noqa: A002
        calls.append(tuple(input.shape))
        return interpolate(input, *args, **kwargs)

    monkeypatch.setattr(F, "interpolate", counting)
    generator = torch.Generator().manual_seed(0)
    sizes = torch.tensor([7, 14, 28, 56, 112])[torch.randint(0, 5, (64,), generator=generator)]
    degrade(torch.rand(64, 3, 112, 112), sizes[:, None].repeat(1, 2))
    # one down and one up call per LR size, none for the HR group
    assert len(calls) == 2 * 4
    assert sum(shape[0] for shape in calls) == 2 * int((sizes != 112).sum())


def test_per_sample_sizes_on_other_device_and_dtype() -> None:
    x = torch.rand(4, 3, 112, 112)
    sizes = torch.tensor([[14, 14], [7, 7], [14, 14], [112, 112]], dtype=torch.int32)
    torch.testing.assert_close(degrade(x, sizes), degrade(x, sizes.long()), rtol=0, atol=0)
    torch.testing.assert_close(degrade(x, torch.tensor([14, 14])), degrade(x, 14), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("shape", "size"),
    [
        ((1, 3, 112, 112), 0),
        ((1, 3, 112, 112), 113),
        ((1, 3, 112, 112), (14, 0)),
        ((1, 3, 112, 96), (16, 97)),
        ((1, 3, 112, 96), (113, 96)),
        ((2, 3, 112, 112), torch.tensor([[14, 14], [0, 14]])),
        ((2, 3, 112, 112), torch.tensor([[14, 14], [14, 120]])),
    ],
)
def test_degrade_rejects_sizes_out_of_range(shape, size) -> None:
    with pytest.raises(ValueError, match=r"lr_size.*\[1, 11\d\]"):
        degrade(torch.rand(shape), size)


def test_degrade_rejects_bad_inputs() -> None:
    x = torch.rand(2, 3, 112, 112)
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        degrade(x, torch.tensor([[14, 14], [14, 14], [14, 14]]))
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        degrade(x, torch.tensor([[14.0, 14.0], [14.0, 14.0]]))
    with pytest.raises(ValueError, match="backend"):
        degrade(x, 14, backend="lanczos")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="to_float"):
        degrade(to_uint8(x), 14, backend="kornia")
    with pytest.raises(TypeError, match="float"):
        degrade(x.double().to(torch.int32), 14)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        degrade(x[0], 14)
    with pytest.raises(ValueError, match="out_size"):
        degrade(x, 14, out_size=(0, 112))


def test_resolve_size() -> None:
    assert resolve_size(14, (112, 112)) == (14, 14)
    assert resolve_size(16, (112, 96)) == (16, 14)
    assert resolve_size(1, (112, 8)) == (1, 1)
    assert resolve_size((16, 12), (112, 96)) == (16, 12)
    with pytest.raises(ValueError, match="sizes"):
        resolve_size(200, (112, 112), name="sizes")


def test_to_float_to_uint8_round_trip() -> None:
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    as_float = to_float(images)
    assert as_float.dtype == torch.float32 and float(as_float.max()) <= 1.0
    assert torch.equal(to_uint8(as_float), images)
    assert torch.equal(to_uint8(torch.tensor([-0.2, 0.5 / 255, 1.7 / 255, 1.3])), torch.tensor([0, 0, 2, 255]).byte())
    with pytest.raises(TypeError):
        to_float(images.long())
    with pytest.raises(TypeError):
        to_uint8(images)


# --------------------------------------------------------------------------------------------------------------------
# Occlusion (Guided-CNN, 000 §3.2)


def _is_one_rectangle(mask: torch.Tensor) -> bool:
    rows = mask.any(dim=1).nonzero().squeeze(1)
    cols = mask.any(dim=0).nonzero().squeeze(1)
    box = mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    return bool(box.all()) and int(box.numel()) == int(mask.sum())


@pytest.mark.parametrize("hr_size", [(112, 112), (112, 96), (64, 48)])
def test_block_occlusion_is_20_percent_contiguous_and_random(hr_size) -> None:
    images = torch.rand(32, 3, *hr_size)
    mask = occlusion_mask(images, "block", 0.2, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (32, 1, *hr_size) and mask.dtype == torch.bool
    fractions = mask.float().mean(dim=(1, 2, 3))
    assert torch.all((fractions - 0.2).abs() <= 0.01 * 0.2), fractions  # within 1 % of 20 % of the image
    assert all(_is_one_rectangle(m[0]) for m in mask)
    corners = {tuple(m[0].nonzero()[0].tolist()) for m in mask}
    assert len(corners) > 16  # positions are drawn per sample


def test_block_occlusion_large_area_fits() -> None:
    mask = occlusion_mask(torch.rand(4, 3, 112, 96), "block", 0.9)
    assert torch.all((mask.float().mean(dim=(1, 2, 3)) - 0.9).abs() < 0.01 * 0.9)
    assert occlusion_mask(torch.rand(2, 3, 112, 96), "block", 1.0).all()


def test_half_occlusions_are_exactly_50_percent() -> None:
    images = torch.rand(8, 3, 112, 96)
    upper = occlusion_mask(images, "upper")
    lower = occlusion_mask(images, "lower")
    assert torch.all(upper.float().mean(dim=(1, 2, 3)) == 0.5)
    assert upper[:, :, :56].all() and not upper[:, :, 56:].any()
    assert torch.equal(lower, ~upper)
    half = occlusion_mask(torch.rand(64, 3, 112, 96), "half", generator=torch.Generator().manual_seed(0))
    is_upper = half[:, 0, 0, 0]
    assert torch.all(half.float().mean(dim=(1, 2, 3)) == 0.5)
    assert 0 < int(is_upper.sum()) < 64


def test_occlude_zeroes_the_mask_and_leaves_the_input() -> None:
    images = torch.rand(4, 3, 112, 112) + 0.1
    before = images.clone()
    out = occlude(images, "block", 0.2, generator=torch.Generator().manual_seed(3))
    mask = occlusion_mask(images, "block", 0.2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(images, before)
    assert torch.all(out.masked_select(mask.expand_as(out)) == 0)
    assert torch.equal(out.masked_select(~mask.expand_as(out)), images.masked_select(~mask.expand_as(images)))
    with pytest.raises(ValueError, match="area"):
        occlude(images, "block", 0.0)
    with pytest.raises(ValueError, match="mode"):
        occlude(images, "left")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------------------------
# ResolutionSampler


def test_sampler_fixed() -> None:
    sizes = ResolutionSampler("fixed", [14]).sample(5)
    assert sizes.dtype == torch.long and sizes.shape == (5, 2)
    assert torch.equal(sizes, torch.tensor([[14, 14]] * 5))
    non_square = ResolutionSampler("fixed", [16], hr_size=(112, 96)).sample(2)
    assert torch.equal(non_square, torch.tensor([[16, 14]] * 2))


def test_sampler_choice_is_uniform_over_the_set() -> None:
    sampler = ResolutionSampler("choice", [7, 14, 28, 56, 112])
    sizes = sampler.sample(5000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sizes[:, 0], sizes[:, 1])
    values, counts = sizes[:, 0].unique(return_counts=True)
    assert values.tolist() == [7, 14, 28, 56, 112]
    assert torch.all((counts.float() / 5000 - 0.2).abs() < 0.03)


def test_sampler_choice_non_square_pairs() -> None:
    pairs = [(7, 6), (11, 8), (14, 12), (16, 12), (112, 96)]
    sampler = ResolutionSampler("choice", pairs, hr_size=(112, 96))
    sizes = sampler.sample(500, generator=torch.Generator().manual_seed(1))
    assert {tuple(row) for row in sizes.tolist()} == set(pairs)


def test_sampler_range_is_inclusive_integers() -> None:
    sampler = ResolutionSampler("range", [5, 22])
    sizes = sampler.sample(4000, generator=torch.Generator().manual_seed(0))
    assert set(sizes[:, 0].tolist()) == set(range(5, 23))
    non_square = ResolutionSampler("range", [8, 16], hr_size=(112, 96)).sample(200)
    expected_widths = torch.round(non_square[:, 0] * 96 / 112).long()
    assert torch.equal(non_square[:, 1], expected_widths)


@pytest.mark.parametrize(("batch_size", "lr_prob"), [(64, 0.5), (7, 0.5), (10, 0.3), (5, 1.0), (5, 0.0), (1, 0.25)])
def test_sampler_lr_prob_gives_an_exact_count(batch_size: int, lr_prob: float) -> None:
    sampler = ResolutionSampler("fixed", [14], lr_prob=lr_prob)
    expected = int(np.floor(lr_prob * batch_size + 0.5))
    subsets = set()
    for seed in range(20):
        sizes = sampler.sample(batch_size, generator=torch.Generator().manual_seed(seed))
        is_lr = sizes[:, 0] == 14
        assert int(is_lr.sum()) == expected
        assert torch.all(sizes[~is_lr] == 112)
        subsets.add(tuple(is_lr.tolist()))
    if 0 < expected < batch_size:
        assert len(subsets) > 1  # a random subset, not the first half


def test_sampler_per_batch_shares_one_size() -> None:
    sampler = ResolutionSampler("choice", [7, 14, 28], per="batch", lr_prob=0.5)
    generator = torch.Generator().manual_seed(0)
    degraded = 0
    for _ in range(200):
        sizes = sampler.sample(8, generator=generator)
        assert torch.all(sizes == sizes[0])
        degraded += int(sizes[0, 0] != 112)
    assert 60 < degraded < 140


def test_sampler_is_deterministic_with_a_seed() -> None:
    sampler = ResolutionSampler("range", [7, 56], lr_prob=0.5)
    first = sampler.sample(32, generator=torch.Generator().manual_seed(7))
    again = sampler.sample(32, generator=torch.Generator().manual_seed(7))
    other = sampler.sample(32, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert sampler.sample(3, device="cpu").device.type == "cpu"
    assert sampler.sample(0).shape == (0, 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sizes": [0]}, r"sizes.*\[1, 112\]"),
        ({"sizes": [113]}, r"sizes.*\[1, 112\]"),
        ({"policy": "choice", "sizes": [14, (16, 100)], "hr_size": (112, 96)}, r"sizes.*\[1, 96\]"),
        ({"lr_prob": 1.5}, "lr_prob"),
        ({"lr_prob": -0.1}, "lr_prob"),
        ({"policy": "uniform"}, "policy"),
        ({"per": "epoch"}, "per"),
        ({"policy": "fixed", "sizes": [7, 14]}, "fixed"),
        ({"policy": "choice", "sizes": []}, "choice"),
        ({"policy": "range", "sizes": [20, 10]}, "lo <= hi"),
        ({"policy": "range", "sizes": [7, 14, 28]}, "range"),
    ],
)
def test_sampler_validates_at_construction(kwargs, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ResolutionSampler(**kwargs)


# --------------------------------------------------------------------------------------------------------------------
# CameraDegradation and BatchDegradation


def test_camera_degradation_default_is_identity() -> None:
    x = torch.rand(4, 3, 112, 112)
    camera = CameraDegradation()
    assert camera.is_identity
    assert torch.equal(camera(x), x)


@pytest.mark.parametrize(
    "kwargs",
    [{"blur_prob": 1.0}, {"motion_prob": 1.0}, {"noise_prob": 1.0}, {"jpeg_prob": 1.0, "jpeg_quality": (10.0, 20.0)}],
)
def test_camera_degradation_changes_only_masked_samples(kwargs) -> None:
    torch.manual_seed(0)
    x = degrade(torch.rand(6, 3, 112, 96), 28)  # smooth-ish images so JPEG at low quality still changes them
    x = (x + torch.rand_like(x) * 0.2).clamp(0, 1)
    mask = torch.tensor([True, False, True, False, False, True])
    out = CameraDegradation(**kwargs)(x, mask)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out[~mask], x[~mask])
    for i in mask.nonzero().squeeze(1).tolist():
        assert float((out[i] - x[i]).abs().mean()) > 1e-3, kwargs
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0


def test_camera_degradation_validates() -> None:
    with pytest.raises(ValueError, match="blur_prob"):
        CameraDegradation(blur_prob=2.0)
    with pytest.raises(ValueError, match="motion_kernel_size"):
        CameraDegradation(motion_kernel_size=(4, 8))
    with pytest.raises(ValueError, match="mask"):
        CameraDegradation(noise_prob=1.0)(torch.rand(2, 3, 8, 8), torch.tensor([True]))


def test_batch_degradation_outputs() -> None:
    x = torch.rand(8, 3, 112, 112)
    sampler = ResolutionSampler("choice", [7, 14, 28, 56, 112], lr_prob=0.5)
    out = BatchDegradation(sampler, seed=0)(x)
    assert set(out) == {"hr", "lr", "lr_size"}
    assert out["hr"].shape == out["lr"].shape == x.shape
    assert out["hr"].dtype == out["lr"].dtype == torch.float32
    assert out["lr_size"].dtype == torch.long and out["lr_size"].shape == (8, 2)
    assert torch.equal(out["hr"], x)
    assert int((out["lr_size"][:, 0] != 112).sum()) <= 4  # half of the batch is drawn for LR (112 may be drawn too)
    torch.testing.assert_close(out["lr"], degrade(x, out["lr_size"]), rtol=0, atol=0)
    expected_sizes = sampler.sample(8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out["lr_size"], expected_sizes)


def test_batch_degradation_accepts_uint8_and_default_sampler() -> None:
    images = torch.randint(0, 256, (2, 3, 112, 112), dtype=torch.uint8)
    out = BatchDegradation()(images)
    assert out["hr"].dtype == torch.float32 and torch.all(out["lr_size"] == 14)


def test_batch_degradation_seed_is_reproducible_and_leaves_the_global_rng() -> None:
    x = torch.rand(16, 3, 112, 96)

    def make() -> BatchDegradation:
        sampler = ResolutionSampler("choice", [(7, 6), (16, 12), (28, 24)], hr_size=(112, 96), lr_prob=0.5)
        camera = CameraDegradation(blur_prob=0.5, noise_prob=0.5)
        return BatchDegradation(sampler, camera=camera, flip_prob=0.5, color_jitter=0.2, seed=123)

    state = torch.get_rng_state()
    first, second = make(), make()
    a1, a2 = first(x), first(x)
    b1 = second(x)
    assert torch.equal(torch.get_rng_state(), state)
    for key in a1:
        assert torch.equal(a1[key], b1[key]), key
    assert not torch.equal(a1["lr_size"], a2["lr_size"])  # the stream advances between batches
    flipped = ~torch.isclose(a1["hr"], x).all(dim=(1, 2, 3))
    assert bool(flipped.any())
    restored = pickle.loads(pickle.dumps(first))
    assert torch.equal(restored(x)["lr_size"], b1["lr_size"])  # generators restart from the seed


def test_batch_degradation_unseeded_uses_global_rng() -> None:
    module = BatchDegradation(ResolutionSampler("range", [7, 56]))
    assert module.generator("cpu") is None
    torch.manual_seed(5)
    first = module(torch.rand(8, 3, 112, 112))["lr_size"]
    torch.manual_seed(5)
    assert torch.equal(module(torch.rand(8, 3, 112, 112))["lr_size"], first)


def test_batch_degradation_checks_the_hr_size() -> None:
    with pytest.raises(ValueError, match="hr_size"):
        BatchDegradation(ResolutionSampler(hr_size=(112, 96)))(torch.rand(2, 3, 112, 112))
    with pytest.raises(ValueError, match="flip_prob"):
        BatchDegradation(flip_prob=-1.0)


def test_degrade_thread_pool_is_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    from crossres.transforms import threads

    pool = threads.thread_pool(2)
    assert threads.thread_pool(2) is pool
    monkeypatch.setattr(threads.os, "getpid", lambda: -1)  # as in a forked DataLoader worker
    assert threads.thread_pool(2) is not pool


def test_degrade_per_sample_sizes_carry_gradients() -> None:
    x = torch.rand(4, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    sizes = torch.tensor([[8, 8], [16, 16], [8, 8], [32, 32]])
    degrade(x, sizes).sum().backward()
    assert x.grad is not None
    expected = torch.zeros_like(x)
    for i, (h, w) in enumerate(sizes.tolist()):
        single = x.detach()[i : i + 1].clone().requires_grad_(True)
        degrade(single, (h, w)).sum().backward()
        expected[i] = single.grad[0]
    torch.testing.assert_close(x.grad, expected)


def test_degrade_pool_threads_run_one_openmp_thread_and_leave_the_process_setting() -> None:
    from crossres.transforms import threads

    before = torch.get_num_threads()
    images, sizes = _mixed_uint8_batch()
    degrade(images, sizes)
    assert torch.get_num_threads() == before
    if threads._libgomp() is None:
        pytest.skip("torch's OpenMP runtime is not a loaded libgomp here")
    pool = threads.thread_pool(2)
    assert set(pool.map(lambda _: torch.get_num_threads(), range(4))) == {1}
