"""Training overhead: one epoch of ``Baseline`` through Lightning vs a plain PyTorch loop, same everything.

Both sides train the model of ``experiments/baseline.yaml`` (backbone, head, optimizer and
learning-rate schedule as configured there; ``train_on: hr``) for one epoch on the embedded synthetic faces, from the
same seed:

* **Lightning/crossres**: ``crossres.methods.Baseline`` + ``FaceDataModule`` through ``lightning.pytorch.Trainer``
  with validation, logger, checkpointing, progress bar and model summary off (like with like).
* **plain PyTorch**: ``crossres.nn.backbones.build_backbone`` + ``crossres.nn.heads.build_head`` built after the same
  seeding (so the initial weights are the same, which the script checks), the optimizer and ``LambdaLR`` schedule of
  ``CrossResMethod.configure_optimizers`` written out by hand, and the same batches: a second ``FaceDataModule`` with
  the same arguments, its ``train_dataloader()`` iterated and every batch moved to the device and passed through
  ``on_after_batch_transfer`` (so the degradation runs on both sides). ``zero_grad`` -> ``backward`` -> ``step``;
  the loss is read with ``.item()`` every step (Lightning's side records it in a callback, also every step).

Printed: wall time of each side (``trainer.fit`` vs the loop with its loader and optimizer set-up; model
construction excluded on both sides), the ratio Lightning / plain (goal <= 1.10), the same ratio after subtracting
the time of a data-only pass (loader + ``on_after_batch_transfer``, no model: the synthetic renderer is most of an
epoch on a CPU and dilutes the first ratio), and the largest absolute difference of the per-step loss curves (goal:
0, identical for the same seed). The data-only pass runs first and also warms the renderer's caches; the two sides
then alternate (plain, Lightning, Lightning, plain, ...) and the fastest repeat of each is compared.

Usage:
    python benchmarks/bench_overhead.py                  # full: 100 identities x 30 faces, 112 px, batch 64, 2 repeats
    python benchmarks/bench_overhead.py --quick          # smoke run: 24 faces of 32 px, batch 8, 1 repeat
    python benchmarks/bench_overhead.py --repeats 3 --out runs/bench/overhead.json
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import Any

import common
import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from common import REPO, format_table, machine, quiet_lightning, synchronize, write_json
from torch import Tensor, nn

from crossres.data.datamodule import FaceDataModule
from crossres.methods.baseline import Baseline
from crossres.nn.backbones import build_backbone
from crossres.nn.heads import build_head

CONFIG = REPO / "experiments" / "baseline.yaml"


def seed_all(seed: int) -> None:
    """Seed Python, NumPy and torch (what ``lightning.seed_everything`` does, without Lightning)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Data-module and model arguments: ``experiments/baseline.yaml`` with the benchmark's overrides."""
    config = yaml.safe_load(CONFIG.read_text())
    data = dict(config["data"])
    synthetic = dict(data["synthetic"], num_identities=args.identities, images_per_identity=args.images_per_identity)
    data.update(
        image_size=[args.image_size, args.image_size],
        synthetic=synthetic,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        val_sets=[],  # no evaluation pair set is rendered: validation is off on both sides
        seed=args.seed,
    )
    if args.image_size != 112:  # keep the configured training sizes valid on smaller faces
        sizes = sorted({max(1, round(s * args.image_size / 112)) for s in data["degradation"]["lr_sizes"]})
        data["degradation"] = dict(data["degradation"], lr_sizes=sizes)
        data["protocols"] = []
    model = dict(config["model"]["init_args"])
    model.update(num_classes=args.identities, image_size=(args.image_size, args.image_size), train_on="hr")
    return data, model


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a (nested) batch to ``device``, as Lightning's batch transfer does."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(value, device) for value in batch)
    return batch


