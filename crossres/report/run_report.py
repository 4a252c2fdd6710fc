"""A run's report: Markdown tables in the papers' layout, figures and CSV, optionally logged to wandb.

``crossres test`` leaves ``results_<split>.{csv,json,md}``, ``scores_<split>.npz`` and ``config.yaml`` in
``<runs_dir>/<name>/test-<timestamp>/``; :func:`build_report` turns them into ``report/`` beside them, and
:func:`compare_runs` puts several runs side by side.
"""

from __future__ import annotations

import csv
import inspect
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from crossres.data.pairs import PairSet
from crossres.data.protocols import KNOCHE_PROTOCOLS
from crossres.errors import InputError
from crossres.report.plots import (
    accuracy_vs_resolution,
    distance_distributions,
    example_pairs_grid,
    load_scores,
    protocol_height,
    roc_curves,
    sort_protocols,
)
from crossres.report.tables import REFERENCE_NAMES, quality_table, reference_table, results_table
from crossres.transforms.functional import Backend

__all__ = ["build_report", "compare_runs", "find_results_dir", "knoche_table", "read_results", "report_sizes"]

log = logging.getLogger(__name__)

_COMPARISONS = ("HR-HR", "LR-LR", "HR-LR")
_DEFAULT_SIZES = (7, 14, 28, 56)  # 004 Fig. 7 (plus the HR column)


# ------------------------------------------------------------------------------------------- run files
def find_results_dir(run_dir: str | Path, split: str = "test") -> Path:
    """The directory holding a run's ``results_<split>.json``.

    Args:
        run_dir: a run (``runs/<name>``) or one of its ``test-*``/``validate-*`` directories.
        split: ``"test"`` or ``"val"``.

    Returns:
        ``run_dir`` itself if it holds the results, else its subdirectory whose results are newest.

    Raises:
        FileNotFoundError: if neither ``run_dir`` nor a subdirectory holds ``results_<split>.json``.
    """
    run_dir = Path(run_dir)
    name = f"results_{split}.json"
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} not found")
    if (run_dir / name).is_file():
        return run_dir
    found = sorted(run_dir.glob(f"*/{name}"), key=lambda p: (p.stat().st_mtime, p.parent.name))
    if not found:
        command = "crossres test ... --ckpt_path ..." if split == "test" else "crossres validate/fit ..."
        raise FileNotFoundError(
            f"no {name} in {run_dir} or its test-*/validate-* subdirectories; run `{command}` first "
            "(or pass --split val for the results of fit/validate)"
        )
    return found[-1].parent


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of an optional results file (``reference_<split>.json``, ``quality_<split>.json``); ``[]`` if absent."""
    if not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is not a results file ({err}); rerun crossres test to rewrite it") from None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise InputError(f"{path} is not a results file (expected a JSON list of rows); rerun crossres test")
    return rows


def _read_config(results_dir: Path) -> dict[str, Any]:
    for directory in (results_dir, results_dir.parent):
        path = directory / "config.yaml"
        if path.is_file():
            config = yaml.safe_load(path.read_text())
            return config if isinstance(config, dict) else {}
    return {}


def _method_name(config: Mapping[str, Any], fallback: str) -> str:
    model = config.get("model")
    class_path = model.get("class_path") if isinstance(model, Mapping) else None
    return str(class_path).rsplit(".", 1)[-1] if class_path else fallback


def _far(config: Mapping[str, Any]) -> float:
    """The method's ``far`` (the FAR of the TAR column) from a run's config; 1e-3, the default, if unset."""
    model = config.get("model")
    init = model.get("init_args") if isinstance(model, Mapping) else None
    far = init.get("far") if isinstance(init, Mapping) else None
    return float(far) if isinstance(far, (int, float)) else 1e-3


def _hr_height(config: Mapping[str, Any]) -> int | None:
    data = config.get("data")
    size = data.get("image_size") if isinstance(data, Mapping) else None
    if isinstance(size, int):
        return size
    if isinstance(size, Sequence) and size:
        return int(size[0])
    return None


def _run_label(results_dir: Path) -> str:
    """The run's name: ``runs/<name>`` for ``runs/<name>/test-<time>``."""
    if results_dir.name.startswith(("test-", "validate-", "predict-")):
        return results_dir.parent.name
    return results_dir.name


