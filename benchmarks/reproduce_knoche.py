"""Knoche et al. (004) Table 2 / Fig. 12, in shape, on the embedded synthetic faces.

Three models of the same network: the HR baseline (§3.1), BT-M (§6.2: half of each batch degraded to a size drawn
from {7, 14, 28, 56, 112}) and ST-M1 (§6.2: siamese branches, the LR branch at a size drawn per face from
{7, 14, 28, 56}, Eq. (7) with weight 25). Rows as Table 2: HR-HR at 112 px, then HR-LR (both pair orders) on the
§6.3 protocols (per-pair LR sizes drawn with a seed: low 5-10 px, mid 11-39 px, high 40-112 px, all 5-112 px) and
at 5 px.

Expected shape: BT-M and ST-M1 beat the baseline at low resolutions (low_res, 5 px) and on all_res; the siamese
model is best at the lowest resolutions; at high resolutions all are close.

CPU budget: faces rendered once at 112 px (identity counts, pair count and nuisance from
experiments/data/synthetic.yaml) into an identity folder; a width-8 iresnet18 with the stride-2 stem of
experiments/baseline.yaml; 5 epochs each. Run times: ``experiments/README.md``.

Usage:
    python benchmarks/reproduce_knoche.py            # full
    python benchmarks/reproduce_knoche.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from common import render_folder, synthetic_settings, trainer

from crossres.data.datamodule import FaceDataModule
from crossres.data.options import DegradationOptions, SyntheticOptions
from crossres.methods.base import CrossResMethod
from crossres.methods.baseline import Baseline
from crossres.methods.batch_cr import BatchCR
from crossres.methods.siamese_cr import SiameseCR

PROTOCOLS = ["low_res_focus", "mid_res_focus", "high_res_focus", "avg_sizes", 5]
ROWS = [("HR-HR", ""), ("HR-LR", "high_res_focus"), ("HR-LR", "mid_res_focus"), ("HR-LR", "low_res_focus")]
ROWS += [("HR-LR", "avg_sizes"), ("HR-LR", "5px")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run on few faces, one epoch")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (more spin and slow down on a busy CPU)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    synthetic = synthetic_settings()["synthetic"]
    size = 112  # the §6.3 protocols are defined on 112 px faces
    if args.quick:
        identities, per_identity, pairs, epochs = 16, 8, 40, 1
    else:
        identities, per_identity = synthetic["num_identities"], synthetic["images_per_identity"]
        pairs, epochs = synthetic.get("pairs", 600), 5
    difficulty = float(synthetic.get("difficulty", 1.0))
    seed = int(synthetic.get("seed", 0))
    model_args = {
        "backbone": "iresnet18",
        "backbone_kwargs": {"width": 8, "stem_stride": 2},  # as experiments/baseline.yaml
        "embedding_size": 128,
        "head": "arcface",
        "scale": 32.0,
        "margin": 0.3,
        "optimizer": "sgd",
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "warmup_epochs": 1,
        "milestones": [int(0.7 * epochs), int(0.9 * epochs)],
        "num_classes": identities,
        "image_size": (size, size),
    }
    # (name, model, data module's training degradation)
    runs: list[tuple[str, CrossResMethod, DegradationOptions]] = [
        ("baseline", Baseline(**model_args, train_on="hr"), DegradationOptions()),
        (
            "BT-M",
            BatchCR(**model_args),
            DegradationOptions(lr_prob=0.5, lr_policy="choice", lr_sizes=[7, 14, 28, 56, 112]),
        ),
        (
            "ST-M1",
            SiameseCR(**model_args, mode="st_m1"),
            DegradationOptions(lr_prob=1.0, lr_policy="choice", lr_sizes=[7, 14, 28, 56]),
        ),
    ]
    start = time.time()
    results: dict[str, dict[tuple[str, str], float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "faces"
        render_folder(root, identities, per_identity, size, seed, difficulty)
        print(f"rendered {identities * per_identity} faces at {size} px in {time.time() - start:.0f} s", flush=True)
        for name, model, degradation in runs:
            tic = time.time()
            dm = FaceDataModule(
                train_format="folder",
                train_root=str(root),
                image_size=(size, size),
                val_sets=["synthetic"],
                synthetic=SyntheticOptions(pairs=pairs, seed=seed, difficulty=difficulty),
                protocols=PROTOCOLS,
                degradation=degradation,
                batch_size=64,
                eval_batch_size=200,
                num_workers=0,
            )
            pl.seed_everything(0)
            trainer(epochs).fit(model, datamodule=dm)
            trainer(1, validate=True).validate(model, datamodule=dm, verbose=False)
            results[name] = {(r["comparison"], r["protocol"]): 100 * r["acc"] for r in model.eval_results["val"]}
            print(f"{name}: {time.time() - tic:.0f} s", flush=True)

    names = [name for name, _, _ in runs]
    title = "Knoche et al. Table 2 shape: synthetic faces 112 px, 10-fold accuracy % (HR-LR: both pair orders)"
    lines = [f"### {title}", "", "| test | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for comparison, protocol in ROWS:
        label = "112 px (HR-HR)" if comparison == "HR-HR" else protocol.replace("avg_sizes", "all_res (avg_sizes)")
        values = [results[n].get((comparison, protocol), float("nan")) for n in names]
        best = max(values)
        cells = [f"**{v:.1f}**" if v == best else f"{v:.1f}" for v in values]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    print("\n" + "\n".join(lines) + f"\n\n(total {time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
