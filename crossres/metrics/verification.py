"""Face verification metrics: LFW 10-fold accuracy, TAR@FAR, EER, ROC AUC.

Conventions shared by every function here:

* Scores are cosine *similarities* (higher = more alike); a pair is predicted "same" iff
  ``score > threshold`` (strict), the mirror image of insightface's ``dist < threshold``.
* Candidate thresholds are exact and come from the pairs the threshold is *chosen on* (the training folds for
  ``acc``, all pairs for ``threshold``/ROC): with ``u_0 < ... < u_{m-1}`` their sorted unique scores, the candidates
  are ``[-inf, (u_0 + u_1) / 2, ..., (u_{m-2} + u_{m-1}) / 2, +inf]``. Every distinct operating point on those pairs
  is tried once, tied scores fall on the same side, and a chosen threshold sits mid-gap between two scores of the
  pairs it was chosen on. Midpoints are computed in float64, exact for float32 scores.
* Ties between candidates of equal accuracy go to the *largest* threshold (the strictest one, accepting the fewest
  pairs). This is what insightface's ``np.argmax`` over ascending *distance* thresholds picks.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

__all__ = [
    "cosine_scores",
    "verification_metrics",
    "verification_roc",
    "VerificationMetric",
    "unique_by_id",
    "check_consistent",
]


def cosine_scores(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cosine similarity of two embedding batches.

    Args:
        a: ``(N, D)`` embeddings of the first images of ``N`` pairs.
        b: ``(N, D)`` embeddings of the second images.

    Returns:
        ``(N,)`` cosine similarities in ``[-1, 1]`` (embeddings are L2-normalised first).

    Raises:
        ValueError: if ``a`` and ``b`` are not 2-D tensors of the same shape.
    """
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"cosine_scores expects a and b of the same shape (N, D), got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    a = torch.nn.functional.normalize(a, dim=1)
    b = torch.nn.functional.normalize(b, dim=1)
    return (a * b).sum(dim=1)


def _check_pairs(scores: Tensor, issame: Tensor) -> tuple[Tensor, Tensor]:
    """Validates a pair list and returns it as CPU ``float64`` scores and ``bool`` labels."""
    if scores.ndim != 1 or issame.ndim != 1 or scores.shape != issame.shape:
        raise ValueError(
            f"scores and issame must be 1-D tensors of the same length, got shapes {tuple(scores.shape)} "
            f"and {tuple(issame.shape)}"
        )
    scores = scores.detach().to("cpu", torch.float64)
    issame_cpu = issame.detach().cpu()
    if issame_cpu.dtype != torch.bool:
        if not bool(((issame_cpu == 0) | (issame_cpu == 1)).all()):
            raise ValueError("issame must be boolean or hold only 0/1 values")
        issame_cpu = issame_cpu.bool()
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("scores must be finite (got NaN or inf); check the embeddings")
    n_pos = int(issame_cpu.sum())
    if n_pos == 0 or n_pos == issame_cpu.numel():
        raise ValueError(
            f"verification needs both same and different pairs, got {n_pos} same of {issame_cpu.numel()} pairs"
        )
    return scores, issame_cpu


def _unique_index(scores: Tensor) -> tuple[Tensor, Tensor]:
    """Sorted unique scores ``u`` and, per pair, the index of its score in ``u``."""
    return torch.unique(scores, sorted=True, return_inverse=True)


def _candidate_thresholds(unique_scores: Tensor) -> Tensor:
    """The ``m + 1`` candidate thresholds (see the module docstring) for ``m`` sorted unique scores."""
    inf = torch.tensor([float("inf")], dtype=unique_scores.dtype)
    midpoints = (unique_scores[:-1] + unique_scores[1:]) / 2
    return torch.cat([-inf, midpoints, inf])


def _operating_counts(pos: Tensor, neg: Tensor) -> tuple[Tensor, Tensor]:
    """True and false accepts at every candidate threshold.

    Args:
        pos: ``(..., m)`` number of same pairs at each unique score.
        neg: ``(..., m)`` number of different pairs at each unique score.

    Returns:
        ``(..., m + 1)`` true accepts (same pairs with index ``>= j``) and false accepts (different pairs with
        index ``>= j``) for candidate ``j``.
    """
    zeros = torch.zeros_like(pos[..., :1])
    # Reverse cumulative sums: accepts(j) = sum_{k >= j} count(k).
    true_accepts = torch.cat([pos.flip(-1).cumsum(-1).flip(-1), zeros], dim=-1)
    false_accepts = torch.cat([neg.flip(-1).cumsum(-1).flip(-1), zeros], dim=-1)
    return true_accepts, false_accepts