def report_sizes(protocols: Sequence[str], hr_size: int | None = None, count: int = 4) -> list[int]:
    """LR heights for the per-size figures: 7, 14, 28, 56 px (004 Fig. 7) when evaluated, else ``count`` spread.

    Args:
        protocols: the run's protocol names.
        hr_size: HR height; protocols at or above it are left to the HR column.
        count: how many sizes to pick when the Fig. 7 sizes are not all there.

    Returns:
        Ascending LR heights of fixed-size protocols (empty when there is none).
    """
    heights = sorted({h for p in protocols if (h := protocol_height(p)) is not None and (not hr_size or h < hr_size)})
    if all(size in heights for size in _DEFAULT_SIZES):
        return list(_DEFAULT_SIZES)
    if len(heights) <= count:
        return heights
    index = np.unique(np.round(np.linspace(0, len(heights) - 1, count)).astype(int))
    return [heights[i] for i in index]


# ------------------------------------------------------------------------------------------------ tables
def _acc(row: Mapping[str, Any] | None) -> str:
    return "–" if row is None else f"{100 * float(row['acc']):.2f}"


def knoche_table(rows: Sequence[Mapping[str, Any]], method: str) -> str:
    """Markdown table of the Knoche et al. protocols, method × protocol, in the layout of 004 Table 2.

    Columns: ``112 px`` (HR-HR accuracy), then HR-LR accuracy (%) under ``avg_sizes``/``all_res``,
    ``high_res_focus``, ``mid_res_focus`` and ``low_res_focus`` (those present); one line per pair set.

    Args:
        rows: evaluation rows.
        method: the method name of the first column.

    Returns:
        The table, or ``""`` when no row has a Knoche protocol.
    """
    protocols = sort_protocols([str(r["protocol"]) for r in rows if r["protocol"] in KNOCHE_PROTOCOLS])
    if not protocols:
        return ""
    by_key = {(r["pair_set"], r["comparison"], r["protocol"]): r for r in rows}
    lines = [
        "| method | pair set | HR-HR (all HR) | " + " | ".join(f"{p} HR-LR" for p in protocols) + " |",
        "|---|---|---|" + "---|" * len(protocols),
    ]
    for pair_set in sorted({str(r["pair_set"]) for r in rows}):
        cells = [_acc(by_key.get((pair_set, "HR-LR", p))) for p in protocols]
        hr = _acc(by_key.get((pair_set, "HR-HR", "")))
        lines.append(f"| {method} | {pair_set} | {hr} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write_table_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """The results in the papers' layout: one line per pair set × protocol, HR-HR / LR-LR / HR-LR side by side."""
    by_key = {(r["pair_set"], r["comparison"], r["protocol"]): r for r in rows}
    fields = ["pair_set", "protocol"]
    for comparison in _COMPARISONS:
        prefix = comparison.lower().replace("-", "_")
        fields += [f"{prefix}_acc", f"{prefix}_acc_std", f"{prefix}_tar_at_far", f"{prefix}_eer", f"{prefix}_auc"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for pair_set in sorted({str(r["pair_set"]) for r in rows}):
            protocols = sort_protocols([str(r["protocol"]) for r in rows if r["pair_set"] == pair_set])
            for protocol in [p for p in protocols if p] or [""]:
                line: dict[str, Any] = {"pair_set": pair_set, "protocol": protocol}
                for comparison in _COMPARISONS:
                    row = by_key.get((pair_set, comparison, "" if comparison == "HR-HR" else protocol))
                    prefix = comparison.lower().replace("-", "_")
                    for key in ("acc", "acc_std", "tar_at_far", "eer", "auc"):
                        line[f"{prefix}_{key}"] = "" if row is None or key not in row else f"{float(row[key]):.6f}"
                writer.writerow(line)
    return path


# ------------------------------------------------------------------------------------------ example pairs
def _example_pair_set(config: Mapping[str, Any], split: str) -> tuple[PairSet, Backend]:
    """The run's first evaluation pair set, rebuilt from its ``data`` config (no training set is opened)."""
    from crossres.data.datamodule import FaceDataModule
    from crossres.data.options import group_flat_keys

    data = group_flat_keys(config.get("data") or {})  # a flat config.yaml too
    accepted = set(inspect.signature(FaceDataModule.__init__).parameters) - {"self"}
    kwargs = {k: v for k, v in data.items() if k in accepted}
    kwargs |= {"train_format": "synthetic", "train_root": None, "protocols": [], "protocol_dir": None}
    specs = data.get("test_sets") if split == "test" else None
    specs = specs or data.get("val_sets") or ["synthetic"]
    module = FaceDataModule(**kwargs)
    return module.pair_set(str(specs[0])).pair_set, module.degradation.backend


# ------------------------------------------------------------------------------------------------ wandb
def _log_wandb(
    images: Sequence[Path], rows: Sequence[Mapping[str, Any]], name: str, save_dir: Path, force: bool
) -> str:
    """Log the figures and the results to the active wandb run, or to a new one when ``force``."""
    module = sys.modules.get("wandb")
    if (module is None or getattr(module, "run", None) is None) and not force:
        return ""
    import wandb

    run = wandb.run
    own = run is None
    if own:
        run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "crossres"),
            name=f"{name}-report",
            job_type="report",
            dir=str(save_dir),
        )
    assert run is not None
    columns: list[Any] = ["pair_set", "comparison", "protocol", "acc", "acc_std", "tar_at_far", "eer"]
    table = wandb.Table(columns=columns, data=[[r.get(c, "") for c in columns] for r in rows])
    run.log({f"report/{p.stem}": wandb.Image(str(p)) for p in images} | {"report/results": table})
    where = f"wandb run {run.name} ({run.dir})"
    if own:
        run.finish()
    return where


