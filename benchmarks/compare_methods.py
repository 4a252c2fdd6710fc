"""Every method on the same synthetic faces, with the same budget and seed, under the same protocols.

The papers each compare against different baselines on different protocols; this is the table none of them has.
Every method is trained through the real command line (``crossres.cli.main(["fit", ...])``) from its config in
``experiments/``, on ``SyntheticFaces`` with the same identities, images, seed and number of epochs, then evaluated
by ``crossres test`` on the same synthetic pair set under the same protocols:

* fixed LR sizes 7, 14, 28, 56 and 112 px,
* the four protocols of Knoche et al. 2021 (004 §6.3): ``low_res_focus``, ``mid_res_focus``, ``high_res_focus``,
  ``avg_sizes`` (per-pair sizes drawn with the seed: the published btm-stm CSVs exist for LFW & co. only),
* HR-HR, LR-LR and HR-LR (both pair orders) at every protocol.

The result is one Markdown file (``comparison.md``: a table at the fixed sizes, one for the Knoche protocols, the
time each method took) and one accuracy-vs-resolution PNG with every method on it, made with ``crossres.report``.

Methods and the config each one starts from (model and training set-up as in the config; epochs, data and seed
replaced by the comparison's; learning-rate milestones scaled to the budget):

    baseline        Baseline, HR-trained (004 §3.1)             experiments/baseline.yaml
    guided_cnn      GuidedCNN (000)                              experiments/guided_cnn.yaml
    batch_cr_m      BatchCR, BT-M (004 §6.2)                     experiments/batch_cr_m.yaml
    siamese_cr_m1   SiameseCR, ST-M1 (004 §6.2)                  experiments/siamese_cr_m1.yaml
    dcr             DCRTwoStage, step 1 then step 2 (003)        experiments/dcr_stage1.yaml, dcr_stage2.yaml
    ipunet          IPUNet (002)                                 experiments/ipunet.yaml
    rim             RIM (001)                                    experiments/rim.yaml
    octuplet        Octuplet (Knoche et al. 2023)                experiments/octuplet.yaml

Methods built on a pretrained HR recogniser (GuidedCNN's guide, IPUNet's recogniser, RIM's teacher) use the
``baseline`` run of this comparison (``--teacher`` names another checkpoint), and DCR's step 2 the step-1 run;
each of these trainings gets the full budget on top of the network it starts from, as in the papers.
DCR's branch pairs are trained for 7/14/28/56 px (the paper's 8/12/16/20 px are Table I's probe sizes), the LR
sizes the multi-resolution methods BT-M and ST-M1 train on; probes go to the nearest branch.

Runs are ``<runs-dir>/<method>/`` as ``crossres fit`` makes them. An existing run is never overwritten: the script
stops before training anything, unless ``--reuse`` (then finished runs are kept, and only evaluated if their test
results lack a protocol). Fit skips the per-epoch validation (one evaluation at the end, by ``crossres test``, of
``last.ckpt``).

Usage:
    python benchmarks/compare_methods.py                                   # every method, 8 epochs (make compare)
    python benchmarks/compare_methods.py --methods baseline batch_cr_m --budget 2 --out runs/cmp_small
    python benchmarks/compare_methods.py --reuse                           # continue an interrupted comparison
    python benchmarks/compare_methods.py -- --trainer.accelerator=gpu      # after --: passed to every crossres call
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from common import REPO, machine_summary

FIXED_SIZES = [7, 14, 28, 56, 112]
KNOCHE = ["low_res_focus", "mid_res_focus", "high_res_focus", "avg_sizes"]
PROTOCOLS: list[int | str] = [*FIXED_SIZES, *KNOCHE]
TEACHER_RUN = "baseline"


@dataclass(frozen=True)
class Method:
    """One row of the comparison: the config(s) it trains from and what it needs."""

    key: str
    label: str
    short: str  # the plot's legend
    configs: tuple[str, ...]  # one config per training stage; the last stage is the evaluated run
    teacher_arg: str | None = None  # the model argument that takes the pretrained HR recogniser
    stage_args: tuple[tuple[str, ...], ...] = field(default_factory=tuple)  # extra arguments per stage


METHODS: dict[str, Method] = {
    m.key: m
    for m in (
        Method("baseline", "Baseline (HR)", "Baseline", ("baseline.yaml",)),
        Method("guided_cnn", "GuidedCNN", "GuidedCNN", ("guided_cnn.yaml",), teacher_arg="--model.guide_weights"),
        Method("batch_cr_m", "BatchCR (BT-M)", "BT-M", ("batch_cr_m.yaml",)),
        Method("siamese_cr_m1", "SiameseCR (ST-M1)", "ST-M1", ("siamese_cr_m1.yaml",)),
        Method(
            "dcr",
            "DCRTwoStage",
            "DCR",
            ("dcr_stage1.yaml", "dcr_stage2.yaml"),
            stage_args=((), ("--model.branch_sizes=[7, 14, 28, 56]", "--data.degradation.lr_views=[7, 14, 28, 56]")),
        ),
        Method("ipunet", "IPUNet", "IPUNet", ("ipunet.yaml",), teacher_arg="--model.recognizer_weights"),
        Method("rim", "RIM", "RIM", ("rim.yaml",), teacher_arg="--model.teacher_weights"),
        Method("octuplet", "Octuplet", "Octuplet", ("octuplet.yaml",), teacher_arg="--model.recognizer_weights"),
    )
}
ALIASES = {"batch_cr": "batch_cr_m", "siamese_cr": "siamese_cr_m1", "dcrtwostage": "dcr"}


# --------------------------------------------------------------------------------------------- planning
def resolve_methods(names: Sequence[str] | None) -> list[Method]:
    """The methods to compare, in the table's order; class names (``GuidedCNN``) work as well as keys."""
    if not names:
        return list(METHODS.values())
    by_class = {m.label.split(" ")[0].lower(): m.key for m in METHODS.values()}
    keys = []
    for name in names:
        key = name.lower()
        key = ALIASES.get(key, by_class.get(key, key))
        if key not in METHODS:
            raise SystemExit(f"unknown method {name!r}; choose from {', '.join(METHODS)} (or their class names)")
        keys.append(key)
    return [m for m in METHODS.values() if m.key in keys]


