"""RecordIO reading throughput: is JPEG decoding the bottleneck of training?

``SyntheticFaces`` (112 px) are written once as insightface RecordIO (``train.rec`` /
``train.idx`` / ``property``, JPEG quality 95 as insightface's ``faces_webface_112x112``) into a temporary folder,
then read three ways:

* **decode only**: ``RecordIOFaces[i]`` in one process, in order: file read + record header + JPEG decode;
* **training loader**: ``FaceDataModule(train_format="recordio").train_dataloader()`` with 0, 1, 2, ... workers
  (shuffled order, albumentations flip/colour jitter, collation: what ``crossres fit`` reads), one full epoch after
  one warm-up epoch (the OS file cache holds the ``.rec`` then, as it does on a training node after the first epoch);
* **consumption**: images per second one training step of ``experiments/baseline.yaml``'s model takes on this
  device (forward, backward and SGD step at batch 64; on a GPU also iresnet50 + ArcFace at batch 256, bf16 autocast).

The loader is not the bottleneck when its records/s with the workers a node can spare exceeds the consumption.

Usage:
    python benchmarks/bench_recordio.py --out runs/bench/recordio.json     # full: 3,000 faces, 0/1/2 workers
    python benchmarks/bench_recordio.py --quick                             # smoke: 128 faces, 0/1 workers
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from common import REPO, format_table, machine, median_ms, quiet_lightning, synchronize, time_calls, write_json

from crossres.data.datamodule import FaceDataModule
from crossres.data.folder import export_dataset
from crossres.data.recordio import RecordIOFaces
from crossres.data.synthetic import SyntheticFaces
from crossres.nn.backbones import build_backbone
from crossres.nn.heads import build_head


def write_rec(root: Path, identities: int, per_identity: int, seed: int) -> float:
    """Write the synthetic faces as RecordIO under ``root``; returns the seconds it took."""
    start = time.perf_counter()
    faces = SyntheticFaces(identities, per_identity, image_size=112, seed=seed, return_priors=False)
    export_dataset(faces, root, fmt="rec", quality=95)
    return time.perf_counter() - start


def decode_only(root: Path) -> float:
    """Records per second of ``RecordIOFaces[i]`` in one process, in file order."""
    data = RecordIOFaces(root)
    data[0]
    start = time.perf_counter()
    for i in range(len(data)):
        data[i]
    return len(data) / (time.perf_counter() - start)


def loader_rate(root: Path, workers: int, batch_size: int, seed: int) -> float:
    """Records per second of one epoch of the training loader, after one warm-up epoch."""
    data = FaceDataModule(
        train_format="recordio", train_root=str(root), batch_size=batch_size, num_workers=workers, seed=seed
    )
    loader = data.train_dataloader()
    rates = []
    for _ in range(2):
        start = time.perf_counter()
        seen = sum(int(batch["image"].shape[0]) for batch in loader)
        rates.append(seen / (time.perf_counter() - start))
    return rates[-1]


def consumption(
    backbone: str, backbone_kwargs: dict[str, Any], embedding: int, classes: int, batch: int, bf16: bool
) -> float:
    """Images per second of one SGD training step of ``backbone`` + ArcFace on the current device."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = build_backbone(backbone, embedding, (112, 112), **backbone_kwargs).to(device)
    head = build_head("arcface", embedding, classes).to(device)
    if device.type == "cpu":
        net = net.to(memory_format=torch.channels_last)  # as baseline.yaml's channels_last
    optimizer = torch.optim.SGD([*net.parameters(), *head.parameters()], lr=0.1, momentum=0.9)
    images = torch.rand(batch, 3, 112, 112, device=device)
    labels = torch.randint(classes, (batch,), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(head(net(images), labels).float(), labels)
        loss.backward()
        optimizer.step()

    synchronize(device)
    return batch / (median_ms(time_calls(step, 5 if device.type == "cuda" else 3, device, warmup=2)) / 1000)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 128 faces, 0/1 workers")
    parser.add_argument("--identities", type=int, default=100)
    parser.add_argument("--images-per-identity", type=int, default=30)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.identities, args.images_per_identity, args.workers = 8, 16, [0, 1]
    quiet_lightning()
    config = yaml.safe_load((REPO / "experiments" / "baseline.yaml").read_text())["model"]["init_args"]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "rec"
        write_s = write_rec(root, args.identities, args.images_per_identity, args.seed)
        count = args.identities * args.images_per_identity
        rec_mb = (root / "train.rec").stat().st_size / 2**20
        print(f"wrote {count} faces (112 px, JPEG q95) as RecordIO in {write_s:.1f} s: {rec_mb:.1f} MiB")
        rows = [{"reader": "RecordIOFaces[i], decode only", "workers": "-", "records_per_s": decode_only(root)}]
        for workers in args.workers:
            rate = loader_rate(root, workers, args.batch_size, args.seed)
            rows.append({"reader": "training loader (augment + collate)", "workers": workers, "records_per_s": rate})

    device = "cuda" if torch.cuda.is_available() else "cpu"
    classes = args.identities
    need = [
        {
            "model": f"baseline.yaml ({config['backbone']} {config['backbone_kwargs']}), batch {args.batch_size}",
            "device": device,
            "images_per_s": consumption(
                config["backbone"],
                config["backbone_kwargs"],
                config["embedding_size"],
                classes,
                args.batch_size,
                False,
            ),
        }
    ]
    if device == "cuda":
        need.append(
            {
                "model": "iresnet50 + ArcFace (10,572 classes), batch 256, bf16",
                "device": torch.cuda.get_device_name(0),
                "images_per_s": consumption("iresnet50", {}, 512, 10572, 256, True),
            }
        )
    print(format_table(rows, ["reader", "workers", "records_per_s"]))
    print("training consumes:")
    print(format_table(need, ["model", "device", "images_per_s"]))
    fastest = max(r["records_per_s"] for r in rows[1:])
    verdict = all(fastest > n["images_per_s"] for n in need)
    busiest = max(n["images_per_s"] for n in need)
    print(
        f"fastest loader {fastest:.0f} records/s vs training {busiest:.0f} images/s: the reader is "
        + ("not the bottleneck" if verdict else "the bottleneck (add workers)")
    )
    results = {
        "benchmark": "recordio",
        "machine": machine(),
        "settings": vars(args) | {"faces": count},
        "write_seconds": write_s,
        "rec_mib": rec_mb,
        "readers": rows,
        "consumption": need,
        "reader_not_bottleneck": verdict,
    }
    write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
