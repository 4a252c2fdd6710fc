"""The octuplet loss (Knoche et al. 2023) against a naive, paper-literal loop."""

from __future__ import annotations

import math

import pytest
import torch

from crossres.losses.octuplet import OCTUPLET_TERMS, OctupletLoss, octuplet_loss, octuplet_terms, pairwise_distance


def _distance(a: torch.Tensor, b: torch.Tensor, distance: str) -> torch.Tensor:
    if distance == "cosine":
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        return 1 - dot / (torch.sqrt(sum(x * x for x in a)) * torch.sqrt(sum(y * y for y in b)))
    squared = sum((x - y) ** 2 for x, y in zip(a, b, strict=True))
    return squared if distance == "euclidean_squared" else torch.sqrt(squared)


def naive_octuplet(
    hr: torch.Tensor,
    lr: torch.Tensor,
    labels: list[int],
    margin: float,
    distance: str = "euclidean",
    normalize: bool = True,
    terms: tuple[str, ...] = OCTUPLET_TERMS,
) -> torch.Tensor:
    """L_oct = 1/N Σ_i Σ_(A,B) max(0, max_{j≠i, y_j=y_i} d(A_i, B_j) − min_{k: y_k≠y_i} d(A_i, B_k) + m), literally.

    The mean runs over the anchors that have a positive and a negative; a batch without one gives 0.
    """
    if normalize:
        hr = torch.stack([v / torch.sqrt(sum(x * x for x in v)) for v in hr])
        lr = torch.stack([v / torch.sqrt(sum(x * x for x in v)) for v in lr])
    views = {"hr": hr, "lr": lr}
    total, anchors = hr.new_zeros(()), 0
    for i, label in enumerate(labels):
        positives = [j for j, other in enumerate(labels) if other == label and j != i]
        negatives = [k for k, other in enumerate(labels) if other != label]
        if not positives or not negatives:
            continue
        anchors += 1
        for term in terms:
            anchor, candidates = (views[name] for name in term.split("_"))
            hardest_positive = max((_distance(anchor[i], candidates[j], distance) for j in positives), key=float)
            hardest_negative = min((_distance(anchor[i], candidates[k], distance) for k in negatives), key=float)
            total = total + torch.clamp(hardest_positive - hardest_negative + margin, min=0)
    return total / max(anchors, 1)


LABELS = [0, 0, 1, 1, 2, 2, 2, 3]  # identity 3 has no positive: it is never an anchor


