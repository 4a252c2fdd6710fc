"""Real faces, real recogniser: dlib's ResNet through crossres on LFW, against dlib's own pipeline.

Steps (each skipped when its output exists, so a rerun continues):

1. ``dlib``: dlib's own pipeline on every photo of ``pairs.txt`` (needs ``crossres[dlib]``): HOG detector with
   upsample 1, then 2, then the MMOD detector for photos HOG misses; the face nearest the photo centre; dlib's
   5-point predictor; ``get_face_chip(150, 0.25)``; ``compute_face_descriptor``; Euclidean distance, 10 folds.
2. ``align``: ``crossres align --template dlib150`` over the same photos (the chips crossres evaluates).
3. ``test``: ``crossres test`` with ``dlib_resnet`` (weights parsed from dlib's ``.dat``, no dlib) on the chips and
   ``pairs.txt``: HR-HR, the LR sweep and Knoche's four protocols scaled to the chip.
4. ``report``: ``crossres report`` PNGs, and ``<out>/real_lfw.md`` with dlib's and crossres's numbers side by side.

Usage:
    python benchmarks/real_lfw.py --lfw data/lfw --out runs/real_lfw
    python benchmarks/real_lfw.py --lfw data/lfw --out runs/real_lfw --steps dlib   # one step

``--lfw`` holds ``images_deepfunneled/<Person>/<Person>_0001.jpg`` and ``pairs.txt`` (docs/real_faces.md says where
to get them).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from crossres.data.lfw import load_lfw_pairs
from crossres.metrics.verification import verification_metrics

STEPS = ("dlib", "align", "test", "report")
#: LR sweep on the 150 px chip (chip px; divide by ``knoche_scale()`` for the side of a 112 px ArcFace crop).
SWEEP = (8, 12, 16, 24, 32, 48, 96)
KNOCHE = ("low_res_focus", "mid_res_focus", "high_res_focus", "avg_sizes")
CASCADE = "hog:1,hog:2,mmod:1"


def crossres(*args: str) -> None:
    """Run a ``crossres`` command as a user would, in this interpreter's environment; stop on failure."""
    command = [sys.executable, "-m", "crossres", *args]
    print("$ crossres " + " ".join(args), flush=True)
    subprocess.run(command, check=True)


def align(paths: list[Path], lfw: Path, out: Path) -> Path:
    """``crossres align --template dlib150`` over the photos of the pairs (a folder of links, LFW's layout)."""
    chips = out / "chips"
    if chips.is_dir() and any(chips.iterdir()):
        return chips
    photos = out / "photos"
    for path in paths:
        link = photos / path.relative_to(lfw / "images_deepfunneled")
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(path.resolve())
    crossres(
        "align",
        str(photos),
        str(chips),
        "--template",
        "dlib150",
        "--cascade",
        CASCADE,
        "--multi-face",
        "center",
        "--ext",
        "png",
        "--decoder",
        "dlib",
    )
    return chips


def test(chips: Path, lfw: Path, out: Path, protocol_dir: Path | None) -> Path:
    """``crossres test`` of the pretrained dlib recogniser on ``pairs.txt`` over the chips; returns the results."""
    from crossres.data.chip import knoche_scale

    protocols = [*SWEEP, *KNOCHE]
    args = [
        "test",
        "--model",
        "crossres.methods.Baseline",
        "--model.backbone",
        "dlib_resnet",
        "--model.embedding_size",
        "128",
        "--model.backbone_kwargs",
        "{pretrained: true}",
        "--data.image_size",
        "[150, 150]",
        "--data.test_sets",
        f"[{lfw / 'pairs.txt'}@{chips}]",
        "--data.protocols",
        "[" + ", ".join(map(str, protocols)) + "]",
        "--data.knoche_scale",
        f"{knoche_scale():.4f}",
        "--data.eval_batch_size",
        "64",
        "--data.num_workers",
        "1",
        "--runs_dir",
        str(out),
        "--name",
        "dlib_pretrained",
        "--trainer.logger",
        "true",
    ]
    if protocol_dir is not None:
        args += ["--data.protocol_dir", str(protocol_dir)]
    crossres(*args)
    return max((out / "dlib_pretrained").glob("test-*/results_test.json"), key=lambda p: p.stat().st_mtime)


def pairs_images(lfw: Path) -> tuple[list[Path], torch.Tensor, torch.Tensor]:
    """The photos of ``pairs.txt`` (each once), the pairs as indices into them, and which pairs are the same person."""
    pair_set = load_lfw_pairs(lfw / "pairs.txt", lfw / "images_deepfunneled")
    paths = [Path(p) for p in pair_set.images.paths]  # type: ignore[attr-defined]
    return paths, pair_set.pairs, pair_set.issame