class LossRecorder(pl.Callback):
    """The loss of every training step, read after the step as the plain loop reads it."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, idx: int) -> None:
        self.losses.append(float(outputs["loss"]))


def run_lightning(data: dict[str, Any], model_args: dict[str, Any], seed: int, device: torch.device) -> dict[str, Any]:
    """One epoch through ``Trainer.fit``; returns the wall time, the loss curve and the initial weights."""
    seed_all(seed)
    model = Baseline(**model_args)
    initial = {key: value.detach().clone() for key, value in model.state_dict().items()}
    recorder = LossRecorder()
    trainer = common.trainer(accelerator=device.type, callbacks=[recorder], precision="32-true")
    datamodule = FaceDataModule(**data)
    synchronize(device)
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    synchronize(device)
    return {"seconds": time.perf_counter() - start, "losses": recorder.losses, "initial": initial}


def lr_factor(warmup_epochs: int, milestones: list[int], gamma: float) -> Callable[[int], float]:
    """``CrossResMethod``'s schedule: linear warm-up over ``warmup_epochs``, times ``gamma`` at each milestone."""

    def factor(epoch: int) -> float:
        ramp = min(1.0, (epoch + 1) / warmup_epochs) if warmup_epochs > 0 else 1.0
        return ramp * gamma ** sum(epoch >= m for m in sorted(milestones))

    return factor


