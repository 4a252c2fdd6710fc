"""``crossres report | export | align``: the commands beside LightningCLI's fit/validate/test/predict.

Examples:
    crossres report runs/baseline                     # report/ beside the newest test results
    crossres report runs/baseline runs/batch_cr --compare runs/compare.md
    crossres export --format rec --out data/synthetic_rec --synthetic-identities 100 --images-per-identity 20
    crossres export --format bin --out data/synthetic.bin --pairs 600
    crossres export --format folder --out data/faces --from-folder data/raw_faces
    crossres export --format pairs --from-folder data/lfw_dlib150 --people data/lfw/peopleDevTest.txt --pairs 6000 \
        --out data/lfw/pairsDevTest_6000.txt
    crossres align data/raw data/aligned --landmarks data/raw/landmarks.json --size 112x112
    crossres align data/photos data/aligned --detector hog --multi-face largest   # needs crossres[dlib]
    crossres align data/lfw data/lfw_dlib150 --template dlib150 --cascade hog:1,hog:2,mmod:1 --multi-face center
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from crossres.errors import input_error_message

__all__ = ["run"]

_EXIT_BAD_INPUT = 2


class _UsageError(Exception):
    """Bad arguments: the message names the option or file; the command exits with status 2."""


def _size(text: str) -> tuple[int, int]:
    """``"112"`` -> ``(112, 112)``, ``"112x96"`` -> ``(112, 96)`` (height x width)."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; expected H or HxW, e.g. 112 or 112x96") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; expected H or HxW with positive sides")
    return values[0], values[1]


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crossres",
        description="crossres commands besides fit/validate/test/predict (see `crossres fit --help` for those).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{report,export,align}")

    report = commands.add_parser(
        "report",
        help="figures and tables of a run's results",
        description=(
            "Write report/ (report.md, accuracy-vs-resolution, distance distributions, ROC, example pairs, CSV) "
            "beside the newest results of RUN_DIR (a run or one of its test-*/validate-* directories). With several "
            "RUN_DIRs each gets its report; --compare also writes one table comparing them."
        ),
    )
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", type=Path, help="run directory")
    report.add_argument("--split", choices=("test", "val"), default="test", help="results to report (default: test)")
    report.add_argument("--overwrite", action="store_true", help="replace an existing report/ (and --compare file)")
    report.add_argument("--wandb", action="store_true", help="log the figures to wandb (WANDB_MODE=offline works)")
    report.add_argument("--no-examples", action="store_true", help="skip the example-pair grid")
    report.add_argument("--compare", type=Path, metavar="PATH", help="also write a Markdown table comparing the runs")

    export = commands.add_parser(
        "export",
        help="write a RecordIO set, a .bin pair set, an identity folder or an LFW pairs file",
        description=(
            "Write synthetic faces (default) or an identity folder (--from-folder) as an insightface RecordIO "
            "training set (train.rec/train.idx/property), an insightface .bin verification pair set, or an identity "
            "folder OUT/<identity>/*.jpg. --format pairs draws pairs from an (aligned) LFW folder, optionally from "
            "the people of an LFW people file (--people), and writes them in LFW's pairs.txt format (10 folds)."
        ),
    )
    export.add_argument("--format", required=True, choices=("rec", "bin", "folder", "pairs"), help="output format")
    export.add_argument(
        "--out", required=True, type=Path, help="output directory (rec, folder), .bin file (bin) or text file (pairs)"
    )
    source = export.add_argument_group("source (synthetic faces unless --from-folder)")
    source.add_argument("--synthetic-identities", type=_positive, help="identities (default: rec/folder 100, bin 50)")
    source.add_argument("--images-per-identity", type=_positive, help="images per identity (default: 20, bin 4)")
    source.add_argument("--image-size", type=_size, help="H or HxW of synthetic faces (default: 112)")
    source.add_argument("--seed", type=int, help="synthetic world seed (default: 0; bin: also the pair sampling)")
    source.add_argument(
        "--identity-offset", type=int, help="first synthetic identity (default: 0; bin: 100000, clear of training)"
    )
    source.add_argument("--from-folder", type=Path, metavar="DIR", help="read faces from DIR/<identity>/*.jpg|png")
    export.add_argument(
        "--pairs",
        type=_positive,
        help="pairs of a .bin pair set or pairs file, half positive (default: bin 600; pairs 6000, a multiple of 20)",
    )
    export.add_argument(
        "--people",
        type=Path,
        metavar="FILE",
        help="pairs: draw only from the people of this LFW people file (e.g. peopleDevTest.txt; default: all)",
    )
    export.add_argument("--quality", type=int, default=95, help="JPEG quality (default: 95)")
    export.add_argument("--overwrite", action="store_true", help="replace existing output files")

    align = commands.add_parser(
        "align",
        help="detect faces and align them onto the ArcFace template or cut dlib's chip (or use given landmarks)",
        description=(
            "Without --landmarks (needs the extra: pip install 'crossres[dlib]'): detect the faces of every photo "
            "of SRC with dlib, find their 68 landmarks, align the eyes, nose tip and mouth corners onto the ArcFace "
            "template (--template dlib150: cut dlib's 150x150 recogniser chip from dlib's 5-point predictor) and "
            "write DST with the same relative paths, plus DST/landmarks.json (landmarks of every aligned face in "
            "its crop), DST/skipped.csv (photos not aligned, with the reason) and DST/multi_face.csv. "
            "With --landmarks: warp every image of SRC that has five landmarks in FILE."
        ),
    )
    align.add_argument("src", type=Path, metavar="SRC", help="folder of input images")
    align.add_argument("dst", type=Path, metavar="DST", help="output folder")
    align.add_argument(
        "--landmarks",
        type=Path,
        metavar="FILE",
        help="JSON {path: [[x, y] * 5]} or CSV path,x1,y1,...,x5,y5; paths relative to SRC (default: detect); "
        "arcface: left eye centre, right eye centre, nose tip, left and right mouth corner (image left first); "
        "dlib150: dlib's 5-point order: outer and inner corner of the image-right eye, outer and inner corner of "
        "the image-left eye, base of the nose (iBUG 68 points 45, 42, 36, 39, 33)",
    )
    align.add_argument(
        "--template",
        choices=("arcface", "dlib150"),
        default="arcface",
        help="arcface (default): the ArcFace 5-point template at --size; dlib150: the 150x150 chip of dlib's face "
        "recogniser, as dlib.get_face_chip(img, shape, 150, 0.25), from dlib's five points",
    )
    align.add_argument("--size", type=_size, default=None, help="output HxW: 112x112 (default) or 112x96 (arcface)")
    align.add_argument(
        "--ext", choices=("png", "jpg"), default=None, help="write every crop as PNG or JPEG (default: as the photo)"
    )
    align.add_argument("--overwrite", action="store_true", help="replace existing output files")
    align.add_argument(
        "--point-weights",
        type=float,
        nargs=5,
        metavar="W",
        default=None,
        help="weights of the eyes, nose tip and mouth corners in the similarity fit (default: equal, as insightface); "
        "e.g. 4 4 1 1 1 keeps the eyes nearer the template when the mouth moves (smiles)",
    )
    detection = align.add_argument_group("detection (without --landmarks)")
    detection.add_argument(
        "--detector", choices=("hog", "mmod"), default=None, help="dlib HOG (default, fast) or MMOD CNN (slow on CPU)"
    )
    detection.add_argument(
        "--upsample", type=int, default=None, help="double the photo N times before detecting (finds smaller faces)"
    )
    detection.add_argument(
        "--cascade",
        metavar="STAGES",
        help="instead of --detector/--upsample: detectors tried in turn until one finds a face, comma-separated "
        "<detector>:<upsample>, e.g. hog:1,hog:2,mmod:1 (dlib's LFW recipe); landmarks.json records the stage",
    )
    detection.add_argument("--min-score", type=float, default=0.0, help="drop detections scoring below this")
    detection.add_argument(
        "--decoder",
        choices=("torchvision", "dlib"),
        default="torchvision",
        help="JPEG decoder: torchvision (default, the same pixels as PIL) or dlib (dlib.load_rgb_image, what dlib's "
        "own pipelines see; its JPEG pixels differ slightly)",
    )
    detection.add_argument(
        "--multi-face",
        choices=("largest", "center", "all", "skip"),
        default="largest",
        help="several faces in a photo: keep the largest (default), the one nearest the photo's centre (center, "
        "for photos centred on their subject such as LFW), all, or skip the photo",
    )
    return parser


