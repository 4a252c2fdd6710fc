"""Helpers shared by the ``bench_*.py`` and ``reproduce_*.py`` scripts: the machine they ran on, timing, tables, JSON
results, paired bootstrap intervals of accuracy differences.

Not a benchmark itself; the scripts import it as ``common`` (``python benchmarks/bench_x.py`` puts ``benchmarks/`` on
``sys.path``).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]


def machine() -> dict[str, Any]:
    """What the numbers were measured on, and how busy it was when the script started."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def quiet_lightning() -> None:
    """Keep Lightning's start-up notices (accelerators, tips) out of the benchmark's output; warnings still show."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], Any], repeats: int, device: torch.device, warmup: int = 1) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls, synchronising the device."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    seconds: list[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def median_ms(seconds: Sequence[float]) -> float:
    """Median of timings in seconds, in milliseconds."""
    return 1000.0 * statistics.median(seconds)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table of ``rows`` (floats with 3 significant digits, missing cells as ``-``)."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row.get(column)) for column in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str | Path | None, payload: dict[str, Any]) -> None:
    """Write ``payload`` (with the command line that produced it) to ``path``, creating folders; no-op for None."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"command": " ".join([Path(sys.executable).name, *sys.argv])} | payload
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"results written to {path}")


def hr_lr_acc(scores: dict[str, torch.Tensor], index: torch.Tensor, probe: int, pair_set: str = "synthetic") -> float:
    """HR-LR accuracy as crossres reports it (both pair orders averaged) on the pairs ``index`` of ``scores``.

    Args:
        scores: a method's ``eval_scores[split]`` (``<set>__<order>__<probe>px__scores`` / ``__issame`` tensors).
        index: pair indices (a bootstrap sample, or all pairs).
        probe: probe side in px.
        pair_set: the pair set's name.
    """
    from crossres.metrics.verification import verification_metrics

    accs = []
    for order in ("hr_lr", "lr_hr"):
        key = f"{pair_set}__{order}__{probe}px"
        accs.append(verification_metrics(scores[f"{key}__scores"][index], scores[f"{key}__issame"][index])["acc"])
    return float(sum(accs) / 2)


def fold_bootstrap(num_pairs: int, rounds: int, seed: int = 0) -> list[torch.Tensor]:
    """Pair indices resampled with replacement within each of the 10 contiguous folds (the folds stay folds).

    Args:
        num_pairs: pairs in the set.
        rounds: bootstrap samples.
        seed: generator seed.
    """
    generator = torch.Generator().manual_seed(seed)
    bounds = torch.linspace(0, num_pairs, 11).round().long().tolist()
    samples = []
    for _ in range(rounds):
        parts = [lo + torch.randint(hi - lo, (hi - lo,), generator=generator) for lo, hi in itertools.pairwise(bounds)]
        samples.append(torch.cat(parts))
    return samples


def paired_difference(
    better: dict[str, torch.Tensor], worse: dict[str, torch.Tensor], probe: int, samples: Sequence[torch.Tensor]
) -> tuple[float, float, float]:
    """HR-LR accuracy of ``better`` minus ``worse`` on the same pairs, with its 95 % percentile bootstrap interval.

    Args:
        better: scores of the first model (``eval_scores[split]``).
        worse: scores of the second model, on the same pairs.
        probe: probe side in px.
        samples: bootstrap index samples (:func:`fold_bootstrap`).

    Returns:
        ``(difference, low, high)`` as fractions.
    """
    full = torch.arange(len(better[f"synthetic__hr_lr__{probe}px__scores"]))
    point = hr_lr_acc(better, full, probe) - hr_lr_acc(worse, full, probe)
    diffs = sorted(hr_lr_acc(better, i, probe) - hr_lr_acc(worse, i, probe) for i in samples)
    return point, diffs[int(0.025 * len(diffs))], diffs[int(0.975 * len(diffs)) - 1]
