"""Degradation throughput: crossres's batched ``degrade`` vs the seeds' per-image PIL loop, same images and sizes.

The published seeds degrade each face in ``Dataset.__getitem__``: PIL
``Image.resize(BICUBIC)`` down to the LR size, then back up to 112 px, one uint8 HWC image at a time. crossres
degrades the whole batch on the device (``crossres.transforms.functional.degrade``, backend ``"pil"``: torch's
antialiased bicubic, grouped by unique size). Both run here on the same faces (rendered by
``crossres.data.synthetic.SyntheticFaces``) with the same per-sample sizes drawn from {7, 14, 28, 56, 112}:

* CPU: milliseconds per batch of each, and the speed-up (goal: >= 5x on the 2-core CPU). crossres is also timed
  with one torch thread, so the gain from batching is told apart from the gain from a second core. The PIL loop
  is timed from the decoded uint8 images to the degraded uint8 images (no ``ToTensor``, no collation: the most
  favourable reading for the loop). The variants are timed in rounds, each round calling every one once in turn,
  so that a drift of the machine's speed reaches all of them alike.
* crossres on uint8 (``degrade`` of the uint8 batch: torch's uint8 antialiased kernels, rounded after each step
  as PIL does), timed the same way as the loop, uint8 in and uint8 out. Its input is the loop's decoded HWC images
  stacked, viewed as ``(B, C, H, W)`` (channels-last memory, no copy: the layout a collate of decoded images
  gives), on which torch's kernels are vectorised; a row with the batch in the default NCHW layout follows.
* The floor of the float path: converting the uint8 batch to float (``to_float``) alone, which any pipeline that
  feeds a network pays once.
* Agreement: mean absolute difference of each result and the PIL loop's in grey levels (``/255``); the ``"pil"``
  backend is documented to stay within 0.4.
* GPU (when ``torch.cuda.is_available()``): milliseconds per batch of ``degrade`` on the GPU and its share of one
  training step of iresnet50 + ArcFace at the same batch size, in fp32 and under bf16 autocast (goal: < 2 %).

Usage:
    python benchmarks/bench_degradation.py                        # full: 256 x 3 x 112 x 112 (about 15 s)
    python benchmarks/bench_degradation.py --quick                # smoke run: 32 faces, 2 rounds
    python benchmarks/bench_degradation.py --out runs/bench/degradation.json
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from common import format_table, machine, median_ms, time_calls, write_json
from PIL import Image
from torch import Tensor

from crossres.data.synthetic import SyntheticFaces
from crossres.nn.backbones import build_backbone
from crossres.nn.heads import build_head
from crossres.transforms.functional import degrade, to_float, to_uint8

SIZES = (7, 14, 28, 56, 112)
CPU = torch.device("cpu")


def render_faces(count: int, image_size: int, seed: int) -> Tensor:
    """``count`` synthetic faces, uint8 ``(count, 3, image_size, image_size)``, four images per identity."""
    faces = SyntheticFaces(math.ceil(count / 4), 4, image_size=image_size, seed=seed, return_priors=False)
    return torch.stack([faces[i]["image"] for i in range(count)])


def draw_sides(count: int, seed: int) -> Tensor:
    """Per-sample LR side lengths drawn uniformly from :data:`SIZES`, long ``(count,)``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.tensor(SIZES)[torch.randint(len(SIZES), (count,), generator=generator)]


def pil_loop(images: list[np.ndarray], sides: list[int]) -> list[np.ndarray]:
    """The seeds' ``__getitem__`` degradation: per image, PIL bicubic down to ``side``, then back up."""
    out = []
    for image, side in zip(images, sides, strict=True):
        height, width = image.shape[:2]
        small = Image.fromarray(image).resize((side, side), Image.Resampling.BICUBIC)
        out.append(np.asarray(small.resize((width, height), Image.Resampling.BICUBIC)))
    return out


def crossres_batched(images: Tensor, lr_size: Tensor) -> Tensor:
    """crossres: uint8 batch -> float in [0, 1] -> ``degrade`` with per-sample sizes, on the images' device."""
    return degrade(to_float(images), lr_size, backend="pil")