# ------------------------------------------------------------------------------------------------ report
def _report(args: argparse.Namespace) -> int:
    from crossres.report.run_report import build_report, compare_runs

    if args.compare is not None and args.compare.exists() and not args.overwrite:
        raise _UsageError(f"--compare {args.compare} already exists; pass --overwrite to replace it")
    for run_dir in args.run_dirs:
        paths = build_report(
            run_dir, split=args.split, overwrite=args.overwrite, wandb=args.wandb, examples=not args.no_examples
        )
        print(f"report of {run_dir}: {paths[0]} ({len(paths)} files in {paths[0].parent})")
    if args.compare is not None:
        compare_runs(args.run_dirs, args.compare, split=args.split, overwrite=args.overwrite)
        print(f"comparison of {len(args.run_dirs)} runs: {args.compare}")
    return 0


# ------------------------------------------------------------------------------------------------ export
def _export_targets(fmt: str, out: Path) -> list[Path]:
    if fmt == "rec":
        return [out / name for name in ("train.rec", "train.idx", "property")]
    if fmt == "bin":
        return [out]
    return [out] if out.is_dir() and any(out.iterdir()) else []


def _export(args: argparse.Namespace) -> int:
    fmt, out = args.format, args.out
    synthetic_options = {
        "--synthetic-identities": args.synthetic_identities,
        "--images-per-identity": args.images_per_identity,
        "--image-size": args.image_size,
        "--seed": args.seed,
        "--identity-offset": args.identity_offset,
    }
    if args.from_folder is not None:
        given = [name for name, value in synthetic_options.items() if value is not None and name != "--seed"]
        if given:
            raise _UsageError(
                f"{', '.join(given)} describe synthetic faces; they cannot be combined with --from-folder"
            )
        if not args.from_folder.is_dir():
            raise _UsageError(f"--from-folder {args.from_folder}: no such directory (expected DIR/<identity>/*.jpg)")
    if args.pairs is not None and fmt not in ("bin", "pairs"):
        raise _UsageError(f"--pairs sets the pairs of a .bin pair set; it does not apply to --format {fmt}")
    if fmt == "pairs":
        return _export_lfw_pairs(args)
    if args.people is not None:
        raise _UsageError(f"--people selects the people of --format pairs; it does not apply to --format {fmt}")
    if fmt == "bin" and out.suffix != ".bin":
        raise _UsageError(f"--out {out}: a pair set is written to a .bin file (e.g. {out.with_suffix('.bin')})")
    if fmt != "bin" and out.is_file():
        raise _UsageError(f"--out {out} is a file; --format {fmt} writes a directory")
    if not 1 <= args.quality <= 100:
        raise _UsageError(f"--quality {args.quality}: expected 1..100")
    existing = [p for p in _export_targets(fmt, out) if p.exists()]
    if existing and not args.overwrite:
        what = "is not empty" if existing[0] == out and out.is_dir() else "already exists"
        raise _UsageError(f"{existing[0]} {what}; pass --overwrite to replace it")

    from torch.utils.data import Dataset

    from crossres.data.bin import export_pair_set
    from crossres.data.folder import ImageFolderFaces, export_dataset, folder_pairs

    if fmt == "bin":
        num_pairs = args.pairs or 600
        if args.from_folder is not None:
            pair_set = folder_pairs(args.from_folder, num_pairs, seed=args.seed or 0, name=out.stem)
        else:
            from crossres.data.synthetic import synthetic_pair_set

            pair_set = synthetic_pair_set(
                name=out.stem,
                num_identities=args.synthetic_identities or 50,
                images_per_identity=args.images_per_identity or 4,
                num_pairs=num_pairs,
                image_size=args.image_size or 112,
                seed=1 if args.seed is None else args.seed,
                identity_offset=100000 if args.identity_offset is None else args.identity_offset,
            )
        export_pair_set(pair_set, out, quality=args.quality, overwrite=args.overwrite)
        positive = int(pair_set.issame.sum())
        print(f"wrote {out}: {len(pair_set)} pairs ({positive} positive, {len(pair_set) - positive} negative)")
        return 0
    dataset: Dataset
    if args.from_folder is not None:
        dataset = ImageFolderFaces(args.from_folder)
    else:
        from crossres.data.synthetic import SyntheticFaces

        dataset = SyntheticFaces(
            num_identities=args.synthetic_identities or 100,
            images_per_identity=args.images_per_identity or 20,
            image_size=args.image_size or 112,
            seed=args.seed or 0,
            identity_offset=args.identity_offset or 0,
            return_priors=False,
        )
    counts = export_dataset(dataset, out, fmt=fmt, quality=args.quality, overwrite=args.overwrite)
    details = ", ".join(f"{v} {k}" for k, v in counts.items())
    print(f"wrote {out} ({'insightface RecordIO' if fmt == 'rec' else 'identity folder'}): {details}")
    return 0