# ------------------------------------------------------------------------------------------------ report
def build_report(
    run_dir: str | Path,
    split: str = "test",
    overwrite: bool = False,
    wandb: bool = False,
    examples: bool = True,
) -> list[Path]:
    """Write a run's report into ``report/`` beside its results.

    ``report.md`` holds the results table in the papers' layout (one line per pair set × protocol with HR-HR,
    LR-LR and HR-LR accuracy, :func:`~crossres.report.tables.results_table`), a method × protocol table for the
    Knoche protocols when evaluated (004 Table 2), and the figures: accuracy vs resolution (004 Fig. 5),
    cosine-distance distributions (Fig. 7), ROC curves and example pairs; ``table_<split>.csv`` holds the table.
    If a wandb run is active, or ``wandb`` is set (then a new run is made; ``WANDB_MODE=offline`` works), the
    figures and results are logged to it.

    The report is written into a temporary directory beside ``report/`` and renamed into place when complete: a
    failure leaves neither a partial ``report/`` nor a changed earlier one.

    Args:
        run_dir: a run directory (the newest ``test-*``/``validate-*`` subdirectory with results is used) or
            the directory holding ``results_<split>.json``.
        split: ``"test"`` or ``"val"``.
        overwrite: replace an existing ``report/``.
        wandb: log to wandb even when no run is active.
        examples: draw the example-pair grid (rebuilds the run's first pair set from ``config.yaml``).

    Returns:
        The written files, ``report.md`` first.

    Raises:
        FileNotFoundError: if no results are found.
        FileExistsError: if ``report/`` exists and ``overwrite`` is false.
        InputError: if the results file is not a list of result rows.
    """
    results_dir = find_results_dir(run_dir, split)
    report_dir = results_dir / "report"
    if report_dir.exists() and not overwrite:
        raise FileExistsError(
            f"report directory {report_dir} already exists; pass overwrite=True (crossres report --overwrite) "
            "to replace it"
        )
    rows = read_results(results_dir / f"results_{split}.json")
    building = Path(tempfile.mkdtemp(prefix=".report-", dir=results_dir))
    try:
        written, images = _write_report(results_dir, building, rows, split, examples)
        if report_dir.exists():
            shutil.rmtree(report_dir)
        building.rename(report_dir)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    logged = _log_wandb([report_dir / p.name for p in images], rows, _run_label(results_dir), results_dir, force=wandb)
    if logged:
        log.info("build_report: logged %d figures to %s", len(images), logged)
    return [report_dir / path.relative_to(building) for path in written]


_RESULT_KEYS = ("pair_set", "comparison", "protocol", "acc")


def read_results(path: Path) -> list[dict[str, Any]]:
    """Read ``results_<split>.json``: a list of rows with ``pair_set``, ``comparison``, ``protocol``, ``acc``.

    Args:
        path: the results file.

    Returns:
        The rows.

    Raises:
        InputError: if the file is not JSON or not such a list (the message names the file).
    """
    try:
        rows = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is not a JSON results file ({err}); rerun `crossres test` to rewrite it") from None
    bad = not isinstance(rows, list) or not all(isinstance(r, dict) and set(_RESULT_KEYS) <= r.keys() for r in rows)
    if bad:
        raise InputError(
            f"{path} is not a list of result rows with keys {', '.join(_RESULT_KEYS)}; rerun `crossres test` to "
            "rewrite it"
        )
    return rows


