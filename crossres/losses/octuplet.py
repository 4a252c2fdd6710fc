"""Knoche et al.'s octuplet loss: four batch-hard triplet losses over the HR/LR combinations.

Octuplet loss (Knoche, Elkadeem, Hörmann, Rigoll, FG 2023, arXiv 2207.06726) fine-tunes a recogniser ``f`` on a
batch of HR faces ``x_i`` and their synthetically degraded copies ``x̃_i`` (the same faces, down- and up-sampled),
with identity labels ``y_i``. With ``A, B ∈ {HR, LR}`` the embeddings of the anchors and of the candidates, the
triplet term of one combination mines, for every anchor ``i``, the hardest positive (the farthest image of the
same identity, ``j ≠ i``) and the hardest negative (the nearest image of another identity) among ``B``:

    T_AB(i) = max(0, max_{j ≠ i, y_j = y_i} d(A_i, B_j) − min_{k: y_k ≠ y_i} d(A_i, B_k) + m),

and the octuplet loss sums the four combinations and averages over the anchors:

    L_oct = 1/N Σ_i [T_HR,HR(i) + T_HR,LR(i) + T_LR,HR(i) + T_LR,LR(i)],

``d`` being the Euclidean distance and ``m`` the margin (the authors' code's defaults: plain Euclidean,
``m = 0.5``). Positives are other images of the anchor's identity in
every term: the anchor's own copy at the other resolution is not one (the authors' code excludes ``j = i`` in all
four blocks), so a batch needs several images per identity (identity-balanced batches).

An anchor with no positive or no negative in the batch has no triplet: it is left out of every term and out of
the mean (the authors' code counts a missing positive as distance 0 and takes the nearest of all images when no
negative exists). A batch without any valid anchor gives a loss of 0 that still depends on the embeddings (no
NaN, a zero gradient).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "OCTUPLET_TERMS",
    "OctupletLoss",
    "batch_hard_triplet",
    "octuplet_loss",
    "octuplet_terms",
    "pairwise_distance",
]

Distance = Literal["euclidean", "euclidean_squared", "cosine"]
Reduction = Literal["mean", "sum", "none"]
Term = Literal["hr_hr", "hr_lr", "lr_hr", "lr_lr"]

#: The four triplet terms, ``<anchor>_<positive and negative>``: the authors' T_hhh, T_hll, T_lhh, T_lll.
OCTUPLET_TERMS: tuple[Term, ...] = ("hr_hr", "hr_lr", "lr_hr", "lr_lr")


def pairwise_distance(anchors: Tensor, candidates: Tensor, distance: Distance = "euclidean") -> Tensor:
    """Distances between every anchor and every candidate.

    Args:
        anchors: ``(N, D)`` embeddings.
        candidates: ``(M, D)`` embeddings.
        distance: ``euclidean`` ``‖a − b‖``, ``euclidean_squared`` ``‖a − b‖²`` or ``cosine`` ``1 − cos(a, b)``.

    Returns:
        ``(N, M)`` distances, all ``>= 0``. The Euclidean distance of two equal vectors is exactly 0 with a zero
        gradient (no NaN from the square root).

    Raises:
        ValueError: for an unknown ``distance``.
    """
    if distance == "cosine":
        return 1.0 - F.normalize(anchors, dim=1) @ F.normalize(candidates, dim=1).T
    if distance not in ("euclidean", "euclidean_squared"):
        raise ValueError(f"distance must be 'euclidean', 'euclidean_squared' or 'cosine', got {distance!r}")
    # ‖a − b‖² = ‖a‖² − 2⟨a, b⟩ + ‖b‖², clamped at 0 against rounding.
    squared = (
        anchors.pow(2).sum(1, keepdim=True) - 2.0 * anchors @ candidates.T + candidates.pow(2).sum(1)[None, :]
    ).clamp_min(0.0)
    if distance == "euclidean_squared":
        return squared
    zero = squared <= 0.0
    return torch.where(zero, torch.zeros_like(squared), torch.where(zero, torch.ones_like(squared), squared).sqrt())


def batch_hard_triplet(distances: Tensor, positive: Tensor, negative: Tensor, margin: float) -> tuple[Tensor, Tensor]:
    """One triplet term with batch-hard mining: ``max(0, d(a, p_hardest) − d(a, n_hardest) + m)`` per anchor.

    Args:
        distances: ``(N, M)`` anchor-to-candidate distances.
        positive: ``(N, M)`` bool, candidate ``j`` is a positive of anchor ``i``.
        negative: ``(N, M)`` bool, candidate ``k`` is a negative of anchor ``i``.
        margin: the margin ``m``.

    Returns:
        ``(N,)`` triplet losses (0 for anchors without a positive or a negative) and the ``(N,)`` bool mask of the
        anchors that have both.
    """
    valid = positive.any(1) & negative.any(1)
    hardest_positive = distances.masked_fill(~positive, float("-inf")).amax(1)
    hardest_negative = distances.masked_fill(~negative, float("inf")).amin(1)
    zero = torch.zeros_like(hardest_positive)
    gap = torch.where(valid, hardest_positive, zero) - torch.where(valid, hardest_negative, zero)
    return torch.where(valid, F.relu(gap + margin), zero), valid


def octuplet_loss(
    hr: Tensor,
    lr: Tensor,
    labels: Tensor,
    margin: float = 0.5,
    distance: Distance = "euclidean",
    normalize: bool = True,
    terms: tuple[Term, ...] | list[Term] = OCTUPLET_TERMS,
    reduction: Reduction = "mean",
) -> Tensor:
    """The octuplet loss ``L_oct`` of a batch (see the module docstring for the equation).

    Args:
        hr: ``(N, D)`` embeddings of the HR faces.
        lr: ``(N, D)`` embeddings of the same faces, degraded (row ``i`` is the copy of ``hr[i]``).
        labels: ``(N,)`` identity labels.
        margin: the margin ``m`` of every triplet term.
        distance: ``d``: ``euclidean`` (the authors' code's default), ``euclidean_squared`` or ``cosine``.
        normalize: l2-normalise the embeddings before ``d`` (the authors' code takes them as they are).
        terms: the triplet terms to sum, ``<anchor>_<candidates>`` from :data:`OCTUPLET_TERMS` (all four: ``L_oct``).
        reduction: ``mean`` over the anchors that have a positive and a negative, ``sum`` over them, or ``none``
            for the ``(N,)`` per-anchor sums (0 for anchors without a triplet).

    Returns:
        The loss; see ``reduction``.
    """
    per_term, valid = octuplet_terms(hr, lr, labels, margin, distance, normalize, terms)
    per_anchor = torch.stack(list(per_term.values())).sum(0)
    if reduction == "none":
        return per_anchor
    if reduction == "sum":
        return per_anchor.sum()
    if reduction == "mean":
        return per_anchor.sum() / valid.sum().clamp_min(1)
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def octuplet_terms(
    hr: Tensor,
    lr: Tensor,
    labels: Tensor,
    margin: float = 0.5,
    distance: Distance = "euclidean",
    normalize: bool = True,
    terms: tuple[Term, ...] | list[Term] = OCTUPLET_TERMS,
) -> tuple[dict[str, Tensor], Tensor]:
    """The triplet terms ``T_AB`` of :func:`octuplet_loss`, per anchor.

    Returns:
        ``{term: (N,) losses}`` (0 for anchors without a triplet) and the ``(N,)`` bool mask of the anchors that have
        a positive and a negative (the same for every term: it depends on the labels only).

    Raises:
        ValueError: for mismatched shapes, an unknown term, or no term.
    """
    if hr.ndim != 2 or hr.shape != lr.shape or labels.shape != (hr.shape[0],):
        raise ValueError(
            "hr and lr must be (N, D) with the same shape and labels (N,), got "
            f"{tuple(hr.shape)}, {tuple(lr.shape)} and {tuple(labels.shape)}"
        )
    unknown = [t for t in terms if t not in OCTUPLET_TERMS]
    if unknown or not terms:
        raise ValueError(f"terms must be a non-empty subset of {list(OCTUPLET_TERMS)}, got {list(terms)}")
    if normalize:
        hr, lr = F.normalize(hr, dim=1), F.normalize(lr, dim=1)
    embeddings = {"hr": hr, "lr": lr}
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive, negative = same & ~eye, ~same  # positives: other images of the identity, in every term
    per_term: dict[str, Tensor] = {}
    valid = positive.any(1) & negative.any(1)
    for term in terms:
        anchor, candidate = term.split("_")
        distances = pairwise_distance(embeddings[anchor], embeddings[candidate], distance)
        per_term[term], _ = batch_hard_triplet(distances, positive, negative, margin)
    return per_term, valid


class OctupletLoss(nn.Module):
    """The octuplet loss ``L_oct`` (Knoche et al. 2023) of HR embeddings, their LR copies' and the labels.

    Args:
        margin: the margin ``m`` of every triplet term.
        distance: ``euclidean`` (the authors' code's default), ``euclidean_squared`` or ``cosine``.
        normalize: l2-normalise the embeddings before the distance (the authors' code does not).
        terms: the triplet terms to sum (``None``: all four, ``hr_hr``, ``hr_lr``, ``lr_hr``, ``lr_lr``).
        reduction: ``mean`` over the anchors with a triplet, ``sum``, or ``none`` (per anchor).

    Raises:
        ValueError: for a negative margin, an unknown distance, term or reduction.
    """

    def __init__(
        self,
        margin: float = 0.5,
        distance: Distance = "euclidean",
        normalize: bool = True,
        terms: list[Term] | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        if distance not in ("euclidean", "euclidean_squared", "cosine"):
            raise ValueError(f"distance must be 'euclidean', 'euclidean_squared' or 'cosine', got {distance!r}")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        chosen = tuple(terms) if terms is not None else OCTUPLET_TERMS
        if not chosen or any(t not in OCTUPLET_TERMS for t in chosen) or len(set(chosen)) != len(chosen):
            raise ValueError(f"terms must be distinct names from {list(OCTUPLET_TERMS)}, got {terms}")
        self.margin = float(margin)
        self.distance: Distance = distance
        self.normalize = normalize
        self.terms: tuple[Term, ...] = chosen
        self.reduction: Reduction = reduction

    def forward(self, hr: Tensor, lr: Tensor, labels: Tensor) -> Tensor:
        """Compute ``L_oct``; see :func:`octuplet_loss`."""
        return octuplet_loss(hr, lr, labels, self.margin, self.distance, self.normalize, self.terms, self.reduction)

    def per_term(self, hr: Tensor, lr: Tensor, labels: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """Per-anchor triplet losses of each term and the mask of anchors with a triplet; see :func:`octuplet_terms`."""
        return octuplet_terms(hr, lr, labels, self.margin, self.distance, self.normalize, self.terms)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, distance={self.distance!r}, normalize={self.normalize}, terms={self.terms}"