def _export_lfw_pairs(args: argparse.Namespace) -> int:
    from crossres.data.lfw import export_lfw_pairs

    if args.from_folder is None:
        raise _UsageError("--format pairs draws from an (aligned) LFW folder: give --from-folder DIR")
    if args.people is not None and not args.people.is_file():
        raise _UsageError(f"--people {args.people}: no such file (an LFW people file such as peopleDevTest.txt)")
    if args.out.suffix == ".bin" or args.out.is_dir():
        raise _UsageError(f"--out {args.out}: --format pairs writes a text file (e.g. pairsDevTest_6000.txt)")
    if args.out.exists() and not args.overwrite:
        raise _UsageError(f"{args.out} already exists; pass --overwrite to replace it")
    num_pairs = args.pairs or 6000
    if num_pairs % 20:
        raise _UsageError(f"--pairs {num_pairs}: a pairs file holds 10 folds of n same and n different pairs (x 20)")
    counts = export_lfw_pairs(
        args.from_folder,
        args.out,
        people_file=args.people,
        num_pairs=num_pairs,
        seed=args.seed or 0,
        overwrite=args.overwrite,
    )
    listed = ""
    if args.people is not None:
        listed = f" ({counts['listed']} listed in {args.people}, {counts['missing']} without images there)"
    print(
        f"wrote {args.out}: {counts['pairs']} pairs in 10 folds, half same-person, over {counts['people']} people of "
        f"{args.from_folder}{listed}; read it as the pair set {args.out}@{args.from_folder}"
    )
    return 0