def _write_report(
    results_dir: Path, report_dir: Path, rows: list[dict[str, Any]], split: str, examples: bool
) -> tuple[list[Path], list[Path]]:
    """Write every file of the report into ``report_dir``; returns (the files, report.md first; the figures)."""
    reference = _read_rows(results_dir / f"reference_{split}.json")
    quality = _read_rows(results_dir / f"quality_{split}.json")
    config = _read_config(results_dir)
    run_name = _run_label(results_dir)
    method = _method_name(config, run_name)
    hr_size = _hr_height(config)
    far = _far(config)
    protocols = sort_protocols([str(r["protocol"]) for r in rows if r["protocol"]])
    sizes = report_sizes(protocols, hr_size)
    scores_path = results_dir / f"scores_{split}.npz"
    figures: list[tuple[str, Path, str]] = []
    notes: list[str] = []

    if sizes:
        curves: list[dict[str, Any]] = rows
        caption = (
            "CR = HR-LR (solid), ER = LR-LR (dotted), HR-HR (dashed); error bars: standard deviation over the 10 "
            "folds; as Knoche et al. 2021, Fig. 5."
        )
        if reference:  # the method and the HR network it starts from, one colour each
            name = REFERENCE_NAMES.get(method, "HR network")
            curves = [r | {"pair_set": f"{r['pair_set']}: {method}"} for r in rows]
            curves += [r | {"pair_set": f"{r['pair_set']}: {name}"} for r in reference]
            caption += f" The {name}: the frozen HR network {method} starts from, on the same pairs."
        path = accuracy_vs_resolution(curves, report_dir / "accuracy_vs_resolution.png", title=f"{method}: {split}")
        figures.append(("Accuracy vs resolution", path, caption))
    else:
        notes.append("No fixed-size protocol was evaluated: no accuracy-vs-resolution curve.")
    if scores_path.is_file():
        scores = load_scores(scores_path)
        ranges = [p for p in protocols if p in KNOCHE_PROTOCOLS]
        if sizes or ranges:
            path = distance_distributions(
                scores,
                report_dir / "distance_distributions.png",
                sizes=[*sizes, *ranges, hr_size or max(sizes, default=0) + 1],
                hr_size=hr_size,
                title=f"{method}: cosine distance 1 - cos, positive (blue) vs negative (orange) pairs",
            )
            caption = (
                "Positive vs negative cosine distances per LR size; CR pools both HR-LR pair orders; as Knoche et al. "
                "2021, Fig. 7."
            )
            figures.append(("Cosine-distance distributions", path, caption))
        path = roc_curves(scores, report_dir / "roc.png", title=f"{method}: ROC per protocol")
        figures.append(("ROC", path, "TAR against FAR (log scale); HR-HR dashed."))
    else:
        notes.append(f"{scores_path.name} is missing: no distance distributions or ROC curves.")
    if examples:
        try:
            pair_set, backend = _example_pair_set(config, split)
            path = example_pairs_grid(
                pair_set, sizes or _DEFAULT_SIZES, report_dir / "example_pairs.png", backend=backend
            )
            figures.append(("Example pairs", path, "Both faces of each pair degraded to each LR size (Eq. (1))."))
        except Exception as err:  # the data may have moved since the run; the report stands without the grid
            notes.append(f"Example pairs skipped: {type(err).__name__}: {err}")
            log.warning("build_report: example pairs skipped: %s", err)
    table_csv = _write_table_csv(rows, report_dir / f"table_{split}.csv")
    from crossres.report.identity import identity_judge_section  # RIM / IPU-Net with crossres[dlib] only

    judge_lines, judge_files, judge_notes = identity_judge_section(
        method, config, results_dir, report_dir, sizes or _DEFAULT_SIZES, lambda: _example_pair_set(config, split)
    )
    notes += judge_notes

    ckpt = config.get("ckpt_path")
    pair_sets = ", ".join(sorted({str(r["pair_set"]) for r in rows}))
    lines = [
        f"# {method}: {split} report",
        "",
        f"- run: `{run_name}` (`{results_dir}`)",
        f"- checkpoint: `{ckpt}`" if ckpt else "- checkpoint: –",
        f"- pair sets: {pair_sets}; HR size: {hr_size or '?'} px; protocols: {', '.join(protocols) or '–'}",
        "",
        results_table(rows, title="Verification accuracy (10-fold, mean ± std %)", far=far),
        "",
        f"HR-LR averages both pair orders (Knoche et al. 2021 §3.4); TAR at FAR = {far:g} (model.far).",
    ]
    if reference:
        title = f"{method} beside the HR network it starts from (same pairs, same sizes)"
        lines += ["", reference_table(rows, reference, method, title=title), ""]
        lines += ["Differences larger than both fold standard deviations in bold."]
    if quality:
        lines += ["", quality_table(quality, title="Super-resolved and bicubic probes against the HR face")]
    knoche = knoche_table(rows, method)
    if knoche:
        lines += ["", "### Knoche et al. protocols (HR-LR accuracy %, as Knoche et al. 2021, Table 2)", "", knoche]
    for heading, path, caption in figures:
        lines += ["", f"### {heading}", "", f"![{heading}]({path.name})", "", caption]
    lines += judge_lines
    lines += ["", "### Files", "", f"- [{table_csv.name}]({table_csv.name}): the table above as CSV"]
    lines += [f"- [{path.name}]({path.name}): the identity judge's table as CSV" for path in judge_files]
    lines += [f"- {note}" for note in notes]
    report_md = report_dir / "report.md"
    report_md.write_text("\n".join(lines) + "\n")
    images = [path for _, path, _ in figures]
    return [report_md, *images, table_csv, *judge_files], images


