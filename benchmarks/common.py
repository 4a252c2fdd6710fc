"""The harness of the ``bench_*.py``, ``reproduce_*.py`` and ``compare_methods.py`` scripts: the machine they ran on,
the synthetic data settings and rendered faces, the trainer, timing, tables, JSON results, paired bootstrap intervals
of accuracy differences.

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

import lightning.pytorch as pl
import torch
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

#: The nuisance knobs of ``SyntheticFaces`` that a single difficulty sets together.
NUISANCE = ("pose", "illumination", "expression", "clutter", "noise")


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


def machine_summary() -> str:
    """:func:`machine` in one line: the GPU or the CPU cores."""
    info = machine()
    if info["cuda"]:
        return f"{info['cuda']} (CUDA), {info['cpu_count']} CPU cores"
    return f"CPU only: {info['cpu_count']} cores ({info['processor']})"


def synthetic_settings() -> dict[str, Any]:
    """The ``data`` section of ``experiments/data/synthetic.yaml`` (identities, pairs, nuisance)."""
    return yaml.safe_load((REPO / "experiments" / "data" / "synthetic.yaml").read_text())["data"]


def render_folder(
    root: Path, identities: int, per_identity: int, size: int, seed: int, nuisance: float | dict[str, float]
) -> None:
    """Render the synthetic training faces once into ``root/<identity>/<index>.png``.

    Args:
        root: the identity folder to fill.
        identities: number of identities.
        per_identity: images per identity.
        size: face side in px.
        seed: ``SyntheticFaces`` seed.
        nuisance: one difficulty for every knob of :data:`NUISANCE`, or the knobs themselves.
    """
    from crossres.data.synthetic import SyntheticFaces

    knobs = nuisance if isinstance(nuisance, dict) else dict.fromkeys(NUISANCE, nuisance)
    faces = SyntheticFaces(identities, per_identity, image_size=size, seed=seed, return_priors=False, **knobs)
    for i in range(len(faces)):
        item = faces[i]
        folder = root / f"id{item['label']:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(item["image"].permute(1, 2, 0).numpy()).save(folder / f"{i % per_identity:03d}.png")


class EpochPrinter(pl.Callback):
    """Prints the training losses after every epoch."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.tic = time.time()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        losses = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train_")}
        cells = " ".join(f"{k[6:]} {v:.4g}" for k, v in sorted(losses.items()))
        print(f"  epoch {trainer.current_epoch}: {cells} ({time.time() - self.tic:.0f} s)", flush=True)


def trainer(
    epochs: int = 1,
    validate: bool = False,
    print_epochs: bool = False,
    limit_train_batches: int | None = None,
    accelerator: str = "cpu",
    callbacks: list[pl.Callback] | None = None,
    **overrides: Any,
) -> pl.Trainer:
    """A quiet one-device trainer: no logger, checkpoints, progress bar, model summary or sanity check.

    Args:
        epochs: ``max_epochs``.
        validate: run validation (else fit without it; the scripts evaluate once at the end).
        print_epochs: print the training losses after every epoch (:class:`EpochPrinter`).
        limit_train_batches: batches per epoch (``None``: all).
        accelerator: ``"cpu"``, ``"gpu"`` or ``"cuda"``.
        callbacks: more callbacks (timers, recorders).
        **overrides: any other ``pl.Trainer`` argument (``precision``, ``strategy``, ...).
    """
    callbacks = [*(callbacks or []), *([EpochPrinter()] if print_epochs else [])]
    options: dict[str, Any] = {
        "max_epochs": epochs,
        "accelerator": accelerator,
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "callbacks": callbacks or None,
        "limit_val_batches": 1.0 if validate else 0,
        "limit_train_batches": limit_train_batches,
    }
    return pl.Trainer(**(options | overrides))


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


def pair_accuracy(
    scores: dict[str, torch.Tensor],
    index: torch.Tensor,
    protocol: str | int | None,
    pair_set: str = "synthetic",
    comparison: str = "hr_lr",
) -> float:
    """10-fold accuracy as crossres reports it on the pairs ``index`` of ``scores`` (HR-LR: both orders averaged).

    Args:
        scores: per-pair scores in ``crossres test``'s keys (``<set>__<comparison>__<protocol>__scores`` and
            ``__issame``), e.g. a method's ``eval_scores[split]``.
        index: pair indices (a bootstrap sample, or all pairs).
        protocol: the probe protocol (``12px``, or a side in px); ``None`` for HR-HR.
        pair_set: the pair set's name.
        comparison: ``hr_hr``, ``lr_lr`` or ``hr_lr``.
    """
    from crossres.metrics.verification import verification_metrics

    suffix = "" if protocol is None else "__" + (f"{protocol}px" if isinstance(protocol, int) else protocol)
    orders = ("hr_lr", "lr_hr") if comparison == "hr_lr" else (comparison,)
    accs = []
    for order in orders:
        key = f"{pair_set}__{order}{suffix}"
        accs.append(verification_metrics(scores[f"{key}__scores"][index], scores[f"{key}__issame"][index])["acc"])
    return float(sum(accs) / len(accs))


def hr_lr_acc(scores: dict[str, torch.Tensor], index: torch.Tensor, probe: int, pair_set: str = "synthetic") -> float:
    """HR-LR accuracy (both pair orders averaged) at ``probe`` px: :func:`pair_accuracy`."""
    return pair_accuracy(scores, index, probe, pair_set)


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
    better: dict[str, torch.Tensor],
    worse: dict[str, torch.Tensor],
    probe: str | int | None,
    samples: Sequence[torch.Tensor],
    pair_set: str = "synthetic",
    comparison: str = "hr_lr",
) -> tuple[float, float, float]:
    """Accuracy of ``better`` minus ``worse`` on the same pairs, with its 95 % percentile bootstrap interval.

    Args:
        better: scores of the first model (``eval_scores[split]``).
        worse: scores of the second model, on the same pairs.
        probe: the probe protocol (``12px`` or a side in px); ``None`` for HR-HR.
        samples: bootstrap index samples (:func:`fold_bootstrap`).
        pair_set: the pair set's name.
        comparison: ``hr_hr``, ``lr_lr`` or ``hr_lr`` (:func:`pair_accuracy`).

    Returns:
        ``(difference, low, high)`` as fractions.
    """

    def gain(index: torch.Tensor) -> float:
        return pair_accuracy(better, index, probe, pair_set, comparison) - pair_accuracy(
            worse, index, probe, pair_set, comparison
        )

    suffix = "" if probe is None else "__" + (f"{probe}px" if isinstance(probe, int) else probe)
    full = torch.arange(len(better[f"{pair_set}__{comparison}{suffix}__scores"]))
    point = gain(full)
    diffs = sorted(gain(i) for i in samples)
    return point, diffs[int(0.025 * len(diffs))], diffs[int(0.975 * len(diffs)) - 1]