# ------------------------------------------------------------------------------------------------- align
def _detect_align(args: argparse.Namespace) -> int:
    from crossres.data.detect import DetectorCascade, FaceDetector, detect_align_folder

    detector: FaceDetector | DetectorCascade
    if args.cascade is not None:
        if args.detector is not None or args.upsample is not None:
            raise _UsageError("--cascade lists the detectors and upsamplings; drop --detector/--upsample")
        try:
            detector = DetectorCascade.parse(args.cascade, min_score=args.min_score)
        except ValueError as err:
            raise _UsageError(f"--cascade: {err}") from None
    else:
        upsample = 0 if args.upsample is None else args.upsample
        if upsample < 0:
            raise _UsageError(f"--upsample {upsample}: expected 0 or more")
        detector = FaceDetector(args.detector or "hog", upsample=upsample, min_score=args.min_score)
    counts = detect_align_folder(
        args.src,
        args.dst,
        detector,
        output_size=args.size,
        multi_face=args.multi_face,
        overwrite=args.overwrite,
        weights=args.point_weights,
        template=args.template,
        ext=args.ext,
        decoder=args.decoder,
    )
    stages = ", ".join(f"{k.split(' ', 1)[1]} {v}" for k, v in counts.items() if k.startswith("found_by "))
    print(
        f"aligned {counts['faces']} face(s) of {counts['aligned_images']} of {counts['images']} photo(s) into "
        f"{args.dst} ({args.template}, {args.size[0]}x{args.size[1]}); photos found by {stages}; landmarks in "
        f"{args.dst / 'landmarks.json'}; {counts['skipped']} photo(s) skipped ({args.dst / 'skipped.csv'}); "
        f"{counts['multi_face']} photo(s) with several faces, {args.multi_face} kept ({args.dst / 'multi_face.csv'})"
    )
    if counts["aligned_images"] == 0:
        print(f"crossres align: error: no face was aligned; see {args.dst / 'skipped.csv'}", file=sys.stderr)
        return _EXIT_BAD_INPUT
    return 0


