"""Guided-CNN's feature guidance loss and Knoche's cosine distance loss against paper-literal references."""

from __future__ import annotations

import math

import pytest
import torch

from crossres.losses.distance import CosineDistanceLoss, cosine_distance_loss
from crossres.losses.guidance import FeatureGuidanceLoss, feature_guidance_loss


def _norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def naive_guidance(f_h: torch.Tensor, f_l: torch.Tensor) -> torch.Tensor:
    """000 Eq. (2), per pair, written out: Lc = 1/2 * sum_d (f_H,d/|f_H| - f_L,d/|f_L|)^2; mean over the batch."""
    total = f_h.new_zeros(())
    for h, low in zip(f_h, f_l, strict=True):
        nh = torch.sqrt(sum(x * x for x in h))
        nl = torch.sqrt(sum(x * x for x in low))
        total = total + 0.5 * sum((a / nh - b / nl) ** 2 for a, b in zip(h, low, strict=True))
    return total / f_h.shape[0]


def naive_cosine_distance(f_hr: torch.Tensor, f_lr: torch.Tensor) -> torch.Tensor:
    """004 Eq. (6) with the cosine of Eq. (2): 1 - sum_d (M_HR,d/|M_HR|)(M_LR,d/|M_LR|); mean over the batch."""
    total = f_hr.new_zeros(())
    for h, low in zip(f_hr, f_lr, strict=True):
        nh = torch.sqrt(sum(x * x for x in h))
        nl = torch.sqrt(sum(x * x for x in low))
        total = total + 1 - sum(a * b for a, b in zip(h, low, strict=True)) / (nh * nl)
    return total / f_hr.shape[0]


CASES = [
    (feature_guidance_loss, naive_guidance),
    (cosine_distance_loss, naive_cosine_distance),
]


@pytest.mark.parametrize("loss_fn, reference", CASES)
def test_value_and_gradients_match_the_reference(loss_fn, reference) -> None:
    generator = torch.Generator().manual_seed(0)
    a = (3 * torch.randn(5, 7, generator=generator, dtype=torch.float64)).requires_grad_()
    b = torch.randn(5, 7, generator=generator, dtype=torch.float64).requires_grad_()
    ours = loss_fn(a, b)
    ref = reference(a, b)
    assert torch.allclose(ours, ref, atol=1e-12)
    grads = torch.autograd.grad(ours, (a, b))
    ref_grads = torch.autograd.grad(ref, (a, b))
    for g, r in zip(grads, ref_grads, strict=True):
        assert torch.allclose(g, r, atol=1e-12)


@pytest.mark.parametrize("loss_fn, reference", CASES)
def test_reductions(loss_fn, reference) -> None:
    a, b = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    per_pair = loss_fn(a, b, reduction="none")
    assert per_pair.shape == (4,)
    assert torch.allclose(per_pair.mean(), loss_fn(a, b))
    assert torch.allclose(per_pair.sum(), loss_fn(a, b, reduction="sum"))
    for i in range(4):
        assert torch.allclose(per_pair[i], reference(a[i : i + 1], b[i : i + 1]))
    with pytest.raises(ValueError, match="reduction"):
        loss_fn(a, b, reduction="max")
    with pytest.raises(ValueError, match="same shape"):
        loss_fn(a, b[:, :5])


def test_guidance_is_half_squared_distance_of_unit_vectors_and_scale_free() -> None:
    a, b = torch.randn(8, 16, dtype=torch.float64), torch.randn(8, 16, dtype=torch.float64)
    # ½‖â − b̂‖² = 1 − cos(a, b): both losses agree on any features, and neither sees the feature scale.
    assert torch.allclose(feature_guidance_loss(a, b), cosine_distance_loss(a, b))
    assert torch.allclose(feature_guidance_loss(10 * a, 0.1 * b), feature_guidance_loss(a, b))
    assert feature_guidance_loss(a, 2 * a).item() == pytest.approx(0.0, abs=1e-12)
    assert feature_guidance_loss(a, -a).item() == pytest.approx(2.0)


def test_cosine_distance_range() -> None:
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[3.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])
    assert cosine_distance_loss(a, b, reduction="none").tolist() == pytest.approx([0.0, 1.0, 2.0])


def test_modules_wrap_the_functions() -> None:
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    assert torch.equal(FeatureGuidanceLoss()(a, b), feature_guidance_loss(a, b))
    assert torch.equal(CosineDistanceLoss(reduction="sum")(a, b), cosine_distance_loss(a, b, reduction="sum"))
    for cls in (FeatureGuidanceLoss, CosineDistanceLoss):
        with pytest.raises(ValueError, match="reduction"):
            cls(reduction="avg")  # type: ignore[arg-type]


def test_zero_feature_is_finite() -> None:
    a = torch.zeros(2, 4, requires_grad=True)
    b = torch.randn(2, 4)
    for loss_fn in (feature_guidance_loss, cosine_distance_loss):
        loss = loss_fn(a, b)
        (grad,) = torch.autograd.grad(loss, a)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
