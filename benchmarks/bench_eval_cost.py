"""Evaluation cost: backbone passes and wall time of crossres's evaluation vs the naive per-protocol way.

A 6,000-pair synthetic verification set (``FaceDataModule(val_sets=["synthetic"])``) is scored
under two protocol lists, each a scenario:

* ``sweep``: the 108-size sweep, every pair at 5, 6, ..., 112 px;
* ``knoche``: the four protocols of Knoche et al. 2021 §6.3 (``low_res_focus``, ``mid_res_focus``,
  ``high_res_focus``, ``avg_sizes``; per-pair sizes drawn with the data module's seed, ``crossres/data/protocols.py``);
* ``both`` (``--scenarios both``): the two lists in one evaluation.

**crossres**: ``Trainer.validate`` of a ``Baseline`` over the data module (``CrossResMethod._eval_step``): every pair
is embedded once at HR and, per protocol, once at its LR size (``DegradedViews``: the LR views are degraded when
read), and HR-HR, LR-LR and HR-LR in both orders are scored from those embeddings.

**naive**: the same four comparisons evaluated one protocol at a time, as separate evaluation runs do: for each
protocol, both images of every pair are embedded at HR and at the protocol's LR size (4 passes per pair per
protocol), degraded with the same ``degrade`` and scored with the same ``VerificationMetric``; the accuracies must
equal crossres's (``max_acc_difference``).

Backbone passes are counted, not assumed: a forward pre-hook on the backbone counts the images it embeds. The
backbone is untrained and tiny (the ratio of passes is the point): an iresnet18 of width 8 (``--backbone iresnet18``,
default), or ``--backbone pool``, average pooling to 4 x 4 and a linear layer, which leaves the degradation, the
metrics and the framework as the whole cost (the pass counts are the same; the time ratio moves towards 1, since both
sides degrade the same images: 2 per pair per protocol). Also printed:
the ratio against Knoche's HR-LR-only script (2 passes per pair per protocol: the HR first image and the LR second
image, one of the four comparisons) and the floor of any evaluation, one pass per distinct (image, size) of the set.
Goal: crossres <= 0.55x the naive passes.

Usage:
    python benchmarks/bench_eval_cost.py                        # full: 6,000 pairs, sweep + knoche
    python benchmarks/bench_eval_cost.py --quick                # smoke run: 20 pairs, every 9th sweep size
    python benchmarks/bench_eval_cost.py --backbone pool                # the same counts, cheaper
    python benchmarks/bench_eval_cost.py --scenarios both --out runs/bench/eval_cost.json
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import lightning.pytorch as pl
import torch
from common import format_table, machine, quiet_lightning, synchronize, write_json
from torch import Tensor, nn

from crossres.data.datamodule import FaceDataModule
from crossres.data.options import SyntheticOptions
from crossres.data.pairs import PairDataset
from crossres.data.protocols import KNOCHE_PROTOCOLS
from crossres.methods.baseline import Baseline
from crossres.metrics.verification import VerificationMetric
from crossres.transforms.functional import degrade, to_float

HR_SIZE = (112, 112)
KNOCHE = [name for name in KNOCHE_PROTOCOLS if name != "all_res"]  # all_res is an alias of avg_sizes
SCENARIOS = ("sweep", "knoche", "both")
LABELS = {"hr_hr": "HR-HR", "lr_lr": "LR-LR", "hr_lr": "HR-LR"}


class PassCounter:
    """Counts the forward calls of a module and the images they carry (a forward pre-hook)."""

    def __init__(self, module: nn.Module) -> None:
        self.calls = 0
        self.images = 0
        self.handle = module.register_forward_pre_hook(self._count)

    def _count(self, module: nn.Module, args: tuple[Tensor, ...]) -> None:
        self.calls += 1
        self.images += int(args[0].shape[0])

    def reset(self) -> None:
        self.calls = self.images = 0


def pooling_backbone(embedding_size: int) -> nn.Module:
    """The cheapest embedding network: ``(B, 3, H, W)`` -> 4 x 4 average pooling -> linear -> ``(B, D)``."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(3 * 4 * 4, embedding_size))