def _align(args: argparse.Namespace) -> int:
    from crossres.data.align import align_folder
    from crossres.data.similarity import point_weights

    if not args.src.is_dir():
        raise _UsageError(f"SRC {args.src}: no such directory")
    try:
        point_weights(args.point_weights, 5)
    except ValueError as err:
        raise _UsageError(f"--point-weights: {err}") from None
    if args.template == "dlib150":
        if args.size not in (None, (150, 150)):
            raise _UsageError("--size: --template dlib150 is dlib's 150x150 chip; drop --size")
        if args.point_weights is not None:
            raise _UsageError("--point-weights weigh the ArcFace fit; --template dlib150 fits dlib's five points")
        args.size = (150, 150)
    elif args.size is None:
        args.size = (112, 112)
    if args.landmarks is None:
        return _detect_align(args)
    if not args.landmarks.is_file():
        raise _UsageError(f"--landmarks {args.landmarks}: no such file")
    counts = align_folder(
        args.src,
        args.dst,
        args.landmarks,
        output_size=args.size,
        overwrite=args.overwrite,
        weights=args.point_weights,
        template=args.template,
        ext=args.ext,
    )
    print(
        f"aligned {counts['aligned']} image(s) into {args.dst} ({args.size[0]}x{args.size[1]}); "
        f"{counts['missing_landmarks']} image(s) of {args.src} have no landmarks; "
        f"{counts['missing_images']} landmark entr{'y' if counts['missing_images'] == 1 else 'ies'} name no image; "
        f"{counts['skipped']} image(s) skipped ({args.dst / 'skipped.csv'})"
    )
    if counts["aligned"] == 0:
        why = f"the paths in {args.landmarks} must be relative to {args.src}"
        if counts["skipped"]:
            why = f"see {args.dst / 'skipped.csv'}"
        print(f"crossres align: error: no image was aligned: {why}", file=sys.stderr)
        return _EXIT_BAD_INPUT
    return 0


_HANDLERS = {"report": _report, "export": _export, "align": _align}


def run(argv: Sequence[str], debug: bool = False) -> int:
    """Run ``crossres report|export|align`` (``argv[0]`` is the command); ``--help`` works per command.

    Args:
        argv: the arguments after ``crossres``, e.g. ``["export", "--format", "bin", "--out", "x.bin"]``.
        debug: re-raise bad-input errors (with their traceback) instead of printing their message.

    Returns:
        The exit status: 0 on success, 2 on bad input (the message, on stderr, names the option or file).
    """
    parser = _parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2), message already printed
        return exit_.code if isinstance(exit_.code, int) else _EXIT_BAD_INPUT
    try:
        return _HANDLERS[args.command](args)
    except Exception as err:
        message = input_error_message(err)
        if message is None and isinstance(err, _UsageError | ValueError):
            message = str(err)
        if message is None and isinstance(err, ImportError) and "crossres[" in str(err):
            message = str(err)  # a missing optional extra, not a broken install
        if message is None or debug:
            raise
        print(f"crossres {args.command}: error: {message}", file=sys.stderr)
        return _EXIT_BAD_INPUT