def stage_names(method: Method) -> list[str]:
    """Run names of a method's training stages: ``dcr_stage1``, then ``dcr`` (the evaluated run)."""
    if len(method.configs) == 1:
        return [method.key]
    return [f"{method.key}_stage{i + 1}" for i in range(len(method.configs) - 1)] + [method.key]


def scaled_milestones(config: dict[str, Any], budget: int) -> list[int] | None:
    """The config's learning-rate milestones scaled from its ``max_epochs`` to ``budget`` (``None``: it has none)."""
    milestones = (config.get("model", {}).get("init_args") or {}).get("milestones")
    if not milestones:
        return None
    epochs = int(config.get("trainer", {}).get("max_epochs") or budget)
    scaled = {max(1, round(m * budget / epochs)) for m in milestones}
    return sorted(m for m in scaled if m < budget)


def data_args(args: argparse.Namespace) -> list[str]:
    """The data every run shares: the same synthetic identities, images, pairs and seed."""
    return [
        "--data.train_format=synthetic",
        f"--data.synthetic.num_identities={args.identities}",
        f"--data.synthetic.images_per_identity={args.images_per_identity}",
        f"--data.synthetic.pairs={args.pairs}",
        f"--data.synthetic.seed={args.seed}",
        f"--data.seed={args.seed}",
        "--data.val_sets=[synthetic]",
        "--data.test_sets=[synthetic]",
        f"--seed_everything={args.seed}",
    ]


def protocol_arg() -> str:
    return "--data.protocols=[" + ", ".join(str(p) for p in PROTOCOLS) + "]"


def protocol_names() -> list[str]:
    return [f"{p}px" if isinstance(p, int) else p for p in PROTOCOLS]


# ------------------------------------------------------------------------------------------- run state
def has_run(run_dir: Path) -> bool:
    return run_dir.is_dir() and any(run_dir.iterdir())