def _best_candidate(correct: Tensor) -> Tensor:
    """Index of the largest candidate among those with the most correct decisions (ties -> strictest threshold)."""
    n_candidates = correct.shape[-1]
    return n_candidates - 1 - correct.flip(-1).argmax(dim=-1)


def _fold_bounds(n_pairs: int, n_folds: int) -> list[int]:
    """Contiguous fold boundaries; the first ``n_pairs % n_folds`` folds get one extra pair (sklearn ``KFold``)."""
    sizes = [n_pairs // n_folds + (1 if f < n_pairs % n_folds else 0) for f in range(n_folds)]
    bounds = [0]
    for size in sizes:
        bounds.append(bounds[-1] + size)
    return bounds


def verification_roc(scores: Tensor, issame: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """ROC over the exact candidate thresholds (see the module docstring).

    Args:
        scores: ``(N,)`` cosine similarities.
        issame: ``(N,)`` bool (or 0/1) labels, ``True`` for same-identity pairs.

    Returns:
        ``(fpr, tpr, thresholds)``, each ``(m + 1,)`` float64 for ``m`` unique scores, thresholds ascending (so rates
        descending from ``(1, 1)`` at ``-inf`` to ``(0, 0)`` at ``+inf``).

    Raises:
        ValueError: on shape mismatch, non-finite scores, or a single class.
    """
    scores, issame = _check_pairs(scores, issame)
    unique_scores, index = _unique_index(scores)
    m = unique_scores.numel()
    pos = torch.zeros(m, dtype=torch.float64).index_add_(0, index, issame.double())
    neg = torch.zeros(m, dtype=torch.float64).index_add_(0, index, (~issame).double())
    true_accepts, false_accepts = _operating_counts(pos, neg)
    return false_accepts / neg.sum(), true_accepts / pos.sum(), _candidate_thresholds(unique_scores)


def _equal_error_rate(fpr: Tensor, tpr: Tensor) -> float:
    """EER where the piecewise-linear ROC crosses ``FPR = FNR``, i.e. ``FPR + TPR = 1``.

    Along the ROC polyline ``h = FPR + TPR`` strictly increases between distinct points, so the crossing is unique.
    This equals facenet/insightface's ``brentq(lambda x: 1 - x - interp1d(fpr, tpr)(x), 0, 1)`` wherever
    ``interp1d`` is well defined.
    """
    # Points in increasing FPR/TPR order (from +inf threshold to -inf).
    x, y = fpr.flip(0), tpr.flip(0)
    h = x + y
    k = int(torch.searchsorted(h, torch.tensor([1.0], dtype=h.dtype)).item())  # first point with h >= 1
    if h[k] == 1.0 or k == 0:
        return float(x[k])
    x0, x1, h0, h1 = x[k - 1], x[k], h[k - 1], h[k]
    return float(x0 + (1.0 - h0) / (h1 - h0) * (x1 - x0))


def verification_metrics(scores: Tensor, issame: Tensor, n_folds: int = 10, far: float = 1e-3) -> dict[str, float]:
    """Verification metrics of a pair list, LFW protocol.

    ``acc``/``acc_std`` follow insightface's ``verification.evaluate``: ``n_folds`` contiguous folds over the pairs in
    the given order (no shuffle; the first ``N % n_folds`` folds hold one extra pair, as sklearn ``KFold``); for each
    fold the threshold maximising the accuracy on the other folds is applied to the held-out fold; mean and population
    std (``ddof=0``, as ``np.std``) of the held-out accuracies. Candidate thresholds (midpoints of the training folds'
    unique scores, plus +-inf) and tie-breaking (largest threshold) are described in the module docstring. Sorting
    plus cumulative sums of per-fold histograms over the unique scores make this ``O(N log N + n_folds * N)``.

    Args:
        scores: ``(N,)`` cosine similarities, higher = same person.
        issame: ``(N,)`` bool (or 0/1) labels, ``True`` for same-identity pairs.
        n_folds: number of cross-validation folds (10 for LFW).
        far: false accept rate for ``tar_at_far``.

    Returns:
        ``acc``, ``acc_std``: fold accuracy mean and std; ``threshold``, ``best_acc``: the best threshold chosen on all
        pairs and its accuracy; ``tar_at_far``: the largest TAR over candidate thresholds with ``FAR <= far``
        (``FAR = false accepts / different pairs``, in float64); ``eer``: where the piecewise-linear ROC crosses
        ``FPR = FNR``; ``auc``: ROC AUC, the Mann-Whitney statistic with tied scores counted as 1/2 (equal to the
        trapezoidal AUC, e.g. torchmetrics ``binary_auroc``).

    Raises:
        ValueError: on shape mismatch, non-finite scores, a single class, ``n_folds < 2``, fewer pairs than folds,
            or ``far`` outside ``[0, 1]``.
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    if not 0.0 <= far <= 1.0:
        raise ValueError(f"far must be in [0, 1], got {far}")
    scores, issame = _check_pairs(scores, issame)
    n_pairs = scores.numel()
    if n_pairs < n_folds:
        raise ValueError(f"need at least n_folds={n_folds} pairs for {n_folds}-fold accuracy, got {n_pairs}")

    unique_scores, index = _unique_index(scores)
    m = unique_scores.numel()
    thresholds = _candidate_thresholds(unique_scores)

    # Per-fold histograms of same/different pairs over the unique scores: (n_folds, m), exact integer counts.
    bounds = _fold_bounds(n_pairs, n_folds)
    fold_sizes = torch.tensor(bounds[1:]) - torch.tensor(bounds[:-1])
    fold_of_pair = torch.repeat_interleave(torch.arange(n_folds), fold_sizes)
    flat = fold_of_pair * m + index
    pos = torch.zeros(n_folds * m, dtype=torch.long).index_add_(0, flat, issame.long()).view(n_folds, m)
    neg = torch.zeros(n_folds * m, dtype=torch.long).index_add_(0, flat, (~issame).long()).view(n_folds, m)

    # Correct decisions at global candidate j (accept index >= j): same pairs accepted + different pairs rejected.
    fold_ta, fold_fa = _operating_counts(pos, neg)  # (n_folds, m + 1)
    fold_correct = fold_ta + (neg.sum(-1, keepdim=True) - fold_fa)
    all_correct = fold_correct.sum(0)  # (m + 1,)
    train_correct = all_correct.unsqueeze(0) - fold_correct  # the other n_folds - 1 folds
    # Train accuracy only changes at training scores, so the largest best global candidate j lies just below a
    # training score u_j (or is +inf); the largest best *training* candidate is the midpoint of u_j and the next
    # lower training score (-inf if there is none).
    best = _best_candidate(train_correct)  # (n_folds,)
    in_train = (pos + neg).sum(0, keepdim=True) - (pos + neg) > 0  # (n_folds, m)
    positions = torch.arange(m).expand(n_folds, m)
    last_train_at_or_below = torch.where(in_train, positions, -1).cummax(dim=1).values
    below = last_train_at_or_below.gather(1, (best - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
    below = torch.where(best > 0, below, -1)
    upper = unique_scores[best.clamp(max=m - 1)]
    lower = unique_scores[below.clamp(min=0)]
    fold_threshold = torch.where(below >= 0, (lower + upper) / 2, float("-inf"))
    fold_threshold = torch.where(best == m, float("inf"), fold_threshold)
    correct = (scores > fold_threshold[fold_of_pair]) == issame
    fold_acc = torch.zeros(n_folds, dtype=torch.float64).index_add_(0, fold_of_pair, correct.double()) / fold_sizes

    best_all = int(_best_candidate(all_correct))
    true_accepts, false_accepts = fold_ta.sum(0).double(), fold_fa.sum(0).double()
    n_pos, n_neg = float(issame.sum()), float(n_pairs - issame.sum())
    fpr, tpr = false_accepts / n_neg, true_accepts / n_pos
    # FPR and TPR both decrease with j: the largest TAR with FAR <= far is at the first such candidate.
    tar_at_far = float(tpr[fpr <= far].max())

    # Mann-Whitney U: sum over unique scores of pos(k) * (neg below k + neg(k) / 2), over n_pos * n_neg.
    pos_total, neg_total = pos.sum(0).double(), neg.sum(0).double()
    neg_below = neg_total.cumsum(0) - neg_total
    auc = float((pos_total * (neg_below + neg_total / 2)).sum() / (n_pos * n_neg))

    return {
        "acc": float(fold_acc.mean()),
        "acc_std": float(fold_acc.std(unbiased=False)),
        "threshold": float(thresholds[best_all]),
        "best_acc": float(all_correct[best_all].double() / n_pairs),
        "tar_at_far": tar_at_far,
        "eer": _equal_error_rate(fpr, tpr),
        "auc": auc,
    }


class VerificationMetric(Metric):
    """Accumulates ``(score, issame, pair_id)`` over batches and ranks and computes :func:`verification_metrics`.

    ``compute`` keeps one occurrence per ``pair_id`` (``DistributedSampler`` pads the last batch with repeated
    samples) and sorts by ``pair_id`` before the folds are cut, so the result under DDP equals the 1-process result.

    Args:
        n_folds: number of cross-validation folds.
        far: false accept rate for ``tar_at_far``.
        **kwargs: forwarded to :class:`torchmetrics.Metric`.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    scores: list[Tensor]
    issame: list[Tensor]
    pair_id: list[Tensor]

    def __init__(self, n_folds: int = 10, far: float = 1e-3, **kwargs) -> None:
        super().__init__(**kwargs)
        self.n_folds = n_folds
        self.far = far
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("issame", default=[], dist_reduce_fx="cat")
        self.add_state("pair_id", default=[], dist_reduce_fx="cat")

    def update(self, scores: Tensor, issame: Tensor, pair_id: Tensor) -> None:
        """Adds a batch of pairs.

        Args:
            scores: ``(B,)`` cosine similarities.
            issame: ``(B,)`` bool (or 0/1) labels.
            pair_id: ``(B,)`` integer ids, unique per pair within the pair set.

        Raises:
            ValueError: if the three tensors are not 1-D of the same length.
        """
        if not (scores.ndim == issame.ndim == pair_id.ndim == 1 and scores.shape == issame.shape == pair_id.shape):
            raise ValueError(
                "scores, issame and pair_id must be 1-D tensors of the same length, got shapes "
                f"{tuple(scores.shape)}, {tuple(issame.shape)}, {tuple(pair_id.shape)}"
            )
        self.scores.append(scores.detach() if scores.dtype == torch.float64 else scores.detach().float())
        # Stored as long: gloo cannot all-gather bool tensors.
        self.issame.append(issame.detach().long())
        self.pair_id.append(pair_id.detach().long())

    def forward(self, scores: Tensor, issame: Tensor, pair_id: Tensor) -> None:  # type: ignore[override]
        """Same as :meth:`update`: 10-fold accuracy of a single batch means nothing, so none is computed."""
        self.update(scores, issame, pair_id)

    def compute(self) -> dict[str, float]:
        """Verification metrics of the unique pairs in ``pair_id`` order.

        Raises:
            ValueError: if a ``pair_id`` was seen with different ``issame`` labels, or as for
                :func:`verification_metrics`.
        """
        pair_id, issame = dim_zero_cat(self.pair_id), dim_zero_cat(self.issame)
        check_consistent(pair_id, issame, "issame")
        scores, issame, pair_id = unique_by_id(pair_id, dim_zero_cat(self.scores), issame)
        #: The de-duplicated ``(pair_id, scores, issame)`` behind the last result, for reports and plots.
        self.last_scores = (pair_id, scores, issame.bool())
        return verification_metrics(scores, issame.bool(), n_folds=self.n_folds, far=self.far)


def unique_by_id(ids: Tensor, *values: Tensor) -> tuple[Tensor, ...]:
    """Keeps the first occurrence of each id and sorts everything by id.

    Used by the metrics to undo ``DistributedSampler`` padding, which repeats samples to even out the ranks.

    Args:
        ids: ``(N,)`` integer ids.
        *values: tensors with ``N`` rows, reordered alongside ``ids``.

    Returns:
        ``(*values_unique, ids_unique)``, every tensor sorted by id with duplicates dropped.

    Raises:
        ValueError: if a tensor does not have ``N`` rows.
    """
    for value in values:
        if value.shape[0] != ids.shape[0]:
            raise ValueError(
                f"expected {ids.shape[0]} rows to match the ids, got a tensor of shape {tuple(value.shape)}"
            )
    order = torch.argsort(ids, stable=True)
    sorted_ids = ids[order]
    keep = torch.ones_like(sorted_ids, dtype=torch.bool)
    keep[1:] = sorted_ids[1:] != sorted_ids[:-1]
    kept = order[keep]
    return (*(value[kept] for value in values), ids[kept])


def check_consistent(ids: Tensor, labels: Tensor, name: str) -> None:
    """Checks that every repeated id carries the same label.

    Args:
        ids: ``(N,)`` integer ids.
        labels: ``(N,)`` integer labels.
        name: the label's name, for the error message.

    Raises:
        ValueError: if an id occurs with two different labels.
    """
    n_ids = torch.unique(ids).numel()
    n_id_label = torch.unique(torch.stack([ids.long(), labels.long()]), dim=1).shape[1]
    if n_id_label != n_ids:
        raise ValueError(
            f"{n_id_label - n_ids} ids were updated with different {name} values; ids must identify one sample "
            "(repeats are expected only from DistributedSampler padding)"
        )
