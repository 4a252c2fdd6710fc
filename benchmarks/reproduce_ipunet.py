"""IPU-Net (002) Table 1/2, in shape, on the embedded synthetic faces: rank-1 of bicubic vs IPU-Net per probe size.

An HR recogniser (the HR Baseline) is trained first; IPU-Net then trains its U-Net in front of the frozen recogniser
with L_embedding + 5·L_pixel (Eq. 3.3) on LR sizes drawn uniformly from the paper's list. Test (002 §4.1/§4.2):
closed-set identification on unseen identities, one HR gallery image per identity, the other images as probes at
each LR size; "bicubic" embeds the bicubic-upsampled probe with the recogniser, "IPU-Net" its SR version
(``IPUNet.embed_lr``), "IPU-Net + bicubic" concatenates both (§4.3). Also PSNR/SSIM of bicubic and SR faces
against HR, and an SR grid (docs/img/ipunet_sr_grid.png).

Expected shape (Table 1): IPU-Net's rank-1 at or above bicubic's at every probe size, the gain largest at the
middle sizes (the smallest sizes keep too little identity for either).

CPU budget: faces are rendered once at 64 px (identity count, images per identity and nuisance from
experiments/data/synthetic.yaml) and every size of the paper's 112x96 list is scaled by (64/112, 64/96); the U-Net
takes the 64 px face directly (sr_size 64, 6 blocks: the paper's 128 px / 7 blocks scaled down), width 16; the
recogniser is a width-8 iresnet18.

Usage:
    python benchmarks/reproduce_ipunet.py            # full
    python benchmarks/reproduce_ipunet.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from common import REPO, render_folder, synthetic_settings, trainer
from PIL import Image

from crossres.data.datamodule import FaceDataModule
from crossres.data.options import DegradationOptions
from crossres.data.synthetic import SyntheticFaces
from crossres.methods.baseline import Baseline
from crossres.methods.ipunet import IPUNet
from crossres.metrics.identification import rank_k_accuracy
from crossres.metrics.image_quality import psnr, ssim
from crossres.transforms.functional import degrade, to_float, to_uint8

GRID = REPO / "docs" / "img" / "ipunet_sr_grid.png"
#: 002 §3.3 training sizes on 112x96 faces (the last is HR itself).
PAPER_TRAIN = [(7, 6), (11, 8), (14, 12), (16, 12), (16, 14), (16, 16), (18, 16), (21, 15), (32, 32), (112, 96)]
#: Probe sizes of Table 1 (AR) and Table 2 (LFW).
PAPER_PROBES = [(7, 6), (11, 8), (14, 12), (16, 12), (16, 14), (16, 16), (18, 16), (21, 15), (32, 32)]


def scaled(size: tuple[int, int], hr: int) -> tuple[int, int]:
    """A size of the paper's 112x96 faces on ``hr x hr`` faces."""
    return max(1, round(size[0] * hr / 112)), max(1, round(size[1] * hr / 96))


@torch.no_grad()
def batched(fn: Any, images: torch.Tensor, chunk: int = 100) -> torch.Tensor:
    return torch.cat([fn(images[i : i + chunk]) for i in range(0, images.shape[0], chunk)])


