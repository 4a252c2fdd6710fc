"""Verification results in the papers' layout: HR-HR / LR-LR / HR-LR per pair set and protocol."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["results_table", "write_results", "write_scores"]

_COLUMNS = ("HR-HR", "LR-LR", "HR-LR")


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


def _sorted_protocols(protocols: list[str]) -> list[str]:
    def key(name: str) -> tuple[int, float, str]:
        digits = name.removesuffix("px").split("x")[0]
        return (0, float(digits), name) if digits.isdigit() else (1, 0.0, name)

    return sorted(protocols, key=key)


def write_results(rows: Sequence[dict[str, Any]], directory: str | Path, split: str, far: float = 1e-3) -> list[Path]:
    """Write ``results_<split>.csv``, ``.json`` and ``.md`` into ``directory`` (``far``: see :func:`results_table`)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"results_{split}.{ext}" for ext in ("csv", "json", "md")]
    fields = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("split", "pair_set", "comparison"), k))
    with paths[0].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    paths[1].write_text(json.dumps(list(rows), indent=2))
    paths[2].write_text(results_table(rows, far=far) + "\n")
    return paths


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