def compare_runs(
    run_dirs: Sequence[str | Path],
    path: str | Path,
    split: str = "test",
    protocols: Sequence[str] | None = None,
    overwrite: bool = False,
) -> str:
    """One Markdown table, method × (HR-HR, then LR-LR and HR-LR per protocol), from several runs.

    The method is the class of each run's ``config.yaml`` ``model.class_path``; the run column names the run
    directory. Cells are 10-fold accuracies in %; the best of each column is bold, as in the papers' tables.

    Args:
        run_dirs: run directories (see :func:`find_results_dir`).
        path: the Markdown file to write.
        split: ``"test"`` or ``"val"``.
        protocols: protocols to show (default every protocol of any run).
        overwrite: replace an existing ``path``.

    Returns:
        The table.

    Raises:
        FileNotFoundError: if a run has no results.
        FileExistsError: if ``path`` exists and ``overwrite`` is false.
        ValueError: if ``run_dirs`` is empty.
    """
    if not run_dirs:
        raise ValueError("compare_runs needs at least one run directory")
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (crossres report --overwrite) to replace it")
    runs: list[tuple[str, str, list[dict[str, Any]]]] = []
    for run_dir in run_dirs:
        results_dir = find_results_dir(run_dir, split)
        rows = read_results(results_dir / f"results_{split}.json")
        label = _run_label(results_dir)
        runs.append((_method_name(_read_config(results_dir), label), label, rows))
    every = sort_protocols([str(r["protocol"]) for _, _, rows in runs for r in rows if r["protocol"]])
    shown = list(protocols) if protocols is not None else every
    columns = [("HR-HR", "")] + [(c, p) for p in shown for c in ("LR-LR", "HR-LR")]
    body: list[tuple[str, str, str, list[float | None]]] = []
    for method, label, rows in runs:
        by_key = {(r["pair_set"], r["comparison"], r["protocol"]): r for r in rows}
        for pair_set in sorted({str(r["pair_set"]) for r in rows}):
            found = [by_key.get((pair_set, c, p)) for c, p in columns]
            body.append((method, label, pair_set, [None if r is None else 100 * float(r["acc"]) for r in found]))
    best: dict[tuple[str, int], float] = {}
    for *_, pair_set, values in body:
        for j, value in enumerate(values):
            if value is not None:
                best[(pair_set, j)] = max(best.get((pair_set, j), value), value)
    header = "| method | run | pair set | " + " | ".join(f"{c} {p}".strip() for c, p in columns) + " |"
    lines = [f"### {split} accuracy (10-fold, %)", "", header, "|---|---|---|" + "---|" * len(columns)]
    for method, label, pair_set, values in body:
        cells = []
        for j, value in enumerate(values):
            text = "–" if value is None else f"{value:.2f}"
            bold = value is not None and len(runs) > 1 and value == best[(pair_set, j)]
            cells.append(f"**{text}**" if bold else text)
        lines.append(f"| {method} | {label} | {pair_set} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text