def _batch(scale: float = 1.0, n: int = len(LABELS), dim: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    hr = scale * torch.randn(n, dim, generator=generator, dtype=torch.float64)
    lr = hr + 0.7 * scale * torch.randn(n, dim, generator=generator, dtype=torch.float64)
    return hr.requires_grad_(), lr.requires_grad_()


@pytest.mark.parametrize(
    "distance, normalize, margin",
    [("euclidean", True, 0.5), ("euclidean", False, 1.0), ("euclidean_squared", True, 0.3), ("cosine", False, 0.2)],
)
def test_value_and_gradients_match_the_naive_loop(distance: str, normalize: bool, margin: float) -> None:
    hr, lr = _batch(scale=2.0)
    labels = torch.tensor(LABELS)
    ours = octuplet_loss(hr, lr, labels, margin=margin, distance=distance, normalize=normalize)  # type: ignore[arg-type]
    ref = naive_octuplet(hr, lr, LABELS, margin, distance, normalize)
    assert ours.item() > 0
    assert torch.allclose(ours, ref, atol=1e-10)
    for g, r in zip(torch.autograd.grad(ours, (hr, lr)), torch.autograd.grad(ref, (hr, lr)), strict=True):
        assert torch.allclose(g, r, atol=1e-10)


@pytest.mark.parametrize("terms", [("hr_hr",), ("hr_lr", "lr_hr"), ("lr_lr", "hr_hr", "lr_hr")])
def test_subsets_of_the_terms(terms: tuple[str, ...]) -> None:
    hr, lr = _batch()
    labels = torch.tensor(LABELS)
    ours = OctupletLoss(margin=0.5, terms=list(terms))(hr, lr, labels)  # type: ignore[arg-type]
    assert torch.allclose(ours, naive_octuplet(hr, lr, LABELS, 0.5, terms=terms), atol=1e-10)
    per_term, valid = octuplet_terms(hr, lr, labels, 0.5)
    assert valid.tolist() == [True] * 7 + [False]
    assert torch.allclose(sum(per_term[t] for t in terms).sum() / 7, ours)  # type: ignore[union-attr]


def test_hardest_negative_and_positive_are_mined_per_combination() -> None:
    # On a line: anchor 0 at 0 (identity 0), its positive at 1; negatives at 3 and 1.2 in HR, 5 and 4 in LR.
    hr = torch.tensor([[0.0], [1.0], [3.0], [1.2]])
    lr = torch.tensor([[0.0], [2.0], [5.0], [4.0]])
    labels = torch.tensor([0, 0, 1, 1])
    per_term, _ = octuplet_terms(hr, lr, labels, margin=0.5, normalize=False)
    # T_hh(0) = max(0, 1 − 1.2 + 0.5); T_hl(0) = max(0, 2 − 4 + 0.5) = 0 (the LR negatives are farther).
    assert per_term["hr_hr"][0].item() == pytest.approx(0.3)
    assert per_term["hr_lr"][0].item() == pytest.approx(0.0)
    # Anchor 1 (HR at 1): positive 0 at distance 1, hardest HR negative 1.2 at 0.2: 1 − 0.2 + 0.5.
    assert per_term["hr_hr"][1].item() == pytest.approx(1.3)
    # The anchor's own LR copy is not a positive: LR anchor 0 (at 0) against HR, positive HR 1 (distance 1).
    assert per_term["lr_hr"][0].item() == pytest.approx(0.3)


def test_several_positives_take_the_farthest() -> None:
    hr = torch.tensor([[0.0], [1.0], [2.5], [10.0]])
    labels = torch.tensor([0, 0, 0, 1])
    per_term, _ = octuplet_terms(hr, hr.clone(), labels, margin=1.0, normalize=False, terms=["hr_hr"])
    assert per_term["hr_hr"].tolist() == pytest.approx([0.0, 0.0, 0.0, 0.0])  # 2.5 − 10 + 1 < 0
    per_term, _ = octuplet_terms(hr, hr.clone(), labels, margin=8.0, normalize=False, terms=["hr_hr"])
    assert per_term["hr_hr"][0].item() == pytest.approx(2.5 - 10 + 8)  # the farther positive, 2.5, not 1


@pytest.mark.parametrize(
    "labels",
    [[0, 0, 0, 0], [0, 1, 2, 3], [5]],
    ids=["one identity: no negative", "one image each: no positive", "single face"],
)
def test_batch_without_a_triplet_is_zero_with_finite_gradients(labels: list[int]) -> None:
    hr, lr = _batch(n=len(labels))
    loss = octuplet_loss(hr, lr, torch.tensor(labels))
    assert loss.item() == 0.0
    grads = torch.autograd.grad(loss, (hr, lr))
    assert all(torch.isfinite(g).all() and not g.any() for g in grads)
    assert naive_octuplet(hr, lr, labels, 0.5).item() == 0.0


def test_identical_embeddings_and_zero_vectors_are_finite() -> None:
    hr = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)  # every distance 0, zero vectors
    lr = torch.ones(4, 3, dtype=torch.float64, requires_grad=True)
    loss = octuplet_loss(hr, lr, torch.tensor([0, 0, 1, 1]), margin=0.5)
    # Every distance within HR and within LR is 0: T_hh = T_ll = m; HR-LR distances are all equal, so T_hl = m.
    assert loss.item() == pytest.approx(4 * 0.5)
    assert all(torch.isfinite(g).all() for g in torch.autograd.grad(loss, (hr, lr)))


def test_reductions_and_distance_matrix() -> None:
    hr, lr = _batch()
    labels = torch.tensor(LABELS)
    per_anchor = octuplet_loss(hr, lr, labels, reduction="none")
    assert per_anchor.shape == (8,) and per_anchor[7].item() == 0.0
    assert torch.allclose(per_anchor.sum(), octuplet_loss(hr, lr, labels, reduction="sum"))
    assert torch.allclose(per_anchor.sum() / 7, octuplet_loss(hr, lr, labels))
    a, b = hr.detach(), lr.detach()
    for distance in ("euclidean", "euclidean_squared", "cosine"):
        matrix = pairwise_distance(a, b, distance)  # type: ignore[arg-type]
        assert matrix.shape == (8, 8)
        assert math.isclose(matrix[2, 5].item(), _distance(a[2], b[5], distance).item(), rel_tol=1e-9)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"margin": -0.1}, "margin"),
        ({"distance": "manhattan"}, "distance"),
        ({"terms": ["hr_mr"]}, "terms"),
        ({"terms": []}, "terms"),
        ({"terms": ["hr_hr", "hr_hr"]}, "terms"),
        ({"reduction": "max"}, "reduction"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        OctupletLoss(**kwargs)  # type: ignore[arg-type]


def test_bad_shapes() -> None:
    hr, lr = torch.randn(4, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match="same shape"):
        octuplet_loss(hr, lr[:, :2], torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="labels"):
        octuplet_loss(hr, lr, torch.tensor([0, 0, 1]))
