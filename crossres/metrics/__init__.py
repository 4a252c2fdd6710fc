"""Evaluation metrics: pure functions and the torchmetrics ``Metric`` classes that call them."""

from crossres.metrics.identification import IdentificationMetric, cmc, probe_ranks, rank_k_accuracy
from crossres.metrics.identity import IdentityJudge
from crossres.metrics.image_quality import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure, psnr, ssim
from crossres.metrics.verification import (
    VerificationMetric,
    check_consistent,
    cosine_scores,
    unique_by_id,
    verification_metrics,
    verification_roc,
)

__all__ = [
    "IdentificationMetric",
    "IdentityJudge",
    "PeakSignalNoiseRatio",
    "StructuralSimilarityIndexMeasure",
    "VerificationMetric",
    "check_consistent",
    "cmc",
    "cosine_scores",
    "probe_ranks",
    "psnr",
    "rank_k_accuracy",
    "ssim",
    "unique_by_id",
    "verification_metrics",
    "verification_roc",
]
