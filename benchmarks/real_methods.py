"""Every method on real faces: train each config of ``experiments/real/`` from dlib's recogniser, score it beside
the untrained recogniser on LFW's test people, and write one table and one plot.

Steps (each skipped when its output exists, so a rerun continues):

1. ``pairs``: the 6,000 test pairs drawn once (seed 0) from the people of ``peopleDevTest.txt`` over the chips
   (``crossres export --format pairs``), if ``<lfw>/pairsDevTest_6000.txt`` is missing.
2. ``fit``: ``crossres fit -c experiments/real/data.yaml -c experiments/real/<method>.yaml`` per method, its run in
   ``<out>/runs/<name>`` (a killed run resumes with ``--ckpt_path auto``); wall and CPU time in ``fits.json``.
3. ``score``: the reference (dlib's recogniser, no training) and each run's ``last.ckpt`` through ``load_method``
   and the method's own HR and LR embedding calls, on the test pair sets of the data config. Every chip is embedded
   once per fixed probe size (the degradation is deterministic), Knoche's per-pair sizes on ``--knoche-sets``.
   Per-pair scores in ``<out>/scores/<method>.npz``.
4. ``report``: ``<out>/real_methods.md`` (accuracy, gain over the recogniser with a paired bootstrap interval,
   training cost; TAR at FAR 0.1 %) and ``<out>/real_methods_accuracy.png`` (HR-LR accuracy against probe size).

Usage:
    python benchmarks/real_methods.py --lfw data/lfw --chips data/lfw_dlib150 --out runs/real_methods
    python benchmarks/real_methods.py ... --methods guided_cnn,dcr --steps fit,score

``--chips`` is the output of ``crossres align --template dlib150`` over ``images_deepfunneled`` with its
``landmarks.json`` (docs/real_faces.md); LFW is never copied into the repository.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from common import fold_bootstrap, format_table, pair_accuracy, paired_difference

from crossres.data.codec import ImageFiles
from crossres.data.datamodule import FaceDataModule
from crossres.methods.base import CrossResMethod, load_method
from crossres.metrics.verification import verification_metrics
from crossres.transforms.functional import degrade, to_float

STEPS = ("pairs", "fit", "score", "report")
CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "real"
#: Methods in table order (config stems of experiments/real/).
METHODS = (
    "batch_cr",
    "siamese_cr_m1",
    "siamese_cr_m1_retain",
    "siamese_cr_m2",
    "guided_cnn",
    "dcr",
    "ipunet",
    "rim",
    "octuplet",
)
REFERENCE = "dlib_pretrained"
FIXED = (8, 12, 16, 24)


def data_overrides(lfw: Path, chips: Path) -> list[str]:
    """The data config's paths moved to ``--lfw`` and ``--chips``."""
    return [
        f"--data.train_root={chips}",
        f"--data.train_people={lfw / 'peopleDevTrain.txt'}",
        f"--data.train_landmarks={chips / 'landmarks.json'}",
        f"--data.val_sets=[{lfw / 'pairsDevTrain.txt'}@{chips}]",
        f"--data.test_sets=[{lfw / 'pairsDevTest.txt'}@{chips}, {lfw / 'pairsDevTest_6000.txt'}@{chips}]",
    ]


def crossres(*args: str) -> None:
    """Run a ``crossres`` command as a user would, in this interpreter's environment; stop on failure."""
    print("$ crossres " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "crossres", *args], check=True)


def draw_pairs(lfw: Path, chips: Path) -> None:
    """Step 1: the 6,000 pairs of the test people, once."""
    out = lfw / "pairsDevTest_6000.txt"
    if out.is_file():
        return
    crossres(
        "export", "--format", "pairs", "--from-folder", str(chips), "--people", str(lfw / "peopleDevTest.txt"),
        "--pairs", "6000", "--seed", "0", "--out", str(out),
    )  # fmt: skip