def protocol_specs(scenario: str, sweep_step: int) -> list[int | str]:
    """The data module's ``protocols`` of a scenario."""
    sweep: list[int | str] = list(range(5, HR_SIZE[0] + 1, sweep_step))
    return {"sweep": sweep, "knoche": list(KNOCHE), "both": sweep + list(KNOCHE)}[scenario]


def distinct_views(pairs: PairDataset) -> int:
    """Distinct (image, size) views the pair set needs under its protocols (an LR view at the HR size is the HR one)."""
    images = pairs.pair_set.pairs.reshape(-1)
    hr = torch.tensor(HR_SIZE).expand(images.numel(), 2)
    views = [torch.cat([images[:, None], hr], dim=1)]
    for sizes in pairs.protocols.values():
        views.append(torch.cat([images[:, None], sizes.repeat_interleave(2, dim=0)], dim=1))
    return int(torch.unique(torch.cat(views), dim=0).shape[0])


def crossres_eval(model: Baseline, datamodule: FaceDataModule, device: torch.device) -> tuple[float, dict]:
    """``Trainer.validate``; returns the wall time and ``(comparison, protocol) -> accuracy``."""
    trainer = pl.Trainer(
        accelerator=device.type,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    synchronize(device)
    start = time.perf_counter()
    trainer.validate(model, datamodule=datamodule, verbose=False)
    synchronize(device)
    seconds = time.perf_counter() - start
    accuracies = {(row["comparison"], row["protocol"]): float(row["acc"]) for row in model.eval_results["val"]}
    return seconds, accuracies


@torch.no_grad()
def naive_eval(model: Baseline, datamodule: FaceDataModule, device: torch.device) -> tuple[float, dict]:
    """Each protocol on its own: embed both images of every pair at HR and at the LR size, score four comparisons."""
    model.to(device).eval()
    backend = datamodule.degradation.backend
    protocols = list(datamodule.pair_set("synthetic").protocols)
    accuracies: dict[tuple[str, str], float] = {}
    synchronize(device)
    start = time.perf_counter()
    for protocol in protocols:
        metrics = {key: VerificationMetric().to(device) for key in ("hr_hr", "lr_lr", "hr_lr", "lr_hr")}
        for batch in datamodule.val_dataloader()[0]:
            hr1, hr2 = to_float(batch["image1"].to(device)), to_float(batch["image2"].to(device))
            size = batch["lr_size"][protocol]
            lr1, lr2 = degrade(hr1, size, backend=backend), degrade(hr2, size, backend=backend)
            e_hr1, e_hr2 = model.eval_embed_hr(hr1), model.eval_embed_hr(hr2)
            e_lr1, e_lr2 = model.eval_embed_lr(lr1, size), model.eval_embed_lr(lr2, size)
            issame, pair_id = batch["issame"].to(device), batch["pair_id"].to(device)
            for key, (a, b) in {
                "hr_hr": (e_hr1, e_hr2),
                "lr_lr": (e_lr1, e_lr2),
                "hr_lr": (e_hr1, e_lr2),
                "lr_hr": (e_lr1, e_hr2),
            }.items():
                metrics[key].update((a * b).sum(1), issame, pair_id)
        values = {key: float(metric.compute()["acc"]) for key, metric in metrics.items()}
        accuracies[("HR-HR", "")] = values["hr_hr"]  # the same every protocol
        accuracies[("LR-LR", protocol)] = values["lr_lr"]
        accuracies[("HR-LR", protocol)] = (values["hr_lr"] + values["lr_hr"]) / 2  # both orders, as crossres
    synchronize(device)
    return time.perf_counter() - start, accuracies


def run_scenario(args: argparse.Namespace, scenario: str, device: torch.device) -> dict[str, Any]:
    """Count passes and time both evaluations of one protocol list."""
    datamodule = FaceDataModule(
        image_size=HR_SIZE,
        synthetic=SyntheticOptions(num_identities=2, pairs=args.pairs),  # 2 identities: no training set is used
        val_sets=["synthetic"],
        protocols=protocol_specs(scenario, args.sweep_step),
        eval_batch_size=args.eval_batch_size,
        num_workers=0,
        seed=args.seed,
    )
    datamodule.setup("validate")  # render the pair set and draw the protocols once, outside the timings
    pairs = datamodule.pair_set("synthetic")
    num_pairs, num_protocols = len(pairs), len(pairs.protocols)
    torch.manual_seed(args.seed)
    backbone_kwargs = {"width": args.width, "stem_stride": 2}
    model = Baseline(num_classes=2, image_size=HR_SIZE, backbone_kwargs=backbone_kwargs, embedding_size=32)
    if args.backbone == "pool":
        model.backbone = pooling_backbone(embedding_size=32)
    counter = PassCounter(model.backbone)

    ours_s, ours_acc = crossres_eval(model, datamodule, device)
    ours_images, ours_calls = counter.images, counter.calls
    counter.reset()
    naive_s, naive_acc = naive_eval(model, datamodule, device)
    naive_images, naive_calls = counter.images, counter.calls
    common_keys = ours_acc.keys() & naive_acc.keys()
    missing = (ours_acc.keys() | naive_acc.keys()) - common_keys
    acc_diff = max((abs(ours_acc[k] - naive_acc[k]) for k in common_keys), default=float("nan"))
    literal = 2 * num_pairs * num_protocols
    floor = distinct_views(pairs)
    return {
        "scenario": scenario,
        "pairs": num_pairs,
        "protocols": num_protocols,
        "crossres_passes": ours_images,
        "crossres_calls": ours_calls,
        "naive_passes": naive_images,
        "naive_calls": naive_calls,
        "pass_ratio": ours_images / naive_images,
        "knoche_hr_lr_only_passes": literal,
        "ratio_vs_hr_lr_only": ours_images / literal,
        "distinct_views": floor,
        "floor_ratio": floor / naive_images,
        "crossres_s": ours_s,
        "naive_s": naive_s,
        "time_ratio": ours_s / naive_s,
        "max_acc_difference": acc_diff,
        "unmatched_accuracies": sorted(map(str, missing)),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 pairs, every 9th size of the sweep")
    parser.add_argument("--pairs", type=int, default=6000, help="pairs of the synthetic set (quick: 20)")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=["sweep", "knoche"])
    parser.add_argument("--sweep-step", type=int, default=1, help="every n-th size of 5..112 (quick: 9)")
    parser.add_argument("--backbone", choices=["iresnet18", "pool"], default="iresnet18", help="the embedding net")
    parser.add_argument("--width", type=int, default=8, help="width of the tiny iresnet18 (stem stride 2)")
    parser.add_argument("--eval-batch-size", type=int, default=128, help="pairs per evaluation batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.pairs, args.sweep_step = min(args.pairs, 20), max(args.sweep_step, 9)
    quiet_lightning()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backbone = f"iresnet18 width {args.width}" if args.backbone == "iresnet18" else "pooling + linear"
    print(
        f"{args.pairs} pairs, scenarios {args.scenarios}, sweep step {args.sweep_step}, {backbone} backbone "
        f"on {device}, {torch.get_num_threads()} torch thread(s)"
    )
    rows = [run_scenario(args, scenario, device) for scenario in args.scenarios]
    columns = ["scenario", "pairs", "protocols", "crossres_passes", "naive_passes", "pass_ratio"]
    columns += ["ratio_vs_hr_lr_only", "floor_ratio", "crossres_s", "naive_s", "time_ratio", "max_acc_difference"]
    print(format_table(rows, columns))
    for row in rows:
        verdict = "met" if row["pass_ratio"] <= 0.55 else "NOT met"
        print(f"{row['scenario']}: crossres / naive passes = {row['pass_ratio']:.3f} (goal <= 0.55): {verdict}")
        if row["unmatched_accuracies"]:
            print(f"  accuracies only one side reported: {row['unmatched_accuracies']}")
    print(
        "naive = 4 passes per pair per protocol (HR and LR of both images); hr_lr_only = 2 per pair per protocol "
        "(Knoche's HR-LR script, one comparison); floor = distinct (image, size) views / naive passes"
    )
    results = {"benchmark": "eval_cost", "machine": machine(), "device": str(device), "settings": vars(args)}
    results["rows"] = rows
    write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
