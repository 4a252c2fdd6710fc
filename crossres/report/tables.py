"""Verification results in the papers' layout: HR-HR / LR-LR / HR-LR per pair set and protocol."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["REFERENCE_NAMES", "quality_table", "reference_table", "results_table", "write_results", "write_scores"]

_COLUMNS = ("HR-HR", "LR-LR", "HR-LR")

#: What each method calls the frozen HR network it starts from (``CrossResMethod.reference_embedder``).
REFERENCE_NAMES = {"RIM": "teacher", "GuidedCNN": "guide", "IPUNet": "recogniser", "DCRTwoStage": "trunk"}


def _cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "–"
    return f"{100 * row['acc']:.2f} ± {100 * row['acc_std']:.2f}"


def results_table(rows: Sequence[dict[str, Any]], title: str | None = None, far: float = 1e-3) -> str:
    """Format evaluation rows (from ``CrossResMethod.eval_results``) as a Markdown table.

    One line per pair set and protocol; columns are 10-fold accuracy (mean ± std, %) for HR-HR, LR-LR and
    HR-LR (both pair orders averaged, Knoche et al. §3.4), then HR-LR TAR at the configured FAR and EER.

    Args:
        rows: dicts with ``pair_set``, ``comparison``, ``protocol``, ``acc``, ``acc_std``, ``tar_at_far``,
            ``eer``.
        title: optional heading line.
        far: the false accept rate of ``tar_at_far`` (the method's ``far``), named in the TAR column.

    Returns:
        The Markdown table.
    """
    by_key = {(r["pair_set"], r["comparison"], r["protocol"]): r for r in rows}
    lines = [f"### {title}", ""] if title else []
    lines += [
        f"| pair set | LR size | HR-HR acc % | LR-LR acc % | HR-LR acc % | HR-LR TAR@FAR={far:g} % | HR-LR EER % |",
        "|---|---|---|---|---|---|---|",
    ]
    pair_sets = sorted({r["pair_set"] for r in rows})
    for pair_set in pair_sets:
        protocols = [r["protocol"] for r in rows if r["pair_set"] == pair_set and r["comparison"] == "HR-LR"]
        hr_hr = by_key.get((pair_set, "HR-HR", ""))
        for protocol in _sorted_protocols(protocols) or [""]:
            lr_lr = by_key.get((pair_set, "LR-LR", protocol))
            hr_lr = by_key.get((pair_set, "HR-LR", protocol))
            tar = f"{100 * hr_lr['tar_at_far']:.2f}" if hr_lr else "–"
            eer = f"{100 * hr_lr['eer']:.2f}" if hr_lr else "–"
            lines.append(
                f"| {pair_set} | {protocol or '–'} | {_cell(hr_hr)} | {_cell(lr_lr)} | {_cell(hr_lr)} | {tar} | {eer} |"
            )
    return "\n".join(lines)


def reference_table(
    rows: Sequence[dict[str, Any]], reference: Sequence[dict[str, Any]], method: str, title: str | None = None
) -> str:
    """The method beside the frozen HR network it starts from, on the same pairs and sizes, and the difference.

    One line per pair set, comparison and protocol (HR-HR, then HR-LR and LR-LR by LR size): 10-fold accuracy
    (mean ± std, %) of the method and of the reference, and method minus reference in points, in bold where it
    exceeds both fold standard deviations.

    Args:
        rows: the method's evaluation rows (``CrossResMethod.eval_results[split]``).
        reference: the reference network's rows (``CrossResMethod.reference_results[split]``).
        method: the method's class name (``"RIM"``); names the columns.
        title: optional heading line.

    Returns:
        The Markdown table, or ``""`` when ``reference`` is empty.
    """
    if not reference:
        return ""
    name = REFERENCE_NAMES.get(method, "HR network")
    ours = {(r["pair_set"], r["comparison"], r["protocol"]): r for r in rows}
    theirs = {(r["pair_set"], r["comparison"], r["protocol"]): r for r in reference}
    lines = [f"### {title}", ""] if title else []
    lines += [
        f"| pair set | comparison | LR size | {method} acc % | {name} acc % | {method} − {name} (points) |",
        "|---|---|---|---|---|---|",
    ]
    for pair_set in sorted({r["pair_set"] for r in rows}):
        protocols = _sorted_protocols(
            list({r["protocol"] for r in rows if r["pair_set"] == pair_set and r["protocol"]})
        )
        keys = [(pair_set, "HR-HR", "")] + [(pair_set, c, p) for c in ("HR-LR", "LR-LR") for p in protocols]
        for key in keys:
            a, b = ours.get(key), theirs.get(key)
            if a is None or b is None:
                continue
            gap = 100 * (a["acc"] - b["acc"])
            text = f"{gap:+.2f}"
            if abs(gap) > 100 * max(a["acc_std"], b["acc_std"]):
                text = f"**{text}**"
            lines.append(f"| {pair_set} | {key[1]} | {key[2] or '–'} | {_cell(a)} | {_cell(b)} | {text} |")
    return "\n".join(lines)


def quality_table(rows: Sequence[dict[str, Any]], title: str | None = None) -> str:
    """PSNR / SSIM of the super-resolved probe and of the bicubic probe against the HR face, per protocol.

    Args:
        rows: dicts with ``protocol``, ``psnr_sr``, ``psnr_bicubic``, ``ssim_sr``, ``ssim_bicubic`` (RIM's and
            IPU-Net's ``sr_quality[split]``).
        title: optional heading line.

    Returns:
        The Markdown table, or ``""`` when ``rows`` is empty.
    """
    if not rows:
        return ""
    lines = [f"### {title}", ""] if title else []
    lines += ["| LR size | PSNR dB, SR | PSNR dB, bicubic | SSIM, SR | SSIM, bicubic |", "|---|---|---|---|---|"]
    by_protocol = {str(r["protocol"]): r for r in rows}
    for row in (by_protocol[p] for p in _sorted_protocols(list(by_protocol))):
        lines.append(
            f"| {row['protocol']} | {row['psnr_sr']:.2f} | {row['psnr_bicubic']:.2f} | {row['ssim_sr']:.3f} | "
            f"{row['ssim_bicubic']:.3f} |"
        )
    return "\n".join(lines)


def _sorted_protocols(protocols: list[str]) -> list[str]:
    def key(name: str) -> tuple[int, float, str]:
        digits = name.removesuffix("px").split("x")[0]
        return (0, float(digits), name) if digits.isdigit() else (1, 0.0, name)

    return sorted(protocols, key=key)


def write_results(
    rows: Sequence[dict[str, Any]],
    directory: str | Path,
    split: str,
    reference: Sequence[dict[str, Any]] = (),
    quality: Sequence[dict[str, Any]] = (),
    method: str = "method",
    far: float = 1e-3,
) -> list[Path]:
    """Write ``results_<split>.csv``, ``.json`` and ``.md`` into ``directory``; returns the paths.

    Args:
        rows: the method's evaluation rows.
        directory: where to write.
        split: ``"val"`` or ``"test"``.
        reference: the rows of the HR network the method starts from (``reference_<split>.{csv,json}``; the
            Markdown file puts them beside the method's).
        quality: PSNR / SSIM rows of a super-resolving method (``quality_<split>.json``; in the Markdown file).
        method: the method's class name, for the column names.
        far: the FAR of the TAR column (see :func:`results_table`).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"results_{split}.{ext}" for ext in ("csv", "json", "md")]
    _write_rows(rows, paths[0], paths[1])
    tables = [results_table(rows, far=far)]
    if reference:
        paths += [directory / f"reference_{split}.{ext}" for ext in ("csv", "json")]
        _write_rows(reference, paths[-2], paths[-1])
        tables.append(reference_table(rows, reference, method))
    if quality:
        paths.append(directory / f"quality_{split}.json")
        paths[-1].write_text(json.dumps(list(quality), indent=2))
        tables.append(quality_table(quality))
    paths[2].write_text("\n\n".join(tables) + "\n")
    return paths


def _write_rows(rows: Sequence[dict[str, Any]], csv_path: Path, json_path: Path) -> None:
    fields = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("split", "pair_set", "comparison"), k))
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    json_path.write_text(json.dumps(list(rows), indent=2))


def write_scores(scores: dict[str, Any], directory: str | Path, split: str) -> Path:
    """Write the per-pair cosine scores behind a result (``scores_<split>.npz``, no pickles).

    Keys are ``<pair set>__<comparison>__<protocol>__{scores,pair_id,issame}``; comparison ``lr_hr`` /
    ``hr_lr`` are the two pair orders of HR-LR.
    """
    import numpy as np

    path = Path(directory) / f"scores_{split}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **{k: v.numpy() for k, v in scores.items()})
    return path