def last_checkpoint(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "last.ckpt"


def test_results(run_dir: Path) -> Path | None:
    """The newest ``results_test.json`` of a run (in ``test-*/``, or the run itself) that has every protocol."""
    wanted = set(protocol_names())
    candidates = [*run_dir.glob("results_test.json"), *run_dir.glob("test-*/results_test.json")]
    found = sorted(candidates, key=lambda p: p.stat().st_mtime)
    for path in reversed(found):
        rows = json.loads(path.read_text())
        if wanted <= {str(r["protocol"]) for r in rows}:
            return path
    return None


def settings(args: argparse.Namespace, passthrough: list[str]) -> dict[str, Any]:
    """What makes runs comparable: kept in ``<runs-dir>/compare_settings.json`` and checked by ``--reuse``."""
    keys = ("budget", "identities", "images_per_identity", "pairs", "seed")
    return {key: getattr(args, key) for key in keys} | {"teacher": str(args.teacher or ""), "extra": passthrough}


def check_runs(methods: Sequence[Method], runs_dir: Path, reuse: bool, wanted: dict[str, Any]) -> None:
    """Stop before any training if a run would be overwritten (no ``--reuse``), is unfinished, or was made with
    other settings (``--reuse``)."""
    existing = [(name, runs_dir / name) for m in methods for name in stage_names(m) if has_run(runs_dir / name)]
    if existing and not reuse:
        names = ", ".join(name for name, _ in existing)
        raise SystemExit(
            f"{runs_dir} already holds runs of this comparison ({names}); nothing was trained. Pass --reuse to keep "
            "them (finished runs are skipped), or choose another --runs-dir."
        )
    unfinished = [str(path) for _, path in existing if not last_checkpoint(path).is_file()]
    if unfinished:
        raise SystemExit(
            f"--reuse: {', '.join(unfinished)} hold(s) no checkpoints/last.ckpt (an interrupted fit); delete the "
            "directory to retrain it, or resume it by hand with `crossres fit ... --ckpt_path last`."
        )
    record = runs_dir / "compare_settings.json"
    if existing and record.is_file():
        before = json.loads(record.read_text())
        changed = {k: (before.get(k), v) for k, v in wanted.items() if before.get(k) != v}
        if changed:
            raise SystemExit(
                f"--reuse: the runs in {runs_dir} were made with other settings {changed} (before, now) and would "
                "not be comparable. Use the same settings or another --runs-dir."
            )
    runs_dir.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(wanted, indent=2))


# --------------------------------------------------------------------------------------------- running
def crossres(argv: list[str]) -> None:
    """One ``crossres`` command, in this process (the same code path as the console script)."""
    from crossres.cli import main

    print("\n$ crossres " + " ".join(argv), flush=True)
    main(argv)


def run_method(
    method: Method, args: argparse.Namespace, runs_dir: Path, teacher: Path | None, passthrough: list[str]
) -> dict[str, float]:
    """Train a method's stages (unless reused) and test its last stage; returns seconds per phase."""
    seconds: dict[str, float] = {}
    common = [f"--runs_dir={runs_dir}", *data_args(args)]
    quiet = ["--trainer.enable_model_summary=false", "--trainer.enable_progress_bar=false"]
    names = stage_names(method)
    stage_args: list[list[str]] = []
    for i, (config, name) in enumerate(zip(method.configs, names, strict=True)):
        path = REPO / "experiments" / config
        extra = [*method.stage_args[i]] if i < len(method.stage_args) else []
        milestones = scaled_milestones(yaml.safe_load(path.read_text()), args.budget)
        if milestones is not None:
            extra.append(f"--model.milestones={milestones}")
        if method.teacher_arg and teacher is not None:
            extra.append(f"{method.teacher_arg}={teacher}")
        if i > 0:  # DCR step 2 starts from step 1's trunk
            extra.append(f"--model.trunk_weights={last_checkpoint(runs_dir / names[i - 1])}")
        stage = ["-c", str(path), *common, f"--name={name}", *extra]
        stage_args.append(stage)
        if last_checkpoint(runs_dir / name).is_file():
            print(f"--reuse: {runs_dir / name} is trained; not training it again", flush=True)
            continue
        fit = [
            f"--trainer.max_epochs={args.budget}",
            "--trainer.limit_val_batches=0",  # one evaluation at the end, by `crossres test`
            "--trainer.num_sanity_val_steps=0",
        ]
        tic = time.perf_counter()
        crossres(["fit", *stage, *fit, *quiet, *passthrough])
        seconds[f"fit_{name}"] = time.perf_counter() - tic
    run_dir = runs_dir / names[-1]
    if test_results(run_dir) is None:
        tic = time.perf_counter()
        ckpt = f"--ckpt_path={last_checkpoint(run_dir)}"
        crossres(["test", *stage_args[-1], protocol_arg(), ckpt, "--verbose=false", *quiet, *passthrough])
        seconds["test"] = time.perf_counter() - tic
    else:
        print(f"--reuse: {run_dir} has test results for every protocol; not testing it again", flush=True)
    return seconds


