"""DCR (003) Table I, in shape, on the embedded synthetic faces: the trunk alone vs DCR at 8/12/16/20 px probes.

Step 1 trains the paper's trunk (``DCRTwoStage(stage=1)``) on each face at HR, 40x40 and 6x6 (upsampled back) with
softmax + center loss, Eq. (1); step 2 freezes it and trains one branch pair per probe size with the CM loss,
Eq. (5). Both are scored by HR-LR verification (10-fold accuracy, both pair orders, as Table I): the "Trunk network"
row embeds HR and LR faces with the trunk feature ``v``, the DCR rows route each probe to the branch pair of its
size (or of the resolution estimator's guess) and the HR face through that pair's HR branch.

Expected shape (Table I, LFW, trunk network vs DCR): DCR above the trunk at every probe size, the gain larger at the
lower sizes (the paper's: +1.4 / +1.7 / +1.1 / +0.5 points at 8 / 12 / 16 / 20 px, largest at 12 px).

CPU budget: the faces are rendered once at 56 px, half the paper's 112 px (identity count, images per identity,
pair count and nuisance from experiments/data/synthetic.yaml), and every size is halved with them: probes of
4/6/8/10 px stand for the paper's 8/12/16/20 px, the trunk's LR views are 20x20 and 3x3 for 40x40 and 6x6. The
trunk is the paper's architecture at width 8 (channels 8-128) with a 128-d feature, trained with AdamW (lr 1e-3;
the BatchNorm-free trunk learns far more slowly with the paper's momentum SGD in a CPU budget). ``--size 112``
runs the paper's sizes. Run times: ``experiments/README.md``.

``--eval-pairs N`` scores the trunk and DCR once more on N pairs of ``--eval-pair-identities`` unseen identities and
gives each gain with a paired bootstrap interval (pairs resampled within the 10 folds): the paper's gains are smaller
than the standard error of the 600 default pairs, so only the large pair set shows their shape
(``experiments/README.md`` has the measured table).

Usage:
    python benchmarks/reproduce_dcr.py            # full
    python benchmarks/reproduce_dcr.py --quick    # smoke run
    python benchmarks/reproduce_dcr.py --size 112 --eval-pairs 6000 --eval-pair-identities 1000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from common import fold_bootstrap, paired_difference, render_folder, synthetic_settings, trainer

from crossres.data.datamodule import FaceDataModule
from crossres.data.options import DegradationOptions, SyntheticOptions
from crossres.methods.dcr import DCRTwoStage

PAPER_PROBES = (8, 12, 16, 20)
PAPER_VIEWS = (40, 6)


def hr_lr_accuracy(model: DCRTwoStage, dm: FaceDataModule) -> dict[str, float]:
    """HR-HR and HR-LR accuracy (%) per protocol."""
    trainer(1, validate=True).validate(model, datamodule=dm, verbose=False)
    out = {}
    for row in model.eval_results["val"]:
        if row["comparison"] == "HR-LR":
            out[row["protocol"]] = 100 * row["acc"]
        elif row["comparison"] == "HR-HR":
            out["HR"] = 100 * row["acc"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run on tiny data")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--size", type=int, default=56, help="HR face size (the paper's sizes are scaled by size/112)")
    parser.add_argument("--width", type=int, default=8, help="trunk width (32 in the paper)")
    parser.add_argument("--trunk-epochs", type=int, default=8)
    parser.add_argument("--branch-epochs", type=int, default=8)
    parser.add_argument("--eval-pairs", type=int, default=0, help="also score the gains on this many pairs (0: no)")
    parser.add_argument("--eval-pair-identities", type=int, default=1000, help="identities of those pairs")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap rounds of the gains' intervals")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = synthetic_settings()
    size = args.size
    synthetic = data["synthetic"]
    identities, per_identity, pairs = synthetic["num_identities"], synthetic["images_per_identity"], synthetic["pairs"]
    trunk_epochs, branch_epochs = args.trunk_epochs, args.branch_epochs
    if args.quick:
        identities, per_identity, pairs, trunk_epochs, branch_epochs = 12, 6, 100, 1, 1
    scale = size / 112
    probes = [max(1, round(k * scale)) for k in PAPER_PROBES]
    views = [f"{max(1, round(k * scale))}x{max(1, round(k * scale))}" for k in PAPER_VIEWS]
    difficulty = float(synthetic.get("difficulty", 1.0))
    seed = int(synthetic.get("seed", 0))
    common: dict[str, Any] = {
        "num_classes": identities,
        "image_size": (size, size),
        "trunk": "dcr_resnet",
        "trunk_kwargs": {"width": args.width},
        "embedding_size": 128,
        "optimizer": "adamw",
        "weight_decay": 5e-4,
    }

    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "faces"
        render_folder(root, identities, per_identity, size, seed, difficulty)
        print(f"rendered {identities * per_identity} faces at {size} px in {time.time() - start:.0f} s", flush=True)

        def datamodule(lr_views: list[Any], **evaluation: int) -> FaceDataModule:
            return FaceDataModule(
                train_format="folder",
                train_root=str(root),
                image_size=(size, size),
                val_sets=["synthetic"],
                synthetic=SyntheticOptions(seed=seed, difficulty=difficulty, **({"pairs": pairs} | evaluation)),
                protocols=list(probes),
                degradation=DegradationOptions(
                    lr_policy="fixed", lr_sizes=[probes[0]], lr_prob=0.0, lr_views=list(lr_views)
                ),
                batch_size=64,
                eval_batch_size=200,
                num_workers=0,
            )

        # Step 1 (§II-B): the trunk on HR + the two LR views, Eq. (1).
        pl.seed_everything(0)
        stage1 = DCRTwoStage(
            stage=1,
            trunk_resolutions=views,
            lr=1e-3,
            warmup_epochs=1,
            milestones=[int(0.75 * trunk_epochs)],
            **common,
        )
        tic = time.time()
        trainer(trunk_epochs, print_epochs=True).fit(stage1, datamodule=datamodule(views))
        results = {"Trunk network": hr_lr_accuracy(stage1, datamodule(views))}
        print(f"trunk: {results['Trunk network']} ({time.time() - tic:.0f} s)", flush=True)
        trunk_ckpt = Path(tmp) / "stage1.ckpt"
        torch.save({"state_dict": stage1.state_dict()}, trunk_ckpt)

        # Step 2: the frozen trunk and one branch pair per probe size, Eq. (5).
        pl.seed_everything(0)
        stage2 = DCRTwoStage(
            stage=2,
            trunk_weights=str(trunk_ckpt),
            branch_sizes=list(probes),
            branch_features=128,
            lr=1e-3,
            milestones=[max(1, int(0.75 * branch_epochs))],
            **common,
        )
        tic = time.time()
        dm2 = datamodule(list(probes))
        trainer(branch_epochs, print_epochs=True).fit(stage2, datamodule=dm2)
        frozen = all(torch.equal(a, b) for a, b in zip(stage1.trunk.state_dict().values(),
                                                        stage2.trunk.state_dict().values(), strict=True))  # fmt: skip
        results["DCR (branch by probe size)"] = hr_lr_accuracy(stage2, dm2)
        stage2.hparams["branch_selection"] = "estimator"
        results["DCR (branch by resolution estimator)"] = hr_lr_accuracy(stage2, dm2)
        print(f"branches: ({time.time() - tic:.0f} s), trunk bit-identical after step 2: {frozen}", flush=True)
        stage2.hparams["branch_selection"] = "size"
        gains = []
        if args.eval_pairs:
            tic = time.time()
            big = datamodule(list(probes), pairs=args.eval_pairs, pair_identities=args.eval_pair_identities)
            accs = {name: hr_lr_accuracy(model, big) for name, model in (("trunk", stage1), ("dcr", stage2))}
            samples = fold_bootstrap(args.eval_pairs, args.bootstrap, seed=0)
            for probe, paper_probe in zip(probes, PAPER_PROBES, strict=True):
                point, low, high = paired_difference(
                    stage2.eval_scores["val"], stage1.eval_scores["val"], probe, samples
                )
                gains.append(
                    f"| {paper_probe} px ({probe} px) | {accs['trunk'][f'{probe}px']:.2f} | "
                    f"{accs['dcr'][f'{probe}px']:.2f} | {100 * point:+.2f} | [{100 * low:+.2f}, {100 * high:+.2f}] |"
                )
            print(f"{args.eval_pairs}-pair evaluation: {time.time() - tic:.0f} s", flush=True)

    paper = DCRTwoStage(stage=2, num_classes=10, image_size=(112, 96), trunk_kwargs={"width": 32}, branch_features=512)
    sizes, ours = paper.parameter_sizes, stage2.parameter_sizes
    protocols = [f"{p}px" for p in probes]
    title = (
        f"DCR Table I shape: synthetic faces at {size} px (the paper's sizes x {size}/112), HR-LR 10-fold "
        "verification accuracy %"
    )
    header = " | ".join(f"{k} px ({p} px)" for k, p in zip(PAPER_PROBES, probes, strict=True))
    lines = [f"### {title}", "", f"| probe size: paper (here) | {header} | HR-HR |", "|---" * (len(probes) + 2) + "|"]
    for name, cells in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{cells[p]:.1f}" for p in protocols) + f" | {cells['HR']:.1f} |")
    gain = [results["DCR (branch by probe size)"][p] - results["Trunk network"][p] for p in protocols]
    lines.append("| gain of DCR over the trunk | " + " | ".join(f"{g:+.1f}" for g in gain) + " | |")
    lines += [
        "",
        f"Parameters at the paper's size (width 32, 112x96, 512-d): trunk {sizes['trunk_mib']:.1f} MiB, one branch "
        f"pair {sizes['branch_pair_mib']:.2f} MiB -> trunk {100 * sizes['trunk_share']:.1f} % / branch pair "
        f"{100 * sizes['branch_share']:.1f} % (paper: 105 MB, 2 MB, 98.1 % / 1.9 %).",
        f"This run (width {args.width}, {size} px, 128-d): trunk {ours['trunk']:,} parameters, one branch pair "
        f"{ours['branch_pair']:,} ({100 * ours['branch_share']:.1f} %), all {len(probes)} pairs {ours['branches']:,}.",
        f"Trunk weights bit-identical after step 2: {frozen}. Epochs: trunk {trunk_epochs}, branches {branch_epochs}.",
    ]
    if gains:
        lines += [
            "",
            f"On {args.eval_pairs} pairs of {args.eval_pair_identities} unseen identities (HR-LR 10-fold accuracy %; "
            f"gain with its 95 % paired bootstrap interval, {args.bootstrap} rounds of pairs resampled within folds):",
            "",
            "| probe: paper (here) | trunk | DCR (branch by size) | gain | 95 % interval |",
            "|---|---|---|---|---|",
            *gains,
        ]
    print("\n" + "\n".join(lines) + f"\n\n(total {time.time() - start:.0f} s wall, {time.process_time():.0f} s CPU)")


if __name__ == "__main__":
    main()
