"""``benchmarks/bench_degradation.py`` runs, and its uint8 batch is the seeds' PIL loop to a grey level."""

from __future__ import annotations

import sys

import pytest

from .conftest import REPO


@pytest.fixture()
def bench(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # it imports its sibling ``common``
    import bench_degradation

    yield bench_degradation
    sys.modules.pop("bench_degradation", None)


def test_quick_run_times_every_variant_and_agrees_with_pil(bench, tmp_path) -> None:
    results = bench.main(["--quick", "--out", str(tmp_path / "degradation.json")])
    variants = [row["variant"] for row in results["rows"]]
    assert variants[0] == "PIL per-image loop (seeds)"
    assert any("channels-last" in variant for variant in variants)
    assert all(row["ms_per_batch"] > 0 for row in results["rows"])
    assert results["max_vs_pil_grey_levels_uint8"] <= 2
    assert results["mae_vs_pil_grey_levels"] <= 0.4
    assert (tmp_path / "degradation.json").is_file()


def test_interleaved_times_every_function_each_round(bench) -> None:
    calls: list[str] = []
    seconds = bench.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3)
    assert calls == ["a", "b"] * 4  # one untimed round, then three timed ones, in turn
    assert {name: len(values) for name, values in seconds.items()} == {"a": 3, "b": 3}
