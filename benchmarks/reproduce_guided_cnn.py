"""Guided-CNN (000) Table 1, in shape, on the embedded synthetic faces.

Rows as Table 1: CNN_H only (HR Baseline), CNN_L only (Baseline trained on LR from scratch), [12] staged fine-tune
(HR Baseline fine-tuned on LR), Ours* (GuidedCNN, λ = 0) and Ours (GuidedCNN, λ > 0); columns HR-HR / LR-LR / HR-LR
10-fold accuracy at an 8x resolution factor (the paper: 128 px Light CNN faces and 16 px probes). Ours* and Ours start
the learner from the guide (crossres' default); Ours* is also run with a learner from scratch (what Table 1's Ours* row,
with the LR-LR accuracy of the LR-only CNN, suggests; ``--scratch-ours`` adds Ours from scratch too); Ours is also
scored in the unknown-resolution mode (§3.1).

Expected shape: Ours* collapses on HR-LR (its learner's features live in another space than the guide's); Ours
beats every other row on HR-LR while keeping CNN_H's HR-HR.

CPU budget: the faces are rendered once at 64 px (the 112 px renderer scaled down; identity counts, pair count and
nuisance from experiments/data/synthetic.yaml) into an identity folder, the probes are 8 px (8x), the backbone a
width-8 iresnet18; 8 epochs from scratch, 4 epochs of fine-tuning.

Usage:
    python benchmarks/reproduce_guided_cnn.py            # full
    python benchmarks/reproduce_guided_cnn.py --quick    # smoke run
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
from crossres.methods.guided_cnn import GuidedCNN


def evaluate(model: CrossResMethod, dm: FaceDataModule) -> dict[str, float]:
    """HR-HR / LR-LR / HR-LR accuracy (%) at the one LR protocol."""
    trainer(1, validate=True).validate(model, datamodule=dm, verbose=False)
    return {row["comparison"]: 100 * row["acc"] for row in model.eval_results["val"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run on tiny data")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (more spin and slow down on a busy CPU)"
    )
    parser.add_argument("--scratch-ours", action="store_true", help="also train Ours with a learner from scratch")
    parser.add_argument("--guidance-weight", type=float, default=10.0, help="λ of Eq. (3) for 'Ours'")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    synthetic = synthetic_settings()["synthetic"]
    if args.quick:
        size, identities, per_identity, pairs, hr_epochs, ft_epochs = 32, 20, 8, 100, 1, 1
    else:
        size, identities, per_identity = 64, synthetic["num_identities"], synthetic["images_per_identity"]
        pairs = synthetic.get("pairs", 600)
        hr_epochs, ft_epochs = 8, 4
    lr_size = size // 8
    difficulty = float(synthetic.get("difficulty", 1.0))
    seed = int(synthetic.get("seed", 0))
    backbone = {"backbone": "iresnet18", "backbone_kwargs": {"width": 8}, "embedding_size": 128}
    schedule = {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4}
    hr_schedule = schedule | {"lr": 0.1, "warmup_epochs": 1, "milestones": [int(0.7 * hr_epochs), int(0.9 * hr_epochs)]}
    ft_schedule = schedule | {"lr": 0.01, "milestones": [int(0.8 * ft_epochs)]}
    margin_head = {"head": "arcface", "scale": 32.0, "margin": 0.3}
    common = {"num_classes": identities, "image_size": (size, size)}

    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "faces"
        render_folder(root, identities, per_identity, size, seed, difficulty)
        print(f"rendered {identities * per_identity} faces at {size} px in {time.time() - start:.0f} s", flush=True)
        dm = FaceDataModule(
            train_format="folder",
            train_root=str(root),
            image_size=(size, size),
            val_sets=["synthetic"],
            synthetic=SyntheticOptions(pairs=pairs, seed=seed, difficulty=difficulty),
            protocols=[lr_size],
            degradation=DegradationOptions(lr_policy="fixed", lr_sizes=[lr_size]),
            batch_size=64,
            eval_batch_size=200,
            num_workers=0,
        )
        results: dict[str, dict[str, float]] = {}

        def run(name: str, model: CrossResMethod, epochs: int) -> CrossResMethod:
            tic = time.time()
            trainer(epochs).fit(model, datamodule=dm)
            results[name] = evaluate(model, dm)
            cells = " ".join(f"{k} {v:.1f}" for k, v in results[name].items())
            print(f"{name}: {cells}  ({time.time() - tic:.0f} s)", flush=True)
            return model

        pl.seed_everything(0)
        hr_model = run("CNN_H only (HR)", Baseline(**backbone, **margin_head, **hr_schedule, **common), hr_epochs)
        guide = Path(tmp) / "guide.ckpt"
        torch.save({"state_dict": hr_model.state_dict()}, guide)
        pl.seed_everything(0)
        run("CNN_L only (LR)", Baseline(**backbone, **margin_head, **hr_schedule, **common, train_on="lr"), hr_epochs)
        pl.seed_everything(0)
        staged = Baseline(**backbone, **margin_head, **ft_schedule, **common, train_on="lr", finetune_from=str(guide))
        run("[12] staged HR -> LR fine-tune", staged, ft_epochs)
        ours = f"Ours (λ={args.guidance_weight:g})"
        guided_runs = [
            ("Ours* (λ=0), learner from the guide", 0.0, True, ft_epochs, ft_schedule),
            (f"{ours}, learner from the guide", args.guidance_weight, True, ft_epochs, ft_schedule),
            ("Ours* (λ=0), learner from scratch", 0.0, False, hr_epochs, hr_schedule),
        ]
        if args.scratch_ours:
            guided_runs.append((f"{ours}, learner from scratch", args.guidance_weight, False, hr_epochs, hr_schedule))
        for name, weight, from_guide, epochs, sched in guided_runs:
            pl.seed_everything(0)
            model = GuidedCNN(
                **backbone,
                **sched,
                **common,
                guide_weights=str(guide),
                guidance_weight=weight,
                init_learner_from_guide=from_guide,
            )
            run(name, model, epochs)
            if weight > 0:
                model.hparams["test_mode"] = "unknown"  # §3.1: the same model, the query embedded by both CNNs
                results[f"{name}, unknown resolution"] = evaluate(model, dm)

    title = f"Guided-CNN Table 1 shape: synthetic faces {size} px, probes {lr_size} px (8x), 10-fold accuracy %"
    lines = [f"### {title}", "", "| method | HR-HR | LR-LR | HR-LR |", "|---|---|---|---|"]
    for name, cells in results.items():
        lines.append(
            f"| {name} | " + " | ".join(f"{cells.get(c, float('nan')):.1f}" for c in ("HR-HR", "LR-LR", "HR-LR")) + " |"
        )
    print("\n" + "\n".join(lines) + f"\n\n(total {time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
