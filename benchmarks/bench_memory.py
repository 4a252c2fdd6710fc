"""Memory: peak RSS (and peak GPU memory) of one training step of every method, each in a fresh process.

Each method is built from its config in ``experiments/`` (model arguments and data settings as
there; batch size and face size replaced by the benchmark's) and trained for one batch by ``Trainer.fit`` on the
embedded synthetic faces, validation off. Methods that start from a pretrained network (GuidedCNN's guide, IPUNet's
recogniser, RIM's teacher, DCR step 2's trunk) get one saved from their own freshly initialised copy into a temporary
folder, so no run has to exist.

    baseline     Baseline (HR)           experiments/baseline.yaml
    guided_cnn   GuidedCNN               experiments/guided_cnn.yaml
    batch_cr     BatchCR (BT-M)          experiments/batch_cr_m.yaml
    siamese_cr   SiameseCR (ST-M1)       experiments/siamese_cr_m1.yaml
    dcr_stage1   DCRTwoStage, step 1     experiments/dcr_stage1.yaml
    dcr_stage2   DCRTwoStage, step 2     experiments/dcr_stage2.yaml
    ipunet       IPUNet                  experiments/ipunet.yaml
    rim          RIM                     experiments/rim.yaml

Measured per method, in a fresh ``python`` subprocess: the peak RSS after imports, after building the model, and
after the training step (the process's high-water mark, ``VmHWM`` of ``/proc/self/status`` on Linux); also
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after the step, which on Linux also holds the parent's peak at the
time of the ``exec`` (the two agree whenever the method's process outgrows this script's); on a GPU
``torch.cuda.max_memory_allocated`` / ``max_memory_reserved`` over the step (peak statistics reset after the model
is built). Precision: the config's ``trainer.precision``; unset (RIM) means the method's ``gpu_precision`` on a GPU,
``32-true`` on the CPU, as the CLI does.

LR sizes in the configs (``data.degradation``'s ``lr_sizes`` and ``lr_views``, ``quality_lr_sizes``,
``branch_sizes``, ``trunk_resolutions``, ``learner_sizes``) are scaled with the face size when it is not 112 px.
DCR's trunk needs faces of at least 48 px.
``--quick`` runs every method at batch 8 and 32 px (DCR: 48 px) in ONE subprocess: a smoke test whose RSS column is
cumulative, not per method.

Usage:
    python benchmarks/bench_memory.py                          # full: batch 128, 112 px, one process per method
    python benchmarks/bench_memory.py --quick                  # smoke run: batch 8, 32 px, one shared process
    python benchmarks/bench_memory.py --methods baseline rim --out runs/bench/memory.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import torch
import yaml
from common import REPO, format_table, machine, quiet_lightning, write_json

#: Method -> (config, (constructor argument of the pretrained weights file, sub-module that file initialises)).
METHODS: dict[str, tuple[str, tuple[str, str] | None]] = {
    "baseline": ("baseline.yaml", None),
    "guided_cnn": ("guided_cnn.yaml", ("guide_weights", "guide")),
    "batch_cr": ("batch_cr_m.yaml", None),
    "siamese_cr": ("siamese_cr_m1.yaml", None),
    "dcr_stage1": ("dcr_stage1.yaml", None),
    "dcr_stage2": ("dcr_stage2.yaml", ("trunk_weights", "trunk")),
    "ipunet": ("ipunet.yaml", ("recognizer_weights", "recognizer")),
    "rim": ("rim.yaml", ("teacher_weights", "teacher.net")),
}
MIN_SIZE = {"dcr_stage1": 48, "dcr_stage2": 48}
DATA_SIZES = ("lr_sizes", "lr_views")
MODEL_SIZES = ("quality_lr_sizes", "branch_sizes", "trunk_resolutions", "learner_sizes")
RESULT = "RESULT "


def ru_maxrss_mb() -> float:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in MiB (KiB on Linux, bytes on macOS).

    On Linux it keeps the high-water mark of the image the process replaced at ``exec``: a subprocess started by
    ``subprocess`` (vfork + exec) starts from its parent's peak, which :func:`peak_rss_mb` does not.
    """
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def peak_rss_mb() -> float:
    """Peak RSS of this process image so far, in MiB: ``VmHWM`` of ``/proc/self/status``, else ``ru_maxrss``."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10
    return ru_maxrss_mb()


def scale_size(value: Any, factor: float) -> Any:
    """An LR size of a config (``14``, ``[16, 14]``, ``"40x40"``) on faces ``factor`` times the configured size."""
    if factor == 1.0 or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return max(1, round(value * factor))
    if isinstance(value, list):
        return [scale_size(v, factor) for v in value]
    if isinstance(value, str) and (match := re.fullmatch(r"(\d+)x(\d+)", value)):
        return "x".join(str(max(1, round(int(side) * factor))) for side in match.groups())
    if isinstance(value, str) and value.isdigit():
        return str(max(1, round(int(value) * factor)))
    return value


def scale_sizes(value: list[Any], factor: float) -> list[Any]:
    """Scale a list of sizes and drop the duplicates that rounding makes, keeping the order."""
    unique: dict[str, Any] = {}
    for size in value:
        scaled = scale_size(size, factor)
        unique.setdefault(json.dumps(scaled), scaled)
    return list(unique.values())


def method_settings(name: str, batch: int, image_size: int) -> tuple[dict, str, dict, str | None]:
    """Data-module arguments, model class path, model arguments and configured precision of a method."""
    config_name, _ = METHODS[name]
    config = yaml.safe_load((REPO / "experiments" / config_name).read_text())
    size = max(image_size, MIN_SIZE.get(name, 0))
    factor = size / 112
    data = dict(config["data"])
    degradation = dict(data.get("degradation") or {})
    for key in DATA_SIZES:
        if degradation.get(key) is not None:
            degradation[key] = scale_sizes(degradation[key], factor)
    data.update(
        degradation=degradation, image_size=[size, size], batch_size=batch, num_workers=0, val_sets=[], protocols=[]
    )
    model = dict(config["model"]["init_args"])
    for key in MODEL_SIZES:
        if model.get(key) is not None:
            model[key] = scale_sizes(model[key], factor)
    model.update(num_classes=data["synthetic"]["num_identities"], image_size=(size, size))
    return data, config["model"]["class_path"], model, config.get("trainer", {}).get("precision")


def measure(name: str, batch: int, image_size: int, folder: Path) -> dict[str, Any]:
    """Build one method and train it for one batch; the memory high-water marks along the way."""

    from crossres.data.datamodule import FaceDataModule

    data, class_path, init_args, precision = method_settings(name, batch, image_size)
    module_name, class_name = class_path.rsplit(".", 1)
    method_class = getattr(importlib.import_module(module_name), class_name)
    weights = METHODS[name][1]
    if weights is not None:
        init_args[weights[0]] = str(folder / f"{name}_{weights[1]}.pt")
    cuda = torch.cuda.is_available()
    if precision is None:
        precision = method_class.gpu_precision if cuda else "32-true"

    torch.manual_seed(0)
    model = method_class(**init_args)
    if weights is not None:  # a "pretrained" network: the method's own fresh copy, saved where it looks for it
        torch.save(model.get_submodule(weights[1]).state_dict(), init_args[weights[0]])
    datamodule = FaceDataModule(**data)
    rss_model = peak_rss_mb()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer = common.trainer(limit_train_batches=1, accelerator="gpu" if cuda else "cpu", precision=precision)
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    seconds = time.perf_counter() - start
    result: dict[str, Any] = {
        "method": name,
        "class": class_name,
        "batch": batch,
        "image_size": data["image_size"][0],
        "precision": precision,
        "device": "cuda" if cuda else "cpu",
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "trainable_params_m": sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
        "rss_after_build_mb": rss_model,
        "peak_rss_mb": peak_rss_mb(),
        "ru_maxrss_mb": ru_maxrss_mb(),
        "fit_s": seconds,
        "batches_trained": int(trainer.fit_loop.epoch_loop.batch_progress.current.completed),
    }
    if cuda:
        result["gpu_peak_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["gpu_peak_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
    return result


def child(names: list[str], batch: int, image_size: int) -> None:
    """Subprocess entry: measure ``names`` in this process, one ``RESULT {json}`` line each."""
    import lightning.pytorch  # noqa: F401  (counted in the import high-water mark, as every method needs it)

    import crossres.methods  # noqa: F401

    rss_imports = peak_rss_mb()
    quiet_lightning()
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            result = {"rss_imports_mb": rss_imports, "isolated": len(names) == 1}
            result |= measure(name, batch, image_size, Path(folder))
            print(RESULT + json.dumps(result), flush=True)


def run_children(groups: list[list[str]], batch: int, image_size: int, timeout: float) -> list[dict[str, Any]]:
    """Run one subprocess per group of methods; collect their results, or the error of a failed one."""
    rows: list[dict[str, Any]] = []
    for names in groups:
        command = [sys.executable, str(Path(__file__).resolve()), "--child", *names]
        command += ["--batch", str(batch), "--image-size", str(image_size)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            rows += [{"method": name, "error": f"timed out after {timeout:.0f} s"} for name in names]
            continue
        found = [json.loads(line[len(RESULT) :]) for line in done.stdout.splitlines() if line.startswith(RESULT)]
        rows += found
        if done.returncode != 0:
            error = (done.stderr.strip().splitlines() or ["(no stderr)"])[-1]
            measured = {row["method"] for row in found}
            rows += [{"method": n, "error": error} for n in names if n not in measured]
            print(f"subprocess for {names} failed (exit {done.returncode}):\n{done.stderr[-3000:]}", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 8, 32 px, all methods in one process")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=112, help="face size (DCR: at least 48)")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per subprocess")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--child", nargs="+", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child(args.child, args.batch, args.image_size)
        return None
    if args.quick:
        args.batch, args.image_size = 8, 32
    groups = [list(args.methods)] if args.quick else [[name] for name in args.methods]
    mode = "one shared subprocess (RSS cumulative)" if args.quick else "one fresh subprocess per method"
    print(f"batch {args.batch}, {args.image_size} px, {mode}")
    rows = run_children(groups, args.batch, args.image_size, args.timeout)
    columns = ["method", "class", "image_size", "precision", "params_m", "trainable_params_m", "rss_imports_mb"]
    columns += ["rss_after_build_mb", "peak_rss_mb", "ru_maxrss_mb", "fit_s", "batches_trained"]
    if torch.cuda.is_available():
        columns += ["gpu_peak_allocated_mb", "gpu_peak_reserved_mb"]
    if any("error" in row for row in rows):
        columns.append("error")
    print(format_table(rows, columns))
    results = {"benchmark": "memory", "machine": machine(), "settings": vars(args), "rows": rows}
    write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