# --------------------------------------------------------------------------------------------- reporting
def result_file(run_dir: Path) -> Path:
    path = test_results(run_dir)
    if path is None:
        raise FileNotFoundError(f"{run_dir} has no test results with every protocol of the comparison")
    return path


def method_rows(method: Method, run_dir: Path) -> list[dict[str, Any]]:
    """The run's test rows, its pair set renamed to the method (one colour per method in the plot)."""
    return [r | {"pair_set": method.short} for r in json.loads(result_file(run_dir).read_text())]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def write_report(
    methods: Sequence[Method],
    runs_dir: Path,
    out: Path,
    args: argparse.Namespace,
    timings: dict[str, dict[str, float]],
    command: str,
) -> Path:
    """``comparison.md`` (tables via :func:`crossres.report.compare_runs`) and the accuracy-vs-resolution PNG."""
    from crossres.report import compare_runs
    from crossres.report.plots import accuracy_vs_resolution

    out.mkdir(parents=True, exist_ok=True)
    run_dirs = [result_file(runs_dir / m.key).parent for m in methods]  # the test results with every protocol
    fixed = compare_runs(
        run_dirs, out / "table_fixed_sizes.md", protocols=[f"{s}px" for s in FIXED_SIZES], overwrite=True
    )
    knoche = compare_runs(run_dirs, out / "table_knoche.md", protocols=KNOCHE, overwrite=True)
    rows = [row for m in methods for row in method_rows(m, runs_dir / m.key)]
    png = accuracy_vs_resolution(
        rows,
        out / "accuracy_vs_resolution.png",
        title=f"SyntheticFaces, {args.budget} epoch(s) each: HR-LR (solid), LR-LR (dotted), HR-HR (dashed)",
        legend_title="method",
    )
    total = sum(sum(t.values()) for t in timings.values()) if timings else 0.0
    lines = [
        "# Every method, one budget, one protocol (SyntheticFaces)",
        "",
        f"- data: `SyntheticFaces`, {args.identities} identities x {args.images_per_identity} images at 112 px, "
        f"seed {args.seed}; evaluation: {args.pairs} synthetic pairs of other identities (10 folds)",
        f"- budget: {args.budget} epoch(s) per training; GuidedCNN, IPUNet, RIM and Octuplet start from Baseline, "
        "DCR's step 2 from its step 1 (each with the same budget); milestones scaled from each config",
        "- protocols: fixed 7/14/28/56/112 px and Knoche et al.'s four (per-pair sizes drawn with the seed); "
        "HR-LR averages both pair orders; accuracy is LFW-style 10-fold (%), best per column in bold",
        f"- command: `{command}`",
        f"- machine: {machine_summary()}; time: {_duration(total)} in all",
        "",
        fixed.replace("### test accuracy", "### Fixed LR sizes: test accuracy", 1),
        "",
        knoche.replace("### test accuracy", "### Knoche et al. protocols: test accuracy", 1),
        "",
        f"![accuracy vs resolution]({png.name})",
        "",
        "### Time per method",
        "",
        "| method | config | training | evaluation |",
        "|---|---|---|---|",
    ]
    for m in methods:
        t = timings.get(m.key, {})
        fit = sum(v for k, v in t.items() if k.startswith("fit_")) if any(k.startswith("fit_") for k in t) else None
        configs = ", ".join(f"`experiments/{c}`" for c in m.configs)
        lines.append(f"| {m.label} | {configs} | {_duration(fit)} | {_duration(t.get('test'))} |")
    report = out / "comparison.md"
    report.write_text("\n".join(lines) + "\n")
    return report