def fit(method: str, args: argparse.Namespace) -> dict[str, Any] | None:
    """Step 2: train one method; its wall and CPU time (children's user + system), or None if already done."""
    name = yaml.safe_load((CONFIGS / f"{method}.yaml").read_text())["name"]
    run = args.out / "runs" / name
    if (run / "checkpoints" / "last.ckpt").is_file() and (run / "fit_done").is_file():
        return None
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    try:
        crossres(
            "fit", "-c", str(CONFIGS / "data.yaml"), "-c", str(CONFIGS / f"{method}.yaml"),
            *data_overrides(args.lfw, args.chips), f"--runs_dir={args.out / 'runs'}", "--ckpt_path=auto",
        )  # fmt: skip
    except subprocess.CalledProcessError as error:  # the other methods still run; the report leaves it out
        print(f"{method}: crossres fit failed with exit code {error.returncode}", flush=True)
        return {"run": str(run), "failed": error.returncode}
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    (run / "fit_done").touch()
    config = yaml.safe_load((run / "config.yaml").read_text())
    batches, epochs = config["trainer"].get("limit_train_batches"), config["trainer"].get("max_epochs") or 1
    return {
        "run": str(run),
        "wall_s": time.perf_counter() - start,
        "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "faces": int(batches) * int(config["data"]["batch_size"]) * int(epochs) if isinstance(batches, int) else None,
    }


def reference_model() -> CrossResMethod:
    """dlib's recogniser as ``experiments/real/dlib_pretrained.yaml`` builds it, untrained."""
    from crossres.methods import Baseline

    init = yaml.safe_load((CONFIGS / f"{REFERENCE}.yaml").read_text())["model"]["init_args"]
    data = yaml.safe_load((CONFIGS / "data.yaml").read_text())["data"]
    return Baseline(num_classes=2, image_size=tuple(data["image_size"]), **init).eval()


def datamodule(lfw: Path, chips: Path, **overrides: Any) -> FaceDataModule:
    """The test side of ``experiments/real/data.yaml`` over ``--lfw`` and ``--chips`` (``overrides``: other data
    arguments, e.g. ``image_size``).
    """
    data = yaml.safe_load((CONFIGS / "data.yaml").read_text())["data"]
    data |= {
        "train_root": str(chips),
        "train_people": str(lfw / "peopleDevTrain.txt"),
        "val_sets": [f"{lfw / 'pairsDevTrain.txt'}@{chips}"],
        "test_sets": [f"{lfw / 'pairsDevTest.txt'}@{chips}", f"{lfw / 'pairsDevTest_6000.txt'}@{chips}"],
    } | overrides
    return FaceDataModule(**data)


@torch.inference_mode()
def score(model: CrossResMethod, dm: FaceDataModule, knoche_sets: list[str], batch: int) -> dict[str, np.ndarray]:
    """Per-pair scores of every test pair set, in the keys ``crossres test`` uses (``<set>__hr_lr__12px__scores``).

    Fixed-size protocols embed every chip once per size, through ``eval_embed_hr`` / ``eval_embed_lr``, from which
    HR-HR, LR-LR and both HR-LR orders are scored; protocols with per-pair sizes embed both chips of every pair.
    """
    if not plain_scoring(model):
        raise ValueError(
            f"{type(model).__name__} scores pairs its own way (cross_score / eval_batch): use crossres test"
        )
    sets = [dm.pair_set(spec) for spec in dm.test_sets]
    paths = sorted({str(p) for ds in sets for p in ds.pair_set.images.paths})  # type: ignore[attr-defined]
    index = {p: k for k, p in enumerate(paths)}
    # (h, w) of each fixed-size protocol: every pair has the same size.
    fixed = {f"{s}px": sets[0].protocols[f"{s}px"][0] for s in FIXED if f"{s}px" in sets[0].protocols}
    reader = ImageFiles(paths)
    hr_parts: list[torch.Tensor] = []
    lr_parts: dict[str, list[torch.Tensor]] = {name: [] for name in fixed}
    start = time.perf_counter()
    for lo in range(0, len(paths), batch):
        images = to_float(torch.stack(reader[lo : lo + batch]))
        hr_parts.append(model.eval_embed_hr(images).float().cpu())
        for name, size in fixed.items():
            sizes = size.expand(len(images), 2)
            lr_parts[name].append(model.eval_embed_lr(degrade(images, sizes), sizes).float().cpu())
    hr = torch.cat(hr_parts)
    lr = {name: torch.cat(parts) for name, parts in lr_parts.items()}
    print(f"  {len(paths)} chips x {1 + len(fixed)} sizes in {time.perf_counter() - start:.0f} s", flush=True)
    out: dict[str, np.ndarray] = {}
    for ds in sets:
        name = ds.pair_set.name
        rows = torch.tensor([index[str(p)] for p in ds.pair_set.images.paths])  # type: ignore[attr-defined]
        i, j = rows[ds.pair_set.pairs[:, 0]], rows[ds.pair_set.pairs[:, 1]]
        issame = ds.pair_set.issame.numpy()
        out[f"{name}__hr_hr__scores"], out[f"{name}__hr_hr__issame"] = _cos(hr[i], hr[j]), issame
        views = {p: (lr[p][i], lr[p][j]) for p in fixed}
        if name in knoche_sets:
            views |= _pairwise(model, ds, [p for p in ds.protocols if p not in fixed], batch)
        for protocol, (lr1, lr2) in views.items():
            for comparison, (a, b) in {
                "lr_lr": (lr1, lr2), "lr_hr": (lr1, hr[j]), "hr_lr": (hr[i], lr2)
            }.items():  # fmt: skip
                out[f"{name}__{comparison}__{protocol}__scores"] = _cos(a, b)
                out[f"{name}__{comparison}__{protocol}__issame"] = issame
    return out


