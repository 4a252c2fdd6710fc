"""Metrics against naive, literal references written here."""

from __future__ import annotations

import json
import math
import multiprocessing
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torchmetrics.functional.classification import binary_auroc

from crossres.metrics import (
    IdentificationMetric,
    PeakSignalNoiseRatio,
    StructuralSimilarityIndexMeasure,
    VerificationMetric,
    cmc,
    cosine_scores,
    psnr,
    rank_k_accuracy,
    ssim,
    verification_metrics,
    verification_roc,
)

# ---------------------------------------------------------------------------------------------------------------------
# Naive references
# ---------------------------------------------------------------------------------------------------------------------


def naive_thresholds(scores: np.ndarray) -> list[float]:
    """-inf, midpoints of consecutive sorted unique scores, +inf (the documented candidate set)."""
    unique = sorted(set(scores.tolist()))
    return [-math.inf] + [(a + b) / 2 for a, b in zip(unique[:-1], unique[1:], strict=True)] + [math.inf]


def naive_accuracy(threshold: float, scores: np.ndarray, issame: np.ndarray) -> float:
    predict_same = scores > threshold
    return float(np.mean(predict_same == issame))


def naive_best_threshold(thresholds: list[float], scores: np.ndarray, issame: np.ndarray) -> float:
    """insightface: try every threshold; ties go to the largest threshold."""
    best_acc, best_threshold = -1.0, math.nan
    for threshold in thresholds:  # ascending
        acc = naive_accuracy(threshold, scores, issame)
        if acc >= best_acc:
            best_acc, best_threshold = acc, threshold
    return best_threshold


def naive_kfold(scores: np.ndarray, issame: np.ndarray, n_folds: int) -> tuple[float, float]:
    """insightface verification.evaluate / calculate_roc with contiguous (sklearn KFold, no shuffle) folds; the
    candidate thresholds of a fold come from its training scores."""
    n = len(scores)
    fold_sizes = [n // n_folds + (1 if f < n % n_folds else 0) for f in range(n_folds)]
    accuracies = []
    start = 0
    for size in fold_sizes:
        test = np.arange(start, start + size)
        train = np.setdiff1d(np.arange(n), test)
        start += size
        threshold = naive_best_threshold(naive_thresholds(scores[train]), scores[train], issame[train])
        accuracies.append(naive_accuracy(threshold, scores[test], issame[test]))
    return float(np.mean(accuracies)), float(np.std(accuracies))


def naive_roc_points(scores: np.ndarray, issame: np.ndarray) -> list[tuple[float, float]]:
    """(FPR, TPR) for every candidate threshold, from the strictest (+inf) to the loosest (-inf)."""
    points = []
    for threshold in reversed(naive_thresholds(scores)):
        accept = scores > threshold
        points.append(
            (float(np.sum(accept & ~issame) / np.sum(~issame)), float(np.sum(accept & issame) / np.sum(issame)))
        )
    return points


def naive_tar_at_far(scores: np.ndarray, issame: np.ndarray, far: float) -> float:
    return max(tpr for fpr, tpr in naive_roc_points(scores, issame) if fpr <= far)


def naive_eer(scores: np.ndarray, issame: np.ndarray) -> float:
    """Walk the ROC polyline until FPR crosses FNR = 1 - TPR; interpolate linearly inside the segment."""
    points = naive_roc_points(scores, issame)
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:], strict=True):
        d0, d1 = x0 - (1 - y0), x1 - (1 - y1)  # FPR - FNR, increasing along the curve
        if d0 == 0:
            return x0
        if d0 < 0 <= d1:
            return x0 + (0 - d0) / (d1 - d0) * (x1 - x0)
    raise AssertionError("ROC never crossed FPR = FNR")


def naive_auc(scores: np.ndarray, issame: np.ndarray) -> float:
    """Mann-Whitney: fraction of (same, different) pairs ranked correctly, ties count 1/2."""
    positives, negatives = scores[issame], scores[~issame]
    wins = 0.0
    for p in positives:
        wins += float(np.sum(p > negatives)) + 0.5 * float(np.sum(p == negatives))
    return wins / (len(positives) * len(negatives))


