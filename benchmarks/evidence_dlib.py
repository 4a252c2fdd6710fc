"""Evidence for the dlib extra on a real photo: detection, 68 landmarks, alignment, priors, identity-judge curve.

The photo is ``skimage.data.astronaut()`` (Eileen Collins, NASA, public domain; 512 x 512, ships inside
scikit-image). The script

1. detects faces with dlib's HOG detector at 0 and 1 upsamplings and finds the 68 landmarks of the largest;
2. aligns the face onto the ArcFace 112 x 112 template from the five points (eye centres, nose tip, mouth
   corners) and measures how far the eye centres land from the template, both as mapped by the similarity and
   as re-detected on the aligned crop by dlib's shape predictor; then again with the eyes weighted 4:1 in the
   fit (``crossres align --point-weights 4 4 1 1 1``);
3. renders the 68 landmarks -> parsing map (``crossres.data.priors``, what RIM's priors use on real data) over
   the aligned crop, next to the detection, to a PNG;
4. measures the IdentityJudge's HR -> LR descriptor distance at 112/56/28/14/7/5 px with crossres's own
   degradation (``crossres.transforms.functional.degrade``, antialiased bicubic down and up): on the aligned
   112 x 112 crop (the crossres pipeline) and on dlib's own 150 x 150 chip (the issue's setup);
5. with ``--checkpoint``, the same curve after super-resolution by a trained RIM or IPU-Net: HR aligned at the
   model's input size, LR degraded, SR = ``model.super_resolve(LR)``, judged against HR.

Usage:
    pip install 'crossres[dlib]' scikit-image
    python benchmarks/evidence_dlib.py                                   # steps 1-4 (about 20 s of CPU)
    python benchmarks/evidence_dlib.py --checkpoint runs/rim/checkpoints/last.ckpt   # + step 5
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossres.data.align import align_faces, arcface_template, estimate_similarity
from crossres.data.detect import FaceDetector, dlib_shape, load_dlib_model, to_dlib_image
from crossres.data.priors import PARSING_CLASSES, landmarks_to_parsing
from crossres.metrics.identity import IdentityJudge, descriptor_distance
from crossres.report.identity import super_resolve
from crossres.transforms.functional import degrade, to_float, to_uint8

REPO = Path(__file__).resolve().parents[1]
SIZES = (112, 56, 28, 14, 7, 5)
#: Issue 9's reference curve: PIL bicubic down/up of dlib's 150 px chip.
ISSUE_PIL_CHIP = {112: 0.04, 56: 0.20, 28: 0.48, 14: 0.59, 7: 0.74, 5: 0.79}


def apply(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    return points @ matrix[:, :2].T + matrix[:, 2]


def judge_curve(judge: IdentityJudge, hr: torch.Tensor, landmarks: torch.Tensor, sizes: tuple[int, ...]) -> dict:
    """Descriptor distance of ``degrade(hr, s)`` to ``hr`` per size, with the HR landmarks for both."""
    reference = judge.descriptors(hr, landmarks)
    lr = torch.cat([degrade(hr, size) if size < hr.shape[-2] else hr for size in sizes])
    distances = descriptor_distance(judge.descriptors(lr, landmarks.expand(len(sizes), -1, -1)), reference)
    return {size: float(d) for size, d in zip(sizes, distances, strict=True)}


def chip_curve(chip: np.ndarray, sizes: tuple[int, ...]) -> dict:
    """The issue's setup: dlib's 150 px chip, degraded to ``s`` and back to 150 px (crossres's degradation)."""
    recognizer = load_dlib_model("recognizer")
    reference = np.asarray(recognizer.compute_face_descriptor(chip))
    x = to_float(torch.from_numpy(chip).permute(2, 0, 1)[None])
    out = {}
    for size in sizes:
        lr = to_uint8(degrade(x, size))[0]
        out[size] = float(np.linalg.norm(np.asarray(recognizer.compute_face_descriptor(to_dlib_image(lr))) - reference))
    return out


EYE_WEIGHTS = (4.0, 4.0, 1.0, 1.0, 1.0)


def load_sr_model(path: Path, method: str) -> Any:
    from crossres.methods import RIM, IPUNet, load_method

    if method == "auto":
        try:
            model = load_method(path)  # checkpoints of `crossres fit` name their class
        except ValueError:
            state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
            method = "RIM" if any(k.startswith("fhn.") for k in state) else "IPUNet"
        else:
            if not isinstance(model, (RIM, IPUNet)):
                raise SystemExit(f"--checkpoint {path} holds a {type(model).__name__}; needs RIM or IPUNet")
            return model, type(model).__name__
    cls = RIM if method == "RIM" else IPUNet
    return cls.load_from_checkpoint(path, map_location="cpu", weights_only=True).eval(), method


def sr_curve(model: Any, judge: IdentityJudge, hr: torch.Tensor, sizes: tuple[int, ...]) -> dict:
    """Bicubic and SR descriptor distances to HR per LR size (HR landmarks for every view)."""
    landmarks = judge.landmarks(hr)
    reference = judge.descriptors(hr, landmarks)
    out = {}
    for size in sizes:
        if size >= hr.shape[-2]:
            continue
        bicubic = degrade(hr, size)
        sr = super_resolve(model, bicubic)
        out[size] = {
            name: float(descriptor_distance(judge.descriptors(view, landmarks), reference)[0])
            for name, view in (("bicubic", bicubic), ("sr", sr))
        }
    return out


def overlay(photo: torch.Tensor, face: Any, crop: torch.Tensor, crop_landmarks: torch.Tensor, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    parsing = landmarks_to_parsing(crop_landmarks, tuple(crop.shape[-2:])).numpy()
    template = arcface_template(tuple(crop.shape[-2:])).numpy()
    points = crop_landmarks.numpy()
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
    left, top, right, bottom = face.box
    axes[0].imshow(photo.permute(1, 2, 0).numpy())
    axes[0].add_patch(plt.Rectangle((left, top), right - left, bottom - top, fill=False, color="yellow", lw=1.5))
    src = face.landmarks.numpy()
    axes[0].scatter(src[:, 0], src[:, 1], s=2, c="lime")
    axes[0].set_title(f"HOG detection (score {face.score:.2f}) + 68 landmarks", fontsize=8)
    axes[1].imshow(crop.permute(1, 2, 0).numpy(), extent=(-0.5, crop.shape[-1] - 0.5, crop.shape[-2] - 0.5, -0.5))
    axes[1].scatter(points[:, 0], points[:, 1], s=6, c="lime", label="68 landmarks (mapped)")
    axes[1].scatter(template[:, 0], template[:, 1], s=40, marker="+", c="red", label="ArcFace template")
    axes[1].legend(fontsize=6, loc="lower center")
    axes[1].set_title("aligned 112x112 crop", fontsize=8)
    colours = ListedColormap(plt.get_cmap("tab20").colors[: len(PARSING_CLASSES)])
    axes[2].imshow(parsing, cmap=colours, vmin=-0.5, vmax=len(PARSING_CLASSES) - 0.5, interpolation="nearest")
    axes[2].set_title("landmarks -> 11-class parsing map", fontsize=8)
    axes[3].imshow(crop.permute(1, 2, 0).numpy())
    masked = np.ma.masked_where(parsing == 0, parsing)
    axes[3].imshow(masked, cmap=colours, vmin=-0.5, vmax=len(PARSING_CLASSES) - 0.5, alpha=0.5, interpolation="nearest")
    axes[3].set_title("parsing over the crop", fontsize=8)
    for ax in axes:
        ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours(i)) for i in range(1, len(PARSING_CLASSES))]
    fig.legend(handles, PARSING_CLASSES[1:], loc="lower center", ncol=10, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--overlay", type=Path, default=REPO / "docs" / "img" / "dlib_astronaut.png")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON here")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a trained RIM or IPU-Net checkpoint")
    parser.add_argument("--method", choices=("auto", "RIM", "IPUNet"), default="auto", help="class of --checkpoint")
    args = parser.parse_args()
    from skimage.data import astronaut

    results: dict[str, Any] = {}
    photo = torch.from_numpy(astronaut()).permute(2, 0, 1).contiguous()
    start = time.perf_counter()
    detector = FaceDetector("hog", upsample=0)
    results["load_s"] = time.perf_counter() - start
    for upsample in (0, 1):
        start = time.perf_counter()
        faces = FaceDetector("hog", upsample=upsample)(photo)
        results[f"hog_upsample{upsample}"] = {
            "faces": len(faces),
            "boxes": [f.box for f in faces],
            "scores": [round(f.score, 3) for f in faces],
            "seconds": round(time.perf_counter() - start, 3),
        }
    face = detector(photo)[0]

    template = arcface_template((112, 112))
    matrix = estimate_similarity(face.five, template)
    crop = align_faces(photo, face.five, output_size=(112, 112))
    crop_landmarks = apply(matrix, face.landmarks)
    judge = IdentityJudge()
    redetected = judge.landmarks(crop[None])[0]
    eyes_mapped = apply(matrix, face.five[:2])
    eyes_redetected = torch.stack([redetected[36:42].mean(0), redetected[42:48].mean(0)])
    results["alignment"] = {
        "eye_error_mapped_px": (eyes_mapped - template[:2]).norm(dim=1).tolist(),
        "eye_error_redetected_px": (eyes_redetected - template[:2]).norm(dim=1).tolist(),
        "five_point_error_px": (apply(matrix, face.five) - template).norm(dim=1).tolist(),
        "landmarks_redetected_vs_mapped_px": float((redetected - crop_landmarks).norm(dim=1).mean()),
    }
    # crossres align --point-weights 4 4 1 1 1: the eyes weigh 4x in the fit, the smile's mouth corners less.
    weighted = estimate_similarity(face.five, template, EYE_WEIGHTS)
    results["alignment_eye_weighted"] = {
        "weights": list(EYE_WEIGHTS),
        "eye_error_mapped_px": (apply(weighted, face.five[:2]) - template[:2]).norm(dim=1).tolist(),
        "five_point_error_px": (apply(weighted, face.five) - template).norm(dim=1).tolist(),
    }
    overlay(photo, face, crop, crop_landmarks, args.overlay)
    results["overlay"] = str(args.overlay)

    start = time.perf_counter()
    hr = to_float(crop[None])
    results["judge_aligned_112"] = judge_curve(judge, hr, judge.landmarks(hr), SIZES)
    import dlib

    chip = dlib.get_face_chip(to_dlib_image(photo), dlib_shape(face.landmarks), size=150, padding=0.25)
    results["judge_dlib_chip_150"] = chip_curve(chip, SIZES)
    results["judge_seconds"] = round(time.perf_counter() - start, 2)

    if args.checkpoint is not None:
        model, method = load_sr_model(args.checkpoint, args.method)
        size = tuple(int(s) for s in model.image_size)
        hr_model = to_float(align_faces(photo, face.five, output_size=size)[None])
        results["sr"] = {"method": method, "checkpoint": str(args.checkpoint), "image_size": size}
        scaled = tuple(sorted({max(1, round(s * size[0] / 112)) for s in SIZES}, reverse=True))
        results["sr"]["curve"] = sr_curve(model, judge, hr_model, scaled)

    print(json.dumps(results, indent=1, default=str))
    print("\nHR -> LR descriptor distance (dlib, < 0.6 = same person):")
    print("| LR size | aligned 112 crop | dlib 150 chip | issue 9 (PIL, 150 chip) |")
    for size in SIZES:
        a, c = results["judge_aligned_112"][size], results["judge_dlib_chip_150"][size]
        print(f"| {size} px | {a:.2f} | {c:.2f} | {ISSUE_PIL_CHIP[size]:.2f} |")
    if "sr" in results:
        print(f"\nafter {results['sr']['method']} super-resolution ({args.checkpoint}):")
        for size, row in results["sr"]["curve"].items():
            print(f"| {size} px | bicubic {row['bicubic']:.2f} | SR {row['sr']:.2f} |")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
