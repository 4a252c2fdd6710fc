"""Center loss (003 Eq. (1)/(3), Wen et al.'s update) and the CM loss (003 Eq. (5)) against paper-literal loops."""

from __future__ import annotations

import math

import pytest
import torch

from crossres.losses.center import CenterLoss
from crossres.losses.coupled import CoupledMappingLoss


def _naive_center(features: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    # Eq. (1) center term: sum_i ||v_i - c_{y_i}||_2^2, then / m (our batch mean).
    total = features.new_zeros(())
    for i in range(features.shape[0]):
        c = centers[int(labels[i])]
        total = total + sum((features[i, d] - c[d]) ** 2 for d in range(features.shape[1]))
    return total / features.shape[0]


def _naive_softmax(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    # Eq. (2) term: -sum_i log(exp(W_{y_i}^T x_i + b_{y_i}) / sum_j exp(W_j^T x_i + b_j)), then / m.
    total = logits.new_zeros(())
    for i in range(logits.shape[0]):
        denominator = sum(torch.exp(logits[i, j]) for j in range(logits.shape[1]))
        total = total - torch.log(torch.exp(logits[i, int(labels[i])]) / denominator)
    return total / logits.shape[0]


def _data(seed: int = 0, batch: int = 7, dim: int = 5, classes: int = 4) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, dim, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 3, 0, 0, 3][:batch])
    centers = torch.randn(classes, dim, generator=generator, dtype=torch.float64)
    return features, labels, centers


def test_center_loss_value_and_gradient_match_the_naive_sum() -> None:
    features, labels, centers = _data()
    loss_fn = CenterLoss(4, 5).double()
    loss_fn.centers.copy_(centers)
    a = features.clone().requires_grad_(True)
    b = features.clone().requires_grad_(True)
    ours, reference = loss_fn(a, labels), _naive_center(b, labels, centers)
    ours.backward()
    reference.backward()
    assert torch.allclose(ours, reference, atol=1e-12)
    assert torch.allclose(a.grad, b.grad, atol=1e-12)
    # d/dv_i = 2 (v_i - c_{y_i}) / m, and the centres get no gradient (they are a buffer).
    assert torch.allclose(a.grad, 2 * (features - centers[labels]) / features.shape[0])
    assert not loss_fn.centers.requires_grad


def test_center_update_is_wen_et_al_rule() -> None:
    features, labels, centers = _data(1)
    alpha = 0.5
    loss_fn = CenterLoss(4, 5, alpha=alpha).double()
    loss_fn.centers.copy_(centers)
    loss_fn.update(features, labels)
    expected = centers.clone()
    for j in range(4):
        members = [i for i in range(len(labels)) if int(labels[i]) == j]
        delta = sum((centers[j] - features[i] for i in members), torch.zeros(5, dtype=torch.float64))
        expected[j] = centers[j] - alpha * delta / (1 + len(members))  # Wen et al. Eq. (4)
    assert torch.allclose(loss_fn.centers, expected, atol=1e-12)
    assert torch.equal(loss_fn.centers[2], centers[2])  # a class absent from the batch does not move


def test_center_update_converges_to_class_means() -> None:
    features = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 0, 1])
    loss_fn = CenterLoss(2, 2, alpha=1.0)
    for _ in range(60):
        loss_fn.update(features, labels)
    assert torch.allclose(loss_fn.centers, torch.tensor([[2.0, 0.0], [0.0, 2.0]]), atol=1e-5)


def test_center_loss_rejects_bad_shapes() -> None:
    loss_fn = CenterLoss(3, 4)
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        loss_fn(torch.zeros(2, 5), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        loss_fn(torch.zeros(2, 4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="alpha"):
        CenterLoss(3, 4, alpha=2.0)


@pytest.mark.parametrize("weights", [(0.008, 0.008), (0.5, 2.0), (0.0, 0.0)])
def test_cm_loss_matches_eq5_literally(weights: tuple[float, float]) -> None:
    lam, alpha = weights
    generator = torch.Generator().manual_seed(3)
    batch, dim, classes = 6, 4, 3
    x = torch.randn(batch, dim, generator=generator, dtype=torch.float64)
    z = torch.randn(batch, dim, generator=generator, dtype=torch.float64)
    logits_x = torch.randn(batch, classes, generator=generator, dtype=torch.float64)
    logits_z = torch.randn(batch, classes, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 2, 1, 1, 0, 2])
    centers_x = torch.randn(classes, dim, generator=generator, dtype=torch.float64)
    centers_z = torch.randn(classes, dim, generator=generator, dtype=torch.float64)
    loss_fn = CoupledMappingLoss(classes, dim, center_weight=lam, euclidean_weight=alpha).double()
    loss_fn.center_hr.centers.copy_(centers_x)
    loss_fn.center_lr.centers.copy_(centers_z)

    ours_inputs = [t.clone().requires_grad_(True) for t in (x, z, logits_x, logits_z)]
    ref_inputs = [t.clone().requires_grad_(True) for t in (x, z, logits_x, logits_z)]
    terms = loss_fn(*ours_inputs, labels)
    rx, rz, rlx, rlz = ref_inputs
    ls = _naive_softmax(rlx, labels) + _naive_softmax(rlz, labels)  # Eq. (2)
    lc = _naive_center(rx, labels, centers_x) + _naive_center(rz, labels, centers_z)  # Eq. (3)
    le = sum(sum((rx[i, d] - rz[i, d]) ** 2 for d in range(dim)) for i in range(batch)) / batch  # Eq. (4)
    reference = ls + lam * lc + alpha * le  # Eq. (5)
    for name, value in (("softmax", ls), ("center", lc), ("euclidean", le), ("loss", reference)):
        assert math.isclose(float(terms[name]), float(value), rel_tol=1e-10), name
    terms["loss"].backward()
    reference.backward()
    for ours, ref in zip(ours_inputs, ref_inputs, strict=True):
        assert torch.allclose(ours.grad, ref.grad, atol=1e-10)


def test_cm_loss_updates_both_center_sets() -> None:
    loss_fn = CoupledMappingLoss(2, 2, center_alpha=1.0)
    x = torch.tensor([[1.0, 1.0]])
    z = torch.tensor([[-1.0, 0.0]])
    loss_fn.update_centers(x, z, torch.tensor([1]))
    assert torch.allclose(loss_fn.center_hr.centers[1], x[0] / 2)  # c - 1 * (c - x) / (1 + 1) from c = 0
    assert torch.allclose(loss_fn.center_lr.centers[1], z[0] / 2)
    assert torch.equal(loss_fn.center_hr.centers[0], torch.zeros(2))


def test_cm_loss_rejects_unpaired_features() -> None:
    loss_fn = CoupledMappingLoss(3, 4)
    with pytest.raises(ValueError, match="same shape"):
        loss_fn(torch.zeros(2, 4), torch.zeros(3, 4), torch.zeros(2, 3), torch.zeros(3, 3), torch.zeros(2).long())