def interleaved(fns: dict[str, Any], repeats: int) -> dict[str, list[float]]:
    """Seconds of ``repeats`` rounds of CPU calls, each round calling every function once in turn (after one
    untimed round)."""
    for fn in fns.values():
        fn()
    seconds: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def with_threads(threads: int, fn: Any) -> Any:
    """Run ``fn()`` with ``threads`` torch intra-op threads, restoring the previous setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn()
    finally:
        torch.set_num_threads(previous)


def train_step_ms(batch: int, image_size: int, num_classes: int, bf16: bool, repeats: int) -> float:
    """Median milliseconds of one iresnet50 + ArcFace SGD step on the GPU (random faces and labels)."""
    device = torch.device("cuda")
    backbone = build_backbone("iresnet50", embedding_size=512, image_size=(image_size, image_size)).to(device)
    head = build_head("arcface", 512, num_classes).to(device)
    params = [*backbone.parameters(), *head.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    images = torch.rand(batch, 3, image_size, image_size, device=device)
    labels = torch.randint(num_classes, (batch,), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(head(backbone(images), labels).float(), labels)
        loss.backward()
        optimizer.step()

    return median_ms(time_calls(step, repeats, device, warmup=3))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 32 faces, 2 rounds")
    parser.add_argument("--batch", type=int, default=256, help="faces per batch (quick: 32)")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds of every variant (quick: 2)")
    parser.add_argument("--num-classes", type=int, default=10572, help="ArcFace classes of the GPU training step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.repeats = min(args.batch, 32), min(args.repeats, 2)

    images = render_faces(args.batch, args.image_size, args.seed)
    sides = draw_sides(args.batch, args.seed)
    lr_size = torch.stack([sides, sides], dim=1)
    images_hwc = [np.ascontiguousarray(image.permute(1, 2, 0).numpy()) for image in images]
    decoded = torch.from_numpy(np.stack(images_hwc)).permute(0, 3, 1, 2)  # channels-last view of the same bytes
    threads = torch.get_num_threads()
    shape = f"{args.batch}x3x{args.image_size}x{args.image_size}"
    print(f"batch {shape}, per-sample sizes from {SIZES}, {threads} torch thread(s), {args.repeats} repeats")

    # Every CPU variant is timed once per round, in turn, so that all of them see the same state of the machine
    # (its speed drifts by a third from minute to minute here, benchmarks/README.md).
    timed = interleaved(
        {
            "pil": lambda: pil_loop(images_hwc, sides.tolist()),
            "crossres": lambda: crossres_batched(images, lr_size),
            "crossres_1_thread": lambda: with_threads(1, lambda: crossres_batched(images, lr_size)),
            "crossres_uint8": lambda: degrade(decoded, lr_size),
            "crossres_uint8_1_thread": lambda: with_threads(1, lambda: degrade(decoded, lr_size)),
            "crossres_uint8_nchw": lambda: degrade(images, lr_size),
            "to_float": lambda: to_float(images),
        },
        args.repeats,
    )
    pil_s, torch_s, one_thread_s = timed["pil"], timed["crossres"], timed["crossres_1_thread"]
    uint8_s, uint8_one_s, uint8_nchw_s = (
        timed["crossres_uint8"],
        timed["crossres_uint8_1_thread"],
        timed["crossres_uint8_nchw"],
    )
    convert_s = timed["to_float"]
    reference = torch.from_numpy(np.stack(pil_loop(images_hwc, sides.tolist()))).permute(0, 3, 1, 2)
    ours = to_uint8(crossres_batched(images, lr_size))
    mae = float((ours.float() - reference.float()).abs().mean())
    ours_uint8 = degrade(decoded, lr_size)
    assert torch.equal(ours_uint8, degrade(images, lr_size)), "the layout must not change the result"
    mae_uint8 = float((ours_uint8.float() - reference.float()).abs().mean())
    max_uint8 = int((ours_uint8.int() - reference.int()).abs().max())

    pil_ms = median_ms(pil_s)

    def row(variant: str, device: str, threads: int | None, seconds: list[float]) -> dict[str, Any]:
        ms = median_ms(seconds)
        return {
            "variant": variant,
            "device": device,
            "threads": threads,
            "ms_per_batch": ms,
            "speedup_vs_pil": pil_ms / ms,
        }

    rows = [
        row("PIL per-image loop (seeds)", "cpu", 1, pil_s),
        row("crossres degrade, batched", "cpu", threads, torch_s),
        row("crossres degrade, batched", "cpu", 1, one_thread_s),
        row("crossres degrade, uint8 batch (decoded, channels-last)", "cpu", threads, uint8_s),
        row("crossres degrade, uint8 batch (decoded, channels-last)", "cpu", 1, uint8_one_s),
        row("crossres degrade, uint8 batch (NCHW contiguous)", "cpu", threads, uint8_nchw_s),
        row("to_float of the batch alone (floor)", "cpu", threads, convert_s),
    ]

    gpu: dict[str, Any] | None = None
    if torch.cuda.is_available():
        device = torch.device("cuda")
        images_gpu = images.to(device)
        gpu_s = time_calls(lambda: crossres_batched(images_gpu, lr_size), max(args.repeats, 20), device, warmup=3)
        gpu_ms = median_ms(gpu_s)
        rows.append(row("crossres degrade, batched", "cuda", None, gpu_s))
        steps = {
            precision: train_step_ms(args.batch, args.image_size, args.num_classes, precision == "bf16", args.repeats)
            for precision in ("fp32", "bf16")
        }
        gpu = {
            "device": torch.cuda.get_device_name(0),
            "degrade_ms": gpu_ms,
            "iresnet50_step_ms": steps,
            "share_of_step": {precision: gpu_ms / step for precision, step in steps.items()},
        }

    print(format_table(rows, ["variant", "device", "threads", "ms_per_batch", "speedup_vs_pil"]))
    print(f"degrade (pil backend) vs PIL loop: mean abs difference {mae:.3f} grey levels (/255)")
    print(f"degrade of uint8 vs PIL loop: mean abs difference {mae_uint8:.4f}, largest {max_uint8} grey levels")
    speedup = pil_ms / median_ms(torch_s)
    speedup_uint8 = pil_ms / median_ms(uint8_s)
    best = max(speedup, speedup_uint8)
    print(
        f"CPU speed-up float {speedup:.2f}x, uint8 {speedup_uint8:.2f}x at {threads} thread(s) (goal >= 5x): "
        f"{'met' if best >= 5 else 'NOT met'}; to_float alone is {pil_ms / median_ms(convert_s):.2f}x the loop's speed"
    )
    if gpu is not None:
        share_rows = [
            {"precision": p, "iresnet50_step_ms": gpu["iresnet50_step_ms"][p], "degrade_ms": gpu["degrade_ms"]}
            | {"share_%": 100 * gpu["share_of_step"][p]}
            for p in ("fp32", "bf16")
        ]
        print(f"GPU ({gpu['device']}), iresnet50 + ArcFace ({args.num_classes} classes) step at batch {args.batch}:")
        print(format_table(share_rows, ["precision", "iresnet50_step_ms", "degrade_ms", "share_%"]))
        worst = 100 * max(gpu["share_of_step"].values())
        print(f"largest share {worst:.2f} % (goal < 2 %): {'met' if worst < 2 else 'NOT met'}")
    else:
        print("no GPU: the share of an iresnet50 training step is not measured")

    results = {
        "benchmark": "degradation",
        "machine": machine(),
        "settings": {"batch": args.batch, "image_size": args.image_size, "sizes": SIZES, "repeats": args.repeats},
        "rows": rows,
        "mae_vs_pil_grey_levels": mae,
        "mae_vs_pil_grey_levels_uint8": mae_uint8,
        "max_vs_pil_grey_levels_uint8": max_uint8,
        "cpu_speedup": speedup,
        "cpu_speedup_uint8": speedup_uint8,
        "gpu": gpu,
        "raw_seconds": {
            "pil": pil_s,
            "crossres": torch_s,
            "crossres_1_thread": one_thread_s,
            "crossres_uint8": uint8_s,
            "crossres_uint8_1_thread": uint8_one_s,
            "crossres_uint8_nchw": uint8_nchw_s,
            "to_float": convert_s,
        },
    }
    write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