def plain_scoring(model: CrossResMethod) -> bool:
    """Whether ``model`` scores pairs by the cosine of its HR and LR embeddings, as :func:`score` does (GuidedCNN
    does unless ``test_mode: unknown`` or an ``occlusion``).
    """
    kind = type(model)
    own = kind.cross_score is not CrossResMethod.cross_score or kind.eval_batch is not CrossResMethod.eval_batch
    hp = model.hparams
    return not own or (hp.get("test_mode", "known") == "known" and hp.get("occlusion", "none") == "none")


def _cos(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return (a * b).sum(1).numpy()


def _pairwise(model: CrossResMethod, ds: Any, protocols: list[str], batch: int) -> dict[str, tuple[Any, Any]]:
    """LR embeddings of both chips of every pair at the pair's own size (Knoche's protocols)."""
    views = {}
    for protocol in protocols:
        sizes = ds.protocols[protocol]
        parts: list[list[torch.Tensor]] = [[], []]
        for lo in range(0, len(ds), batch):
            pairs, size = ds.pair_set.pairs[lo : lo + batch], sizes[lo : lo + batch]
            for k in (0, 1):
                images = to_float(torch.stack([ds.pair_set.images[int(n)] for n in pairs[:, k]]))
                parts[k].append(model.eval_embed_lr(degrade(images, size), size).float().cpu())
        views[protocol] = (torch.cat(parts[0]), torch.cat(parts[1]))
    return views


def results(scores: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Accuracy rows as ``crossres test`` reports them (HR-LR: both pair orders averaged)."""
    rows = []
    for key in sorted(k for k in scores if k.endswith("__scores")):
        pair_set, comparison, *rest = key[: -len("__scores")].split("__")
        if comparison == "lr_hr":
            continue
        protocol = rest[0] if rest else ""
        metrics = [_metrics(scores, key)]
        if comparison == "hr_lr":
            metrics.append(_metrics(scores, key.replace("__hr_lr__", "__lr_hr__")))
        label = {"hr_hr": "HR-HR", "lr_lr": "LR-LR", "hr_lr": "HR-LR"}[comparison]
        rows.append(
            {"pair_set": pair_set, "comparison": label, "protocol": protocol}
            | {m: float(np.mean([x[m] for x in metrics])) for m in ("acc", "acc_std", "tar_at_far")}
        )
    return rows


def _metrics(scores: dict[str, np.ndarray], key: str) -> dict[str, float]:
    issame = torch.from_numpy(scores[key.replace("__scores", "__issame")])
    return verification_metrics(torch.from_numpy(scores[key]), issame)


def report(args: argparse.Namespace, methods: list[str]) -> None:
    """Step 4: the table and the plot."""
    fits = _read_json(args.out / "fits.json")
    loaded = {m: dict(np.load(args.out / "scores" / f"{m}.npz")) for m in [REFERENCE, *methods]
              if (args.out / "scores" / f"{m}.npz").is_file()}  # fmt: skip
    reference = loaded.pop(REFERENCE)
    main = args.main_set
    size = len(reference[f"{main}__hr_hr__scores"])
    samples = fold_bootstrap(size, args.bootstrap, seed=0)
    protocols = [f"{s}px" for s in FIXED]
    rows = [{"method": "dlib recogniser (pretrained, untrained here)", "train": "-"}
            | _cells(reference, None, main, protocols, samples)]  # fmt: skip
    for method, scores in loaded.items():
        cost = fits.get(method, {})
        train = f"{cost['wall_s'] / 60:.1f} min, {cost['faces']} faces" if cost.get("wall_s") is not None else "?"
        rows.append({"method": method, "train": train} | _cells(scores, reference, main, protocols, samples))
    columns = ["method", "train", "HR-HR", *(f"HR-LR {p}" for p in protocols)]
    lines = [
        f"# Every method on real faces ({time.strftime('%Y-%m-%d')})",
        "",
        f"Test pairs: `{main}` ({size} pairs of LFW's peopleDevTest people, 10 folds). Each cell: 10-fold accuracy "
        "(%), and for trained methods the gain over dlib's recogniser in points with its 95 % paired bootstrap "
        f"interval ({args.bootstrap} resamples of the pairs within folds).",
        "",
        format_table(rows, columns),
        "",
    ]
    rows = [{"method": "dlib recogniser"} | _accs(reference, main, "tar_at_far")]
    rows += [{"method": m} | _accs(s, main, "tar_at_far") for m, s in loaded.items()]
    lines += [f"`{main}`, TAR at FAR = 0.1 % (%), HR-LR both orders averaged:", "",
              format_table(rows, ["method", *(c for c in rows[0] if c != "method")]), ""]  # fmt: skip
    for pair_set in sorted({k.split("__")[0] for k in reference} - {main}):
        rows = [{"method": "dlib recogniser"} | _accs(reference, pair_set)]
        rows += [{"method": m} | _accs(s, pair_set) for m, s in loaded.items()]
        columns = ["method", *(c for c in rows[0] if c != "method")]
        lines += [f"`{pair_set}` ({len(reference[f'{pair_set}__hr_hr__scores'])} pairs), accuracy (%):", "",
                  format_table(rows, columns), ""]  # fmt: skip
    (args.out / "real_methods.md").write_text("\n".join(lines))
    print("\n".join(lines))
    _plot(args.out / "real_methods_accuracy.png", reference, loaded, main)


def _cells(scores: dict[str, Any], reference: dict[str, Any] | None, pair_set: str, protocols: list[str],
           samples: list[torch.Tensor]) -> dict[str, str]:  # fmt: skip
    tensors = {k: torch.from_numpy(v) for k, v in scores.items()}
    cells = {}
    for column, comparison, protocol in [("HR-HR", "hr_hr", None)] + [(f"HR-LR {p}", "hr_lr", p) for p in protocols]:
        acc = _acc(tensors, pair_set, comparison, protocol)
        text = f"{100 * acc:.2f}"
        if reference is not None:
            ref = {k: torch.from_numpy(v) for k, v in reference.items()}
            gain, lo, hi = paired_difference(tensors, ref, protocol, samples, pair_set=pair_set, comparison=comparison)
            text += f" ({100 * gain:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}])"
        cells[column] = text
    return cells


def _acc(scores: dict[str, torch.Tensor], pair_set: str, comparison: str, protocol: str | None) -> float:
    return pair_accuracy(scores, torch.arange(len(scores[f"{pair_set}__hr_hr__scores"])), protocol, pair_set,
                         comparison)  # fmt: skip


def _accs(scores: dict[str, np.ndarray], pair_set: str, metric: str = "acc") -> dict[str, str]:
    """One cell per comparison of ``pair_set`` but LR-LR: HR-HR, then HR-LR by probe size, then the others."""
    rows = results({k: v for k, v in scores.items() if k.startswith(f"{pair_set}__")})
    rows = [r for r in rows if r["comparison"] != "LR-LR"]
    px = [
        int(r["protocol"][:-2]) if r["protocol"].endswith("px") and r["protocol"][:-2].isdigit() else 10**6
        for r in rows
    ]
    order = sorted(range(len(rows)), key=lambda k: (rows[k]["comparison"] != "HR-HR", px[k], rows[k]["protocol"]))
    return {
        (
            rows[k]["comparison"] + (f" {rows[k]['protocol']}" if rows[k]["protocol"] else "")
        ): f"{100 * rows[k][metric]:.2f}"
        for k in order
    }


def _plot(path: Path, reference: dict[str, Any], loaded: dict[str, dict[str, Any]], pair_set: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name, scores in [("dlib recogniser", reference), *loaded.items()]:
        accs = [100 * _acc({k: torch.from_numpy(v) for k, v in scores.items()}, pair_set, "hr_lr", f"{s}px")
                for s in FIXED]  # fmt: skip
        style = {"color": "black", "linewidth": 2.5} if name == "dlib recogniser" else {}
        ax.plot(FIXED, accs, marker="o", label=name, **style)
    ax.set(xlabel="probe side on the 150 px chip (px)", ylabel="HR-LR accuracy (%)", xticks=list(FIXED))
    ax.set_title(f"LFW test people ({pair_set}), dlib recogniser and methods trained from it", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot written to {path}")


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lfw", type=Path, required=True, help="LFW folder: people*.txt, pairsDev*.txt")
    parser.add_argument(
        "--chips", type=Path, required=True, help="dlib150 chips of images_deepfunneled (crossres align)"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/real_methods"), help="runs, scores and the report")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, of {', '.join(STEPS)}")
    parser.add_argument("--knoche-sets", default="pairsDevTest", help="pair sets scored under Knoche's per-pair sizes")
    parser.add_argument("--main-set", default="pairsDevTest_6000", help="the pair set of the main table")
    parser.add_argument("--bootstrap", type=int, default=300, help="bootstrap resamples of each interval")
    parser.add_argument("--batch", type=int, default=64, help="chips per embedding batch")
    args = parser.parse_args()
    methods, steps = args.methods.split(","), args.steps.split(",")
    for what, given, known in (("method", methods, METHODS), ("step", steps, STEPS)):
        unknown = sorted(set(given) - set(known))
        if unknown:
            parser.error(f"unknown {what}(s) {unknown}; choose from {', '.join(known)}")
    for path in (args.lfw / "peopleDevTest.txt", args.chips / "landmarks.json"):
        if not path.is_file():
            parser.error(f"{path} not found: see docs/real_faces.md for LFW and crossres align")
    args.out.mkdir(parents=True, exist_ok=True)
    if "pairs" in steps:
        draw_pairs(args.lfw, args.chips)
    if "fit" in steps:
        for method in methods:
            cost = fit(method, args)
            if cost is not None:
                fits = _read_json(args.out / "fits.json") | {method: cost}
                (args.out / "fits.json").write_text(json.dumps(fits, indent=2) + "\n")
    if "score" in steps:
        (args.out / "scores").mkdir(exist_ok=True)
        dm = datamodule(args.lfw, args.chips)
        for method in [REFERENCE, *methods]:
            path = args.out / "scores" / f"{method}.npz"
            if path.is_file():
                continue
            print(f"scoring {method}", flush=True)
            if method == REFERENCE:
                model = reference_model()
            else:
                name = yaml.safe_load((CONFIGS / f"{method}.yaml").read_text())["name"]
                checkpoint = args.out / "runs" / name / "checkpoints" / "last.ckpt"
                if not (args.out / "runs" / name / "fit_done").is_file():
                    print(f"{method}: its fit has not finished, not scored", flush=True)
                    continue
                model = load_method(checkpoint)
            if not plain_scoring(model):
                print(f"{method}: scores pairs its own way, not scored here (use crossres test)", flush=True)
                continue
            np.savez(path, **score(model, dm, args.knoche_sets.split(","), args.batch))
    if "report" in steps:
        report(args, methods)


if __name__ == "__main__":
    main()