def save_grid(hr: torch.Tensor, columns: list[tuple[str, torch.Tensor]], path: Path, zoom: int = 2) -> None:
    """Rows: faces; columns: HR, then (bicubic, SR) per size. Labels are in the README, not in the image."""
    tiles = [hr, *[images for _, images in columns]]
    rows = [torch.cat([t[i] for t in tiles], dim=2) for i in range(hr.shape[0])]
    grid = to_uint8(torch.cat(rows, dim=1)).permute(1, 2, 0).numpy()
    image = Image.fromarray(np.ascontiguousarray(grid))
    image = image.resize((image.width * zoom, image.height * zoom), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run on tiny data")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--hr-epochs", type=int, default=10, help="epochs of the HR recogniser")
    parser.add_argument("--sr-epochs", type=int, default=6, help="epochs of IPU-Net")
    parser.add_argument("--recognizer", type=str, default=None, help="reuse an HR Baseline checkpoint (same args)")
    parser.add_argument("--no-grid", action="store_true", help="do not write docs/img/ipunet_sr_grid.png")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    synthetic = synthetic_settings()["synthetic"]
    size = 64
    identities, per_identity = synthetic["num_identities"], synthetic["images_per_identity"]
    test_identities, test_per_identity = 100, 5
    hr_epochs, sr_epochs = args.hr_epochs, args.sr_epochs
    if args.quick:
        identities, per_identity, test_identities, hr_epochs, sr_epochs = 12, 6, 10, 1, 1
    difficulty = float(synthetic.get("difficulty", 1.0))
    knobs = {k: difficulty for k in ("pose", "illumination", "expression", "clutter", "noise")}
    seed = int(synthetic.get("seed", 0))
    recogniser = {"backbone": "iresnet18", "backbone_kwargs": {"width": 8}, "embedding_size": 128}
    common = {"num_classes": identities, "image_size": (size, size)}
    train_sizes = [list(scaled(s, size)) for s in PAPER_TRAIN]

    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "faces"
        render_folder(root, identities, per_identity, size, seed, knobs)
        print(f"rendered {identities * per_identity} faces at {size} px in {time.time() - start:.0f} s", flush=True)

        def datamodule(lr_sizes: list[Any]) -> FaceDataModule:
            return FaceDataModule(
                train_format="folder",
                train_root=str(root),
                image_size=(size, size),
                val_sets=["synthetic"],
                degradation=DegradationOptions(lr_policy="choice", lr_sizes=lr_sizes),
                batch_size=32,
                num_workers=0,
            )

        if args.recognizer is None:
            tic = time.time()
            pl.seed_everything(0)
            hr_model = Baseline(
                **recogniser,
                head="arcface",
                scale=32.0,
                margin=0.3,
                lr=0.1,
                warmup_epochs=1,
                milestones=[int(0.7 * hr_epochs), int(0.9 * hr_epochs)],
                **common,
            )
            trainer(hr_epochs, print_epochs=True).fit(hr_model, datamodule=datamodule([size]))
            recognizer_path = str(Path(tmp) / "hr.ckpt")
            torch.save({"state_dict": hr_model.state_dict()}, recognizer_path)
            print(f"HR recogniser: {hr_epochs} epochs ({time.time() - tic:.0f} s)", flush=True)
        else:
            recognizer_path = args.recognizer

        tic = time.time()
        pl.seed_everything(0)
        model = IPUNet(
            **recogniser,
            recognizer_weights=recognizer_path,
            sr_size=size,
            unet_depth=6,
            unet_width=16,
            milestones=[max(1, int(0.8 * sr_epochs))],
            **common,
        )
        # 002 §3.3: sizes drawn with equal probability from the (scaled) list, HR included.
        trainer(sr_epochs, print_epochs=True).fit(model, datamodule=datamodule(train_sizes))
        print(f"IPU-Net: {sr_epochs} epochs ({time.time() - tic:.0f} s)", flush=True)

    # Closed-set identification on unseen identities: image 0 of each identity is the HR gallery, the rest probes.
    model.eval()
    torch.set_grad_enabled(False)
    test = SyntheticFaces(test_identities, test_per_identity, size, seed + 1, identity_offset=100_000,
                          return_priors=False, **knobs)  # fmt: skip
    images = to_float(torch.stack([test[i]["image"] for i in range(len(test))]))
    labels = torch.arange(test_identities).repeat_interleave(test_per_identity)
    is_gallery = torch.arange(len(test)) % test_per_identity == 0
    gallery, probes = images[is_gallery], images[~is_gallery]
    gallery_labels, probe_labels = labels[is_gallery], labels[~is_gallery]
    recognizer = model.recognizer

    def rank1(gallery_embedding: torch.Tensor, probe_embedding: torch.Tensor) -> float:
        return 100 * rank_k_accuracy(gallery_embedding, gallery_labels, probe_embedding, probe_labels)

    gallery_embedding = batched(recognizer, gallery)
    concat = IPUNet(**recogniser, **common, sr_size=size, unet_depth=6, unet_width=16, concat_bicubic=True)
    concat.load_state_dict(model.state_dict())
    concat.eval()
    gallery_concat = batched(concat.embed_hr, gallery)
    rows: dict[str, list[float]] = {"bicubic": [], "IPU-Net": [], "IPU-Net + bicubic (§4.3)": []}
    quality: dict[str, list[float]] = {"PSNR bicubic": [], "PSNR IPU-Net": [], "SSIM bicubic": [], "SSIM IPU-Net": []}
    grid_columns: list[tuple[str, torch.Tensor]] = []
    probe_sizes = [scaled(s, size) for s in PAPER_PROBES]
    for paper_size, lr_size in zip(PAPER_PROBES, probe_sizes, strict=True):
        lr = degrade(probes, lr_size)
        sr = batched(model.super_resolve, lr)
        size_rows = torch.tensor(lr_size).expand(lr.shape[0], 2)
        concat_embedding = torch.cat([concat.embed_lr(lr[i : i + 100], size_rows[i : i + 100])
                                      for i in range(0, lr.shape[0], 100)])  # fmt: skip
        rows["bicubic"].append(rank1(gallery_embedding, batched(recognizer, lr)))
        rows["IPU-Net"].append(rank1(gallery_embedding, batched(recognizer, sr)))
        rows["IPU-Net + bicubic (§4.3)"].append(rank1(gallery_concat, concat_embedding))
        quality["PSNR bicubic"].append(float(psnr(lr, probes)))
        quality["PSNR IPU-Net"].append(float(psnr(sr, probes)))
        quality["SSIM bicubic"].append(float(ssim(lr, probes)))
        quality["SSIM IPU-Net"].append(float(ssim(sr, probes)))
        if paper_size in ((7, 6), (14, 12), (21, 15), (32, 32)):
            grid_columns += [(f"{paper_size} bicubic", lr[:6]), (f"{paper_size} SR", sr[:6])]
    hr_rank1 = rank1(gallery_embedding, batched(recognizer, probes))
    # A smoke run never replaces the documented grid.
    grid = REPO / "runs" / "reproduce_ipunet_quick_grid.png" if args.quick else GRID
    if not args.no_grid:
        grid.parent.mkdir(parents=True, exist_ok=True)
        save_grid(probes[:6], grid_columns, grid)

    chance = 100 / test_identities
    title = (
        f"IPU-Net Table 1/2 shape: synthetic faces at {size} px (the paper's 112x96 sizes scaled), rank-1 "
        f"identification % ({test_identities} unseen identities, 1 HR gallery image each, "
        f"{len(probe_labels)} probes; chance {chance:.0f} %)"
    )
    header = " | ".join(f"{h}x{w} ({lh}x{lw})" for (h, w), (lh, lw) in zip(PAPER_PROBES, probe_sizes, strict=True))
    lines = [f"### {title}", "", f"| probe: paper (here) | {header} |", "|---" * (len(PAPER_PROBES) + 1) + "|"]
    for name, cells in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    gain = [a - b for a, b in zip(rows["IPU-Net"], rows["bicubic"], strict=True)]
    lines.append("| gain of IPU-Net over bicubic | " + " | ".join(f"{g:+.1f}" for g in gain) + " |")
    for name, cells in quality.items():
        digits = 2 if name.startswith("PSNR") else 3
        lines.append(f"| {name} | " + " | ".join(f"{c:.{digits}f}" for c in cells) + " |")
    lines += [
        "",
        f"HR probes (no degradation): rank-1 {hr_rank1:.1f} %. Epochs: recogniser {hr_epochs}, IPU-Net {sr_epochs}.",
        f"SR grid: {grid.relative_to(REPO)} (rows: probes; columns: HR, then bicubic | SR at 7x6, 14x12, 21x15, "
        "32x32 of the paper's sizes).",
    ]
    print("\n" + "\n".join(lines) + f"\n\n(total {time.time() - start:.0f} s wall, {time.process_time():.0f} s CPU)")


if __name__ == "__main__":
    main()