# ------------------------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1 :]
    synthetic = yaml.safe_load((REPO / "experiments" / "data" / "synthetic.yaml").read_text())["data"]["synthetic"]
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        epilog="Arguments after `--` are appended to every crossres call (e.g. -- --trainer.accelerator=gpu).",
    )
    parser.add_argument("--budget", type=int, default=8, help="epochs of every training (default: 8)")
    parser.add_argument("--methods", nargs="+", default=None, help=f"subset of: {' '.join(METHODS)} (default: all)")
    parser.add_argument("--runs-dir", type=Path, default=REPO / "runs" / "compare", help="where the runs go")
    parser.add_argument(
        "--out", type=Path, default=None, help="where comparison.md and the PNG go (default: the runs dir)"
    )
    parser.add_argument("--reuse", action="store_true", help="keep finished runs in --runs-dir instead of stopping")
    parser.add_argument(
        "--teacher", type=Path, default=None, help="HR recogniser checkpoint for GuidedCNN/IPUNet/RIM (default: the "
        "comparison's baseline run; must have the backbone of experiments/baseline.yaml)",
    )  # fmt: skip
    parser.add_argument("--identities", type=int, default=int(synthetic["num_identities"]), help="training identities")
    parser.add_argument("--images-per-identity", type=int, default=int(synthetic["images_per_identity"]))
    parser.add_argument("--pairs", type=int, default=int(synthetic["pairs"]), help="evaluation pairs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, the protocols and the training")
    args = parser.parse_args(argv)
    if args.budget < 1:
        parser.error("--budget must be at least 1 epoch")
    args.out = args.out or args.runs_dir
    return args, passthrough


def main(argv: Sequence[str] | None = None) -> Path:
    args, passthrough = parse_args(argv)
    command = "python benchmarks/compare_methods.py " + " ".join(sys.argv[1:] if argv is None else argv)
    methods = resolve_methods(args.methods)
    runs_dir: Path = args.runs_dir
    teacher: Path | None = args.teacher
    needs_teacher = any(m.teacher_arg for m in methods)
    if needs_teacher and teacher is None and "baseline" not in [m.key for m in methods]:
        methods = [METHODS["baseline"], *methods]  # the teacher is the comparison's own Baseline run
        print("the Baseline run is added: it is the HR recogniser of GuidedCNN / IPUNet / RIM", flush=True)
    if teacher is not None and not teacher.is_file():
        raise SystemExit(f"--teacher {teacher}: no such checkpoint")
    check_runs(methods, runs_dir, args.reuse, settings(args, passthrough))
    timings_path = args.out / "timings.json"
    timings: dict[str, dict[str, float]] = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    teacher = teacher or last_checkpoint(runs_dir / TEACHER_RUN)
    start = time.perf_counter()
    for i, method in enumerate(methods, 1):
        elapsed = _duration(time.perf_counter() - start)
        print(f"\n===== [{i}/{len(methods)}] {method.label} ({elapsed} so far)", flush=True)
        seconds = run_method(method, args, runs_dir, teacher if method.teacher_arg else None, passthrough)
        timings[method.key] = timings.get(method.key, {}) | seconds
        args.out.mkdir(parents=True, exist_ok=True)
        timings_path.write_text(json.dumps(timings, indent=2))
    report = write_report(methods, runs_dir, args.out, args, timings, command.strip())
    print(f"\n{report.read_text()}\n(written: {report}, {args.out / 'accuracy_vs_resolution.png'})", flush=True)
    return report


if __name__ == "__main__":
    main()
