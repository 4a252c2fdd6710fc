"""The independent identity judge in a run's report: how far SR faces (RIM, IPU-Net) drift from their HR originals.

:class:`~crossres.metrics.identity.IdentityJudge` (dlib's 128-D descriptor, the optional ``crossres[dlib]``
extra) scores every LR size twice: the bicubic face the method receives and the face it hallucinates. An SR
method that restores identity, rather than the look of its own training recogniser's features, brings the
distance down and the share under dlib's 0.6 threshold up.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from crossres.data.detect import DLIB_INSTALL_HINT
from crossres.data.pairs import PairSet
from crossres.transforms.functional import Backend, degrade, resolve_size, to_float

__all__ = ["SR_METHODS", "find_checkpoint", "identity_judge_section", "sr_identity_rows", "super_resolve"]

log = logging.getLogger(__name__)

#: Methods with a ``super_resolve`` whose outputs the report judges.
SR_METHODS = ("RIM", "IPUNet")


@torch.no_grad()
def super_resolve(model: Any, images: Tensor) -> Tensor:
    """SR faces from bicubic-upsampled LR faces with a RIM (its FHN's ``sr``) or IPU-Net, clamped to ``[0, 1]``."""
    out = model.super_resolve(images.to(model.device))
    return (out.sr if hasattr(out, "sr") else out).float().clamp(0, 1).cpu()


def sr_identity_rows(
    model: Any, hr: Tensor, sizes: Sequence[int], judge: Any, backend: Backend = "pil"
) -> list[dict[str, float]]:
    """Judge bicubic and SR faces against their HR originals at every LR size.

    Args:
        model: a RIM or IPU-Net (anything with ``super_resolve`` and ``device``), in eval mode.
        hr: ``(B, 3, H, W)`` HR faces in ``[0, 1]`` (or ``uint8``).
        sizes: LR heights (see :func:`~crossres.transforms.functional.resolve_size`).
        judge: an :class:`~crossres.metrics.identity.IdentityJudge`.
        backend: the degradation's resampling backend (as the run's data module).

    Returns:
        One row per size: ``lr_size``, ``bicubic_distance``, ``bicubic_share_same``, ``sr_distance``,
        ``sr_share_same``, ``faces``.
    """
    from crossres.metrics.identity import descriptor_distance, share_same

    hr = to_float(hr) if not hr.is_floating_point() else hr
    landmarks = judge.landmarks(hr)  # once, on the HR faces: both views share their geometry
    reference = judge.descriptors(hr, landmarks)
    rows = []
    for size in sizes:
        lr_size = resolve_size(int(size), (int(hr.shape[-2]), int(hr.shape[-1])))
        bicubic = degrade(hr, lr_size, backend=backend)
        row: dict[str, float] = {"lr_size": int(size), "faces": int(hr.shape[0])}
        for name, faces in (("bicubic", bicubic), ("sr", super_resolve(model, bicubic))):
            distances = descriptor_distance(judge.descriptors(faces, landmarks), reference)
            row[f"{name}_distance"] = float(distances.mean())
            row[f"{name}_share_same"] = share_same(distances, judge.threshold)
        rows.append(row)
    return rows


def find_checkpoint(config: Mapping[str, Any], results_dir: Path) -> Path | None:
    """The checkpoint a run's results came from: ``ckpt_path`` of its config, else the run's ``last.ckpt``."""
    ckpt = config.get("ckpt_path")
    if ckpt and Path(str(ckpt)).is_file():
        return Path(str(ckpt))
    for run_dir in (results_dir, results_dir.parent):
        candidate = run_dir / "checkpoints" / "last.ckpt"
        if candidate.is_file():
            return candidate
    return None


def identity_judge_section(
    method: str,
    config: Mapping[str, Any],
    results_dir: Path,
    report_dir: Path,
    sizes: Sequence[int],
    pair_set: Callable[[], tuple[PairSet, Backend]],
    num_faces: int = 8,
) -> tuple[list[str], list[Path], list[str]]:
    """The report's identity-judge section for a RIM or IPU-Net run.

    Args:
        method: the run's method class name (other methods get nothing).
        config: the run's ``config.yaml``.
        results_dir: the directory of the results (the checkpoint is looked up from it).
        report_dir: where ``identity_judge.csv`` is written.
        sizes: LR heights to judge.
        pair_set: returns the run's first evaluation pair set and degradation backend (its first faces are
            judged).
        num_faces: faces judged per size (dlib's CPU recogniser takes about 0.2 s per face and view).

    Returns:
        ``(markdown lines, written files, notes)``; without dlib, a checkpoint or faces, only a note that says why.
    """
    if method not in SR_METHODS:
        return [], [], []
    try:
        from crossres.metrics.identity import IdentityJudge

        judge = IdentityJudge()
    except ImportError:
        return [], [], [f"Identity judge (dlib) of the SR faces skipped: install the extra, `{DLIB_INSTALL_HINT}`."]
    ckpt = find_checkpoint(config, results_dir)
    if ckpt is None:
        return [], [], ["Identity judge skipped: no checkpoint (config ckpt_path or checkpoints/last.ckpt) found."]
    try:
        import crossres.methods

        model = getattr(crossres.methods, method).load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
        model.eval()
        pairs, backend = pair_set()
        count = min(num_faces, len(pairs.images))
        hr = torch.stack([pairs.images[i] for i in range(count)])
        height = int(hr.shape[-2])
        rows = sr_identity_rows(model, hr, [s for s in sizes if s < height], judge, backend=backend)
    except Exception as err:  # the report stands without the judge; say why
        log.warning("identity judge skipped: %s", err)
        return [], [], [f"Identity judge skipped: {type(err).__name__}: {err}"]
    path = report_dir / "identity_judge.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["lr_size"])
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "",
        "### Identity judge (dlib, independent of the training recogniser)",
        "",
        f"Descriptor distance to the HR original (mean over {count} faces of `{pairs.name}`) and the share of "
        f"faces dlib still calls the same person (distance < {judge.threshold}); checkpoint `{ckpt}`.",
        "",
        "| LR size | bicubic distance | bicubic same | SR distance | SR same |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['lr_size']} px | {r['bicubic_distance']:.3f} | {100 * r['bicubic_share_same']:.0f} % | "
        f"{r['sr_distance']:.3f} | {100 * r['sr_share_same']:.0f} % |"
        for r in rows
    ]
    return lines, [path], []