def make_pairs(n: int, seed: int, decimals: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlapping Gaussian score distributions (same ~ N(0.45, 0.15), different ~ N(0.1, 0.15))."""
    g = torch.Generator().manual_seed(seed)
    issame = torch.rand(n, generator=g) < 0.5
    scores = torch.where(issame, 0.45, 0.1) + 0.15 * torch.randn(n, generator=g)
    if decimals is not None:
        scores = torch.round(scores, decimals=decimals)
    return scores.float(), issame


CASES = {
    "gauss600": make_pairs(600, 0),
    "gauss537_uneven_folds": make_pairs(537, 1),
    "ties_2_decimals": make_pairs(600, 2, decimals=2),
    "heavy_ties_1_decimal": make_pairs(400, 3, decimals=1),
    "uniform_random": (
        torch.rand(300, generator=torch.Generator().manual_seed(4)),
        torch.rand(300, generator=torch.Generator().manual_seed(5)) < 0.3,
    ),
    "few_values": (torch.tensor([0.0, 0.5, 1.0] * 40), torch.tensor(([True] * 2 + [False] * 3) * 24)),
}

# ---------------------------------------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("n_folds", [10, 7])
def test_kfold_accuracy_matches_naive(name: str, n_folds: int) -> None:
    scores, issame = CASES[name]
    result = verification_metrics(scores, issame, n_folds=n_folds)
    acc, acc_std = naive_kfold(scores.double().numpy(), issame.numpy(), n_folds)
    assert result["acc"] == pytest.approx(acc, abs=1e-12)
    assert result["acc_std"] == pytest.approx(acc_std, abs=1e-12)


def test_kfold_small_random_cases_match_naive() -> None:
    """Imbalanced and tie-heavy small sets, where folds pick the +-inf thresholds too."""
    g = torch.Generator().manual_seed(7)
    for _ in range(60):
        n = int(torch.randint(10, 60, (1,), generator=g))
        positive_rate = float(torch.rand(1, generator=g)) * 0.9 + 0.05
        issame = torch.rand(n, generator=g) < positive_rate
        if issame.all() or not issame.any():
            continue
        levels = int(torch.randint(2, 12, (1,), generator=g))
        scores = torch.randint(0, levels, (n,), generator=g).float() / levels + 0.3 * issame * float(
            torch.rand(1, generator=g)
        )
        n_folds = int(torch.randint(2, 11, (1,), generator=g))
        result = verification_metrics(scores, issame, n_folds=n_folds, far=0.1)
        s, y = scores.double().numpy(), issame.numpy()
        acc, acc_std = naive_kfold(s, y, n_folds)
        assert result["acc"] == pytest.approx(acc, abs=1e-12)
        assert result["acc_std"] == pytest.approx(acc_std, abs=1e-12)
        assert result["tar_at_far"] == pytest.approx(naive_tar_at_far(s, y, 0.1), abs=1e-12)
        assert result["eer"] == pytest.approx(naive_eer(s, y), abs=1e-9)
        assert result["auc"] == pytest.approx(naive_auc(s, y), abs=1e-12)


@pytest.mark.parametrize("name", list(CASES))
def test_threshold_tar_eer_auc_match_naive(name: str) -> None:
    scores, issame = CASES[name]
    s, y = scores.double().numpy(), issame.numpy()
    result = verification_metrics(scores, issame, far=0.05)
    threshold = naive_best_threshold(naive_thresholds(s), s, y)
    assert result["threshold"] == threshold
    assert result["best_acc"] == pytest.approx(naive_accuracy(threshold, s, y), abs=1e-12)
    assert result["tar_at_far"] == pytest.approx(naive_tar_at_far(s, y, 0.05), abs=1e-12)
    assert result["eer"] == pytest.approx(naive_eer(s, y), abs=1e-9)
    assert result["auc"] == pytest.approx(naive_auc(s, y), abs=1e-12)
    assert result["auc"] == pytest.approx(float(binary_auroc(scores, issame.long())), abs=1e-5)
    for far in (0.0, 1e-3, 0.3, 1.0):
        assert verification_metrics(scores, issame, far=far)["tar_at_far"] == pytest.approx(
            naive_tar_at_far(s, y, far), abs=1e-12
        )


def test_perfect_separation_and_sanity() -> None:
    issame = torch.tensor([True, False] * 50)
    scores = torch.where(issame, 0.8, 0.2) + 0.01 * torch.randn(100, generator=torch.Generator().manual_seed(0))
    result = verification_metrics(scores, issame)
    assert result["acc"] == 1.0 and result["best_acc"] == 1.0 and result["acc_std"] == 0.0
    assert result["auc"] == 1.0 and result["eer"] == 0.0 and result["tar_at_far"] == 1.0
    assert 0.2 < result["threshold"] < 0.8
    # Reversed scores: everything wrong except the degenerate all-reject/all-accept thresholds.
    flipped = verification_metrics(-scores, issame)
    assert flipped["auc"] == 0.0 and flipped["eer"] == 1.0 and flipped["best_acc"] == 0.5


def test_roc_is_monotone_and_ends_at_corners() -> None:
    scores, issame = CASES["ties_2_decimals"]
    fpr, tpr, thresholds = verification_roc(scores, issame)
    assert thresholds[0] == -math.inf and thresholds[-1] == math.inf
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (1.0, 1.0, 0.0, 0.0)
    assert bool((fpr.diff() <= 0).all() and (tpr.diff() <= 0).all() and (thresholds.diff() > 0).all())
    naive = list(reversed(naive_roc_points(scores.double().numpy(), issame.numpy())))
    assert torch.allclose(torch.stack([fpr, tpr], 1), torch.tensor(naive, dtype=torch.float64), atol=1e-12)


def test_order_of_pairs_defines_the_folds() -> None:
    scores, issame = CASES["gauss600"]
    perm = torch.randperm(600, generator=torch.Generator().manual_seed(0))
    a, b = verification_metrics(scores, issame), verification_metrics(scores[perm], issame[perm])
    # Folds differ, order-free quantities do not.
    for key in ("threshold", "best_acc", "tar_at_far", "eer", "auc"):
        assert a[key] == pytest.approx(b[key], abs=1e-12)


def test_errors() -> None:
    scores, issame = CASES["gauss600"]
    with pytest.raises(ValueError, match="same length"):
        verification_metrics(scores, issame[:-1])
    with pytest.raises(ValueError, match="at least n_folds"):
        verification_metrics(scores[:9], torch.tensor([True, False] * 4 + [True]))
    with pytest.raises(ValueError, match="both same and different"):
        verification_metrics(scores, torch.ones(600, dtype=torch.bool))
    with pytest.raises(ValueError, match="finite"):
        verification_metrics(torch.tensor([math.nan] + [0.0] * 19), torch.tensor([True, False] * 10))
    with pytest.raises(ValueError, match="0/1"):
        verification_metrics(scores, torch.full((600,), 2))


def test_speed_12000_pairs() -> None:
    scores, issame = make_pairs(12000, 5)
    verification_metrics(scores, issame)
    start = time.perf_counter()
    verification_metrics(scores, issame)
    assert time.perf_counter() - start < 1.0


def test_cosine_scores() -> None:
    a, b = torch.randn(20, 8), torch.randn(20, 8)
    expected = torch.tensor([float(x @ y / (x.norm() * y.norm())) for x, y in zip(a, b, strict=True)])
    assert torch.allclose(cosine_scores(a, 3 * b), expected, atol=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        cosine_scores(a, b[:, :4])


def padded_batches(n: int, world_size: int, seed: int) -> list[list[torch.Tensor]]:
    """Index batches per rank as DistributedSampler(shuffle=False) deals them: rank r gets r, r + W, ..., padded by
    repeating the first indices so every rank has the same count."""
    total = math.ceil(n / world_size) * world_size
    indices = list(range(n)) + list(range(total - n))
    per_rank = [torch.tensor(indices[r::world_size]) for r in range(world_size)]
    g = torch.Generator().manual_seed(seed)
    return [list(torch.split(idx[torch.randperm(len(idx), generator=g)], 37)) for idx in per_rank]


def test_metric_deduplicates_and_ignores_update_order() -> None:
    scores, issame = CASES["gauss537_uneven_folds"]
    expected = verification_metrics(scores, issame)
    batches = [b for rank in padded_batches(537, 4, seed=0) for b in rank]  # 540 = 537 + 3 padded repeats
    assert sum(len(b) for b in batches) == 540
    for order in (batches, batches[::-1]):
        metric = VerificationMetric()
        for idx in order:
            assert metric(scores[idx], issame[idx], idx) is None  # forward only accumulates
        assert metric.compute() == expected
        metric.reset()
        with pytest.raises(ValueError):
            metric.compute()
    with pytest.raises(ValueError, match="different issame"):
        metric = VerificationMetric()
        metric.update(scores[:20], issame[:20], torch.arange(20))
        metric.update(scores[:1], ~issame[:1], torch.arange(1))
        metric.compute()


def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        scores, issame = CASES["gauss537_uneven_folds"]
        metric = VerificationMetric()
        for idx in padded_batches(537, world_size, seed=1)[rank]:
            metric.update(scores[idx], issame[idx], idx)
        gallery, probe = _identification_data()
        ident = IdentificationMetric(ranks=(1, 3))
        n_gallery, n = gallery[0].shape[0], gallery[0].shape[0] + probe[0].shape[0]
        embeddings, labels = torch.cat([gallery[0], probe[0]]), torch.cat([gallery[1], probe[1]])
        for idx in padded_batches(n, world_size, seed=2)[rank]:
            ident.update(embeddings[idx], labels[idx], idx, idx < n_gallery)
        result = {"verification": metric.compute(), "identification": ident.compute()}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_ddp_two_processes_match_single_process(tmp_path: Path) -> None:
    # fork (where available) skips re-importing torch and torchmetrics in each child; the worker sets 1 thread first,
    # as DataLoader workers do, so the forked OpenMP runtime is never asked for a thread team.
    start_method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    args = (2, str(tmp_path / "init"), str(tmp_path))
    mp.start_processes(_ddp_worker, args=args, nprocs=2, join=True, start_method=start_method)
    scores, issame = CASES["gauss537_uneven_folds"]
    gallery, probe = _identification_data()
    expected_ident = {
        "rank1": rank_k_accuracy(*gallery, *probe, k=1),
        "rank3": rank_k_accuracy(*gallery, *probe, k=3),
    }
    for rank in range(2):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result["verification"] == verification_metrics(scores, issame)
        assert result["identification"] == expected_ident


# ---------------------------------------------------------------------------------------------------------------------
# Identification
# ---------------------------------------------------------------------------------------------------------------------


def _identification_data(
    n_ids: int = 12, gallery_per_id: int = 2, probes_per_id: int = 4, seed: int = 0
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_ids, 16, generator=g)
    gallery_labels = torch.arange(n_ids).repeat_interleave(gallery_per_id) * 7 + 3  # non-contiguous labels
    probe_labels = torch.arange(n_ids).repeat_interleave(probes_per_id) * 7 + 3
    gallery = centres[(gallery_labels - 3) // 7] + 0.8 * torch.randn(len(gallery_labels), 16, generator=g)
    probe = centres[(probe_labels - 3) // 7] + 1.2 * torch.randn(len(probe_labels), 16, generator=g)
    return (gallery, gallery_labels), (probe, probe_labels)


def naive_cmc(gallery, gallery_labels, probe, probe_labels, max_rank):
    ranks = []
    identities = sorted(set(gallery_labels.tolist()))
    for p, label in zip(probe, probe_labels.tolist(), strict=True):
        score = {}
        for identity in identities:
            score[identity] = max(
                float(p @ x / (p.norm() * x.norm()))
                for x, y in zip(gallery, gallery_labels.tolist(), strict=True)
                if y == identity
            )
        # Pessimistic ties: other identities scoring >= the true one rank ahead of it.
        ranks.append(1 + sum(1 for i in identities if i != label and score[i] >= score[label]))
    return [sum(r <= k for r in ranks) / len(ranks) for k in range(1, max_rank + 1)]


@pytest.mark.parametrize("gallery_per_id", [1, 3])
def test_cmc_matches_naive(gallery_per_id: int) -> None:
    gallery, probe = _identification_data(gallery_per_id=gallery_per_id, seed=gallery_per_id)
    curve = cmc(*gallery, *probe, max_rank=15)
    expected = naive_cmc(*gallery, *probe, max_rank=15)
    assert curve.shape == (15,)
    assert torch.allclose(curve, torch.tensor(expected, dtype=torch.float64), atol=1e-12)
    assert curve[-1] == 1.0  # 12 identities: everyone is found by rank 12
    assert rank_k_accuracy(*gallery, *probe, k=1) == expected[0]


def test_cmc_ties_count_against_the_probe() -> None:
    gallery = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 2])
    curve = cmc(gallery, labels, torch.tensor([[1.0, 0.0]]), torch.tensor([0]), max_rank=3)
    assert curve.tolist() == [0.0, 1.0, 1.0]


def test_cmc_errors() -> None:
    gallery, probe = _identification_data()
    with pytest.raises(ValueError, match="absent from the gallery"):
        cmc(*gallery, probe[0], probe[1] + 1)
    with pytest.raises(ValueError, match="probe_labels"):
        cmc(*gallery, probe[0], probe[1][:-1])


def test_identification_metric_deduplicates() -> None:
    gallery, probe = _identification_data()
    n_gallery = gallery[0].shape[0]
    embeddings, labels = torch.cat([gallery[0], probe[0]]), torch.cat([gallery[1], probe[1]])
    metric = IdentificationMetric(ranks=(1, 5))
    for rank in padded_batches(len(labels), 3, seed=0):
        for idx in rank:
            metric.update(embeddings[idx], labels[idx], idx, idx < n_gallery)
    curve = cmc(*gallery, *probe, max_rank=5)
    assert metric.compute() == {"rank1": float(curve[0]), "rank5": float(curve[4])}
    # Whole-batch role flag.
    metric = IdentificationMetric(ranks=(1,))
    metric.update(*probe, torch.arange(len(probe[1])) + 1000, False)
    metric.update(*gallery, torch.arange(n_gallery), True)
    assert metric.compute() == {"rank1": float(curve[0])}


# ---------------------------------------------------------------------------------------------------------------------
# Image quality
# ---------------------------------------------------------------------------------------------------------------------


def test_psnr_ssim() -> None:
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(4, 3, 32, 32, generator=g)
    sr = (hr + 0.05 * torch.randn(4, 3, 32, 32, generator=g)).clamp(0, 1)
    assert psnr(hr, hr) == math.inf or psnr(hr, hr) > 100
    assert float(ssim(hr, hr)) == pytest.approx(1.0, abs=1e-6)
    # Per-image PSNR = 10 log10(1 / MSE), averaged over the batch.
    expected = sum(10 * math.log10(1 / float(((s - h) ** 2).mean())) for s, h in zip(sr, hr, strict=True)) / 4
    assert float(psnr(sr, hr)) == pytest.approx(expected, rel=1e-5)
    assert 0 < float(ssim(sr, hr)) < 1
    psnr_metric, ssim_metric = PeakSignalNoiseRatio(), StructuralSimilarityIndexMeasure()
    for i in range(2):
        psnr_metric.update(sr[2 * i : 2 * i + 2], hr[2 * i : 2 * i + 2])
        ssim_metric.update(sr[2 * i : 2 * i + 2], hr[2 * i : 2 * i + 2])
    assert float(psnr_metric.compute()) == pytest.approx(expected, rel=1e-5)
    assert float(ssim_metric.compute()) == pytest.approx(float(ssim(sr, hr)), abs=1e-6)
