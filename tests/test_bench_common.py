"""The paired bootstrap of ``benchmarks/common.py`` that the reproduction scripts report their differences with."""

from __future__ import annotations

import sys

import pytest
import torch

from .conftest import REPO


@pytest.fixture()
def common(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import common

    yield common
    sys.modules.pop("common", None)


def _scores(num_pairs: int, probe: int, separation: float, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    issame = torch.arange(num_pairs) % 2 == 0
    out = {}
    for order in ("hr_lr", "lr_hr"):
        noise = torch.randn(num_pairs, generator=generator)
        out[f"synthetic__{order}__{probe}px__scores"] = noise + separation * issame.float()
        out[f"synthetic__{order}__{probe}px__issame"] = issame
    return out


def test_fold_bootstrap_resamples_within_each_fold(common) -> None:
    samples = common.fold_bootstrap(103, rounds=5, seed=1)
    bounds = torch.linspace(0, 103, 11).round().long().tolist()
    assert len(samples) == 5
    for sample in samples:
        assert len(sample) == 103
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            assert ((sample[lo:hi] >= lo) & (sample[lo:hi] < hi)).all()
    assert all(torch.equal(a, b) for a, b in zip(samples, common.fold_bootstrap(103, rounds=5, seed=1), strict=True))


def test_hr_lr_acc_averages_both_pair_orders(common) -> None:
    from crossres.metrics.verification import verification_metrics

    scores = _scores(200, probe=8, separation=1.0, seed=0)
    index = torch.arange(200)
    naive = [
        verification_metrics(scores[f"synthetic__{o}__8px__scores"], scores[f"synthetic__{o}__8px__issame"])["acc"]
        for o in ("hr_lr", "lr_hr")
    ]
    assert common.hr_lr_acc(scores, index, probe=8) == pytest.approx(float(sum(naive) / 2))


def test_paired_difference_interval_brackets_a_clear_gain_and_zero_for_a_model_against_itself(common) -> None:
    better = _scores(1000, probe=8, separation=3.0, seed=0)
    worse = _scores(1000, probe=8, separation=0.5, seed=1)
    samples = common.fold_bootstrap(1000, rounds=200, seed=0)
    point, low, high = common.paired_difference(better, worse, 8, samples)
    full = torch.arange(1000)
    assert point == pytest.approx(common.hr_lr_acc(better, full, 8) - common.hr_lr_acc(worse, full, 8))
    assert 0 < low <= point <= high
    assert common.paired_difference(better, better, 8, samples) == (0.0, 0.0, 0.0)