def run_plain(data: dict[str, Any], hp: dict[str, Any], seed: int, device: torch.device) -> dict[str, Any]:
    """One epoch of a hand-written loop over the same batches; returns the wall time, loss curve, initial weights."""
    seed_all(seed)
    size = tuple(hp["image_size"])
    backbone = build_backbone(hp["backbone"], hp["embedding_size"], size, **(hp["backbone_kwargs"] or {}))
    head = build_head(hp["head"], hp["embedding_size"], hp["num_classes"], scale=hp["scale"], margin=hp["margin"])
    network = nn.ModuleDict({"backbone": backbone, "head": head})  # Baseline's attribute names: comparable keys
    if hp.get("channels_last"):
        network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    initial = {key: value.detach().clone() for key, value in network.state_dict().items()}
    network.to(device).train()
    datamodule = FaceDataModule(**data)
    losses: list[float] = []
    synchronize(device)
    start = time.perf_counter()
    optimizer: torch.optim.Optimizer
    if hp["optimizer"] == "sgd":
        optimizer = torch.optim.SGD(
            network.parameters(), lr=hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"]
        )
    else:
        optimizer = torch.optim.AdamW(network.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    factor = lr_factor(hp["warmup_epochs"], hp["milestones"] or [], hp["lr_gamma"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    datamodule.setup("fit")
    for batch in datamodule.train_dataloader():
        batch = datamodule.on_after_batch_transfer(to_device(batch, device), 0)
        labels = batch["label"]
        loss = F.cross_entropy(head(backbone(batch["hr"]), labels), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    scheduler.step()
    synchronize(device)
    return {"seconds": time.perf_counter() - start, "losses": losses, "initial": initial}


def run_data_only(data: dict[str, Any], device: torch.device) -> float:
    """Seconds of one epoch of the loader and the device-side degradation alone."""
    datamodule = FaceDataModule(**data)
    synchronize(device)
    start = time.perf_counter()
    datamodule.setup("fit")
    for batch in datamodule.train_dataloader():
        datamodule.on_after_batch_transfer(to_device(batch, device), 0)
    synchronize(device)
    return time.perf_counter() - start


def max_difference(a: dict[str, Tensor], b: dict[str, Tensor]) -> float:
    """Largest absolute difference between two state dicts with the same keys (inf if the keys differ)."""
    if a.keys() != b.keys():
        return float("inf")
    return max((float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel()), default=0.0)


def curve_difference(a: list[float], b: list[float]) -> float:
    """Largest absolute difference of two loss curves (inf if their lengths differ)."""
    if len(a) != len(b):
        return float("inf")
    return max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0.0)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 6 x 4 faces of 32 px, batch 8, 1 repeat")
    parser.add_argument("--identities", type=int, default=100)
    parser.add_argument("--images-per-identity", type=int, default=30)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers of both sides")
    parser.add_argument("--repeats", type=int, default=2, help="epochs per side, alternating the order")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.identities, args.images_per_identity, args.image_size = 6, 4, 32
        args.batch_size, args.repeats = 8, 1
    quiet_lightning()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data, model_args = settings(args)
    hp = Baseline(**model_args).hparams  # the full hyperparameters, defaults included, as the method sees them
    steps = args.identities * args.images_per_identity // args.batch_size
    print(
        f"Baseline ({hp['backbone']} {hp['backbone_kwargs']}, {hp['head']}, {hp['optimizer']}) on {device}: "
        f"{args.identities} x {args.images_per_identity} faces of {args.image_size} px, batch {args.batch_size}, "
        f"{steps} steps per epoch, {torch.get_num_threads()} torch thread(s)"
    )

    data_seconds = run_data_only(data, device)
    runs: dict[str, list[dict[str, Any]]] = {"plain": [], "lightning": []}
    for repeat in range(args.repeats):
        order = ["plain", "lightning"] if repeat % 2 == 0 else ["lightning", "plain"]
        for side in order:
            if side == "plain":
                run = run_plain(data, dict(hp), args.seed, device)
            else:
                run = run_lightning(data, model_args, args.seed, device)
            runs[side].append(run)
            print(f"  repeat {repeat + 1}: {side:9s} {run['seconds']:.2f} s, {len(run['losses'])} steps")

    plain_s = min(run["seconds"] for run in runs["plain"])
    lightning_s = min(run["seconds"] for run in runs["lightning"])
    ratio = lightning_s / plain_s
    compute_ratio = (lightning_s - data_seconds) / max(plain_s - data_seconds, 1e-9)
    loss_diff = curve_difference(runs["lightning"][0]["losses"], runs["plain"][0]["losses"])
    init_diff = max_difference(runs["lightning"][0]["initial"], runs["plain"][0]["initial"])
    repeat_diff = max(
        (curve_difference(run["losses"], runs[side][0]["losses"]) for side in runs for run in runs[side][1:]),
        default=0.0,
    )
    rows = [
        {"side": "plain PyTorch loop", "seconds": plain_s, "minus_data_s": plain_s - data_seconds, "ratio": 1.0},
        {"side": "Lightning + crossres", "seconds": lightning_s, "minus_data_s": lightning_s - data_seconds}
        | {"ratio": ratio, "ratio_minus_data": compute_ratio},
        {"side": "data only (loader + degradation)", "seconds": data_seconds},
    ]
    print(format_table(rows, ["side", "seconds", "minus_data_s", "ratio", "ratio_minus_data"]))
    print(f"Lightning / plain = {ratio:.3f} (goal <= 1.10): {'met' if ratio <= 1.10 else 'NOT met'}")
    print(f"max |loss difference| per step = {loss_diff:.3g} (goal 0): {'met' if loss_diff == 0 else 'NOT met'}")
    print(
        f"initial weights: max |difference| = {init_diff:.3g}; repeats of one side differ by at most {repeat_diff:.3g}"
    )

    results = {
        "benchmark": "overhead",
        "machine": machine(),
        "device": str(device),
        "settings": vars(args) | {"steps_per_epoch": steps, "model": dict(hp), "data": data},
        "rows": rows,
        "ratio": ratio,
        "ratio_minus_data": compute_ratio,
        "max_loss_difference": loss_diff,
        "max_initial_weight_difference": init_diff,
        "max_repeat_difference": repeat_diff,
        "seconds": {side: [run["seconds"] for run in side_runs] for side, side_runs in runs.items()},
        "losses": {side: side_runs[0]["losses"] for side, side_runs in runs.items()},
    }
    write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