def _nearest_centre(detections: list, width: int, height: int) -> int:
    def distance(rect) -> float:
        cx, cy = (rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2
        return (cx - width / 2) ** 2 + (cy - height / 2) ** 2

    return min(range(len(detections)), key=lambda i: distance(detections[i]))


def dlib_reference(paths: list[Path], out: Path) -> dict[str, np.ndarray]:
    """dlib's own pipeline on every photo: descriptors, 5-point landmarks and the cascade stage that found the face."""
    import dlib

    from crossres.data.detect import dlib_model_path

    hog = dlib.get_frontal_face_detector()
    mmod = dlib.cnn_face_detection_model_v1(str(dlib_model_path("mmod")))
    shape5 = dlib.shape_predictor(str(dlib_model_path("landmarks5")))
    recogniser = dlib.face_recognition_model_v1(str(dlib_model_path("recognizer")))
    descriptors = np.full((len(paths), 128), np.nan, dtype=np.float32)
    landmarks = np.full((len(paths), 5, 2), np.nan, dtype=np.float32)
    stage = np.zeros(len(paths), dtype=np.int8)  # 1: HOG x1, 2: HOG x2, 3: MMOD, 0: no face
    start = time.perf_counter()
    for i, path in enumerate(paths):
        image = dlib.load_rgb_image(str(path))
        height, width = image.shape[:2]
        rects: list = []
        for found_by in (1, 2):  # the stage number is HOG's upsampling
            rects = list(hog(image, found_by))
            if rects:
                stage[i] = found_by
                break
        if not rects:
            rects = [d.rect for d in mmod(image, 1)]
            stage[i] = 3 if rects else 0
        if not rects:
            continue
        shape = shape5(image, rects[_nearest_centre(rects, width, height)])
        chip = dlib.get_face_chip(image, shape, 150, 0.25)
        descriptors[i] = np.asarray(recogniser.compute_face_descriptor(chip), dtype=np.float32)
        landmarks[i] = [(p.x, p.y) for p in shape.parts()]
        if (i + 1) % 500 == 0:
            rate = (i + 1) / (time.perf_counter() - start)
            print(f"dlib reference: {i + 1}/{len(paths)} photos, {rate:.1f}/s", flush=True)
    result = {"descriptors": descriptors, "landmarks": landmarks, "stage": stage}
    np.savez(out, paths=np.asarray([str(p) for p in paths]), **result)
    return result


def euclidean_accuracy(descriptors: np.ndarray, pairs: torch.Tensor, issame: torch.Tensor) -> dict[str, float]:
    """10-fold accuracy of dlib's descriptors with the Euclidean distance (a pair with a missing face scores worst)."""
    d = torch.from_numpy(descriptors)
    distance = (d[pairs[:, 0]] - d[pairs[:, 1]]).norm(dim=1)
    distance = torch.nan_to_num(distance, nan=float("inf"))
    scores = -distance.clamp_max(1e3)
    return verification_metrics(scores, issame)


#: Knoche et al. 2021 (papers/004), Table 2: their ArcFace ResNet-50 baseline on LFW, HR-LR accuracy %.
KNOCHE_LFW_BASELINE = {
    "high_res_focus": 99.20,
    "mid_res_focus": 95.89,
    "low_res_focus": 77.57,
    "avg_sizes": 96.86,
}


def _pct(row: dict, key: str = "acc") -> str:
    return f"{100 * row[key]:.2f}"


def summary_markdown(summary: dict) -> str:
    """The tables of docs/real_faces.md from ``summary.json``: dlib beside crossres, Knoche's protocols, the sweep."""
    from crossres.data.chip import knoche_scale

    lines: list[str] = []
    rows = summary.get("crossres", [])
    by_key = {(r["comparison"], r["protocol"]): r for r in rows}
    dlib, hr = summary.get("dlib"), by_key.get(("HR-HR", ""))
    if dlib and hr:
        lines += [
            "| LFW, 6,000 pairs of pairs.txt, 10 folds | accuracy % | TAR @ FAR 1e-3 % | EER % |",
            "|---|---|---|---|",
            f"| dlib's own pipeline (Euclidean distance) | {_pct(dlib)} ± {_pct(dlib, 'acc_std')} | "
            f"{_pct(dlib, 'tar_at_far')} | {_pct(dlib, 'eer')} |",
            f"| crossres: `dlib_resnet` on `dlib150` chips (cosine) | {_pct(hr)} ± {_pct(hr, 'acc_std')} | "
            f"{_pct(hr, 'tar_at_far')} | {_pct(hr, 'eer')} |",
            "",
            f"Difference (crossres - dlib): {100 * (hr['acc'] - dlib['acc']):+.2f} points.",
            "",
        ]
    knoche = [p for p in KNOCHE if ("HR-LR", p) in by_key]
    if knoche:
        lines += [
            "| Knoche protocol (HR-LR %) | sizes on a 112 px crop | on the chip | dlib_resnet, LFW | "
            "Knoche et al. 2021 Table 2 (ArcFace R50) |",
            "|---|---|---|---|---|",
        ]
        from crossres.data.protocols import KNOCHE_PROTOCOLS

        for name in knoche:
            low, high = KNOCHE_PROTOCOLS[name]
            chip = f"{max(1, round(low * knoche_scale()))}-{min(150, round(high * knoche_scale()))} px"
            row = by_key[("HR-LR", name)]
            lines.append(
                f"| {name} | {low}-{high} px | {chip} | {_pct(row)} ± {_pct(row, 'acc_std')} | "
                f"{KNOCHE_LFW_BASELINE[name]:.2f} |"
            )
        lines.append("")
    sizes = sorted({int(p[:-2]) for (c, p) in by_key if p.endswith("px")})
    if sizes:
        lines += [
            "| probe on the chip | on a 112 px crop | HR-LR % | LR-LR % | HR-HR % |",
            "|---|---|---|---|---|",
        ]
        for size in sizes:
            cross, equal = by_key.get(("HR-LR", f"{size}px")), by_key.get(("LR-LR", f"{size}px"))
            lines.append(
                f"| {size} px | {size / knoche_scale():.1f} px | {_pct(cross) if cross else '-'} | "
                f"{_pct(equal) if equal else '-'} | {_pct(hr) if hr else '-'} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--lfw", type=Path, default=Path("data/lfw"), help="LFW folder (images_deepfunneled/, pairs.txt)"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/real_lfw"), help="output folder")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS), help="steps to run (default: all)")
    parser.add_argument("--chips", type=Path, help="an aligned dlib150 folder to use instead of the align step")
    parser.add_argument(
        "--protocol-dir", type=Path, help="btm-stm evaluation-protocols/ folder (its LFW/*.csv sizes; else drawn)"
    )
    args = parser.parse_args(argv)
    if not (args.lfw / "pairs.txt").is_file() or not (args.lfw / "images_deepfunneled").is_dir():
        print(
            f"real_lfw: error: {args.lfw} must hold pairs.txt and images_deepfunneled/ (docs/real_faces.md)",
            file=sys.stderr,
        )
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    paths, pairs, issame = pairs_images(args.lfw)
    summary_path = args.out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if "dlib" in args.steps:
        cache = args.out / "dlib_reference.npz"
        if cache.is_file():
            loaded = np.load(cache)
            reference = {k: loaded[k] for k in ("descriptors", "landmarks", "stage")}
        else:
            start = time.perf_counter()
            reference = dlib_reference(paths, cache)
            summary["dlib_seconds"] = time.perf_counter() - start
        metrics = euclidean_accuracy(reference["descriptors"], pairs, issame)
        stages = np.bincount(reference["stage"], minlength=4).tolist()
        summary["dlib"] = {
            "photos": len(paths),
            "found_by": dict(zip(("none", "hog1", "hog2", "mmod"), stages, strict=True)),
        }
        summary["dlib"] |= {k: float(v) for k, v in metrics.items()}
        print(
            f"dlib's own pipeline: {100 * metrics['acc']:.2f} +- {100 * metrics['acc_std']:.2f} % "
            f"({len(pairs)} pairs); faces found by HOG x1 / x2 / MMOD / none: {stages[1:]} / {stages[0]}"
        )
    chips = args.chips or args.out / "chips"
    if "align" in args.steps and args.chips is None:
        start = time.perf_counter()
        chips = align(paths, args.lfw, args.out)
        summary["align_seconds"] = time.perf_counter() - start
    if "test" in args.steps:
        start = time.perf_counter()
        results = test(chips, args.lfw, args.out, args.protocol_dir)
        summary["test_seconds"] = time.perf_counter() - start
        summary["crossres"] = json.loads(results.read_text())
        summary["results"] = str(results)
    if "report" in args.steps and "results" in summary:
        crossres("report", str(Path(summary["results"]).parent), "--overwrite")
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "real_lfw.md").write_text(summary_markdown(summary))
    print(f"tables: {args.out / 'real_lfw.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
