"""Closed-set face identification: CMC curve and rank-k accuracy with cosine similarity.

The papers report rank-1 identification with HR gallery images and LR probes: IPU-Net (002) Tables 1-3 (one gallery
image per identity on AR and LFW; Table 4 uses 50 gallery images per identity) and DCR (003) Table II
("the nearest-neighbor classifier is used to classify all probe images"). With several gallery images per identity an
identity is scored by its best-matching gallery image, so rank-1 is exactly the nearest-neighbour classifier.

Ties: a probe's rank is ``1 +`` the number of *other* gallery identities whose score is ``>=`` the true identity's
score (ties count against the probe), so constant embeddings cannot score a perfect rank-1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from crossres.metrics.verification import check_consistent, unique_by_id

__all__ = ["cmc", "probe_ranks", "rank_k_accuracy", "IdentificationMetric"]

#: Probes scored against the gallery per chunk, to bound the ``(probes, gallery)`` similarity matrix.
_PROBE_CHUNK = 4096


def _check_set(embeddings: Tensor, labels: Tensor, name: str) -> None:
    if embeddings.ndim != 2:
        raise ValueError(f"{name} embeddings must have shape (N, D), got {tuple(embeddings.shape)}")
    if labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"{name}_labels must have shape ({embeddings.shape[0]},) to match the {name} embeddings, "
            f"got {tuple(labels.shape)}"
        )
    if embeddings.shape[0] == 0:
        raise ValueError(f"the {name} set is empty")


def probe_ranks(gallery: Tensor, gallery_labels: Tensor, probe: Tensor, probe_labels: Tensor) -> Tensor:
    """Rank of the true identity for every probe (1 = best match).

    Args:
        gallery: ``(G, D)`` gallery embeddings (several images per identity allowed).
        gallery_labels: ``(G,)`` integer identity labels of the gallery.
        probe: ``(P, D)`` probe embeddings.
        probe_labels: ``(P,)`` integer identity labels of the probes.

    Returns:
        ``(P,)`` long ranks in ``[1, number of gallery identities]``.

    Raises:
        ValueError: on malformed shapes, different embedding sizes, empty sets, or a probe identity missing from the
            gallery (closed-set protocol).
    """
    _check_set(gallery, gallery_labels, "gallery")
    _check_set(probe, probe_labels, "probe")
    if gallery.shape[1] != probe.shape[1]:
        raise ValueError(f"gallery and probe embeddings differ in size: {gallery.shape[1]} vs {probe.shape[1]}")
    identities, gallery_identity = torch.unique(gallery_labels, return_inverse=True)
    position = torch.searchsorted(identities, probe_labels).clamp(max=identities.numel() - 1)
    missing = identities[position] != probe_labels
    if bool(missing.any()):
        absent = torch.unique(probe_labels[missing]).tolist()
        raise ValueError(
            f"{int(missing.sum())} probes have identities absent from the gallery (closed-set identification needs "
            f"every probe identity in the gallery): labels {absent[:10]}{' ...' if len(absent) > 10 else ''}"
        )
    gallery = torch.nn.functional.normalize(gallery.float(), dim=1)
    probe = torch.nn.functional.normalize(probe.float(), dim=1)
    n_identities = identities.numel()
    ranks = []
    for start in range(0, probe.shape[0], _PROBE_CHUNK):
        similarity = probe[start : start + _PROBE_CHUNK] @ gallery.T  # cosine similarity, (p, G)
        # Identity score = its best-matching gallery image.
        per_identity = similarity.new_full((similarity.shape[0], n_identities), float("-inf"))
        per_identity.scatter_reduce_(
            1, gallery_identity.expand_as(similarity), similarity, reduce="amax", include_self=True
        )
        true_score = per_identity.gather(1, position[start : start + _PROBE_CHUNK].unsqueeze(1))
        # Other identities scoring >= the true one (the true one itself counts once in ">=").
        ranks.append((per_identity >= true_score).sum(dim=1))
    return torch.cat(ranks)


def cmc(gallery: Tensor, gallery_labels: Tensor, probe: Tensor, probe_labels: Tensor, max_rank: int = 10) -> Tensor:
    """Cumulative match characteristic of a closed-set identification experiment.

    Args:
        gallery: ``(G, D)`` gallery embeddings (several images per identity allowed; an identity is scored by its
            best-matching image).
        gallery_labels: ``(G,)`` integer identity labels of the gallery.
        probe: ``(P, D)`` probe embeddings.
        probe_labels: ``(P,)`` integer identity labels of the probes; each must occur in ``gallery_labels``.
        max_rank: length of the curve.

    Returns:
        ``(max_rank,)`` float64 tensor, entry ``k - 1`` = fraction of probes whose true identity is within the top
        ``k`` gallery identities (1.0 from ``k =`` number of identities on).

    Raises:
        ValueError: if ``max_rank < 1`` or as for :func:`probe_ranks`.
    """
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    ranks = probe_ranks(gallery, gallery_labels, probe, probe_labels).cpu()
    hits = torch.bincount(ranks.clamp(max=max_rank + 1) - 1, minlength=max_rank + 1)[:max_rank]
    return hits.cumsum(0).double() / ranks.numel()


def rank_k_accuracy(gallery: Tensor, gallery_labels: Tensor, probe: Tensor, probe_labels: Tensor, k: int = 1) -> float:
    """Rank-``k`` identification rate (rank-1 = nearest-neighbour accuracy).

    Args:
        gallery: ``(G, D)`` gallery embeddings.
        gallery_labels: ``(G,)`` integer identity labels of the gallery.
        probe: ``(P, D)`` probe embeddings.
        probe_labels: ``(P,)`` integer identity labels of the probes.
        k: rank.

    Returns:
        Fraction of probes whose true identity is among the ``k`` best gallery identities.

    Raises:
        ValueError: as for :func:`cmc`.
    """
    return float(cmc(gallery, gallery_labels, probe, probe_labels, max_rank=k)[k - 1])


class IdentificationMetric(Metric):
    """Accumulates gallery and probe embeddings and computes rank-k identification rates.

    Design: gallery and probe samples arrive through the same ``update`` and are told apart by ``is_gallery``; every
    state is a ``"cat"`` list, so under DDP each rank may embed any share of either set and ``compute`` sees both
    whole. ``sample_id`` must be unique across gallery *and* probe samples; repeats (``DistributedSampler`` padding)
    are dropped, keeping the first occurrence.

    Args:
        ranks: the ``k`` of the reported ``rank{k}`` rates.
        **kwargs: forwarded to :class:`torchmetrics.Metric`.

    Raises:
        ValueError: if ``ranks`` is empty or holds a value < 1.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    embeddings: list[Tensor]
    labels: list[Tensor]
    sample_id: list[Tensor]
    is_gallery: list[Tensor]

    def __init__(self, ranks: Sequence[int] = (1, 5, 10), **kwargs) -> None:
        super().__init__(**kwargs)
        if not ranks or min(ranks) < 1:
            raise ValueError(f"ranks must be a non-empty sequence of integers >= 1, got {ranks}")
        self.ranks = tuple(int(k) for k in ranks)
        self.add_state("embeddings", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")
        self.add_state("sample_id", default=[], dist_reduce_fx="cat")
        self.add_state("is_gallery", default=[], dist_reduce_fx="cat")

    def update(self, embeddings: Tensor, labels: Tensor, sample_id: Tensor, is_gallery: Tensor | bool) -> None:
        """Adds a batch of gallery and/or probe samples.

        Args:
            embeddings: ``(B, D)`` embeddings.
            labels: ``(B,)`` integer identity labels.
            sample_id: ``(B,)`` integer ids, unique per sample across gallery and probes.
            is_gallery: ``(B,)`` bool, or one bool for the whole batch.

        Raises:
            ValueError: on mismatched shapes.
        """
        batch = embeddings.shape[0]
        if embeddings.ndim != 2 or labels.shape != (batch,) or sample_id.shape != (batch,):
            raise ValueError(
                "expected embeddings (B, D), labels (B,), sample_id (B,), got "
                f"{tuple(embeddings.shape)}, {tuple(labels.shape)}, {tuple(sample_id.shape)}"
            )
        flag = torch.as_tensor(is_gallery, device=embeddings.device)
        if flag.ndim == 0:
            flag = flag.expand(batch)
        if flag.shape != (batch,):
            raise ValueError(f"is_gallery must be a bool or have shape ({batch},), got {tuple(flag.shape)}")
        self.embeddings.append(embeddings.detach().float())
        self.labels.append(labels.detach().long())
        self.sample_id.append(sample_id.detach().long())
        # Stored as long: gloo cannot all-gather bool tensors.
        self.is_gallery.append(flag.long())

    def forward(  # type: ignore[override]
        self, embeddings: Tensor, labels: Tensor, sample_id: Tensor, is_gallery: Tensor | bool
    ) -> None:
        """Same as :meth:`update`: identification needs the whole gallery, so no per-batch value is computed."""
        self.update(embeddings, labels, sample_id, is_gallery)

    def compute(self) -> dict[str, float]:
        """Rank-k rates ``{"rank1": ..., "rank5": ..., ...}`` of the unique probes against the unique gallery.

        Raises:
            ValueError: if a sample id was updated with different labels or roles, or as for :func:`cmc`.
        """
        sample_id, labels, is_gallery = (
            dim_zero_cat(self.sample_id),
            dim_zero_cat(self.labels),
            dim_zero_cat(self.is_gallery),
        )
        check_consistent(sample_id, labels, "labels")
        check_consistent(sample_id, is_gallery, "is_gallery")
        embeddings, labels, is_gallery, _ = unique_by_id(sample_id, dim_zero_cat(self.embeddings), labels, is_gallery)
        gallery = is_gallery.bool()
        curve = cmc(embeddings[gallery], labels[gallery], embeddings[~gallery], labels[~gallery], max(self.ranks))
        return {f"rank{k}": float(curve[k - 1]) for k in self.ranks}
