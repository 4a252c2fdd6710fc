"""Figures of an evaluation run (PNG, matplotlib Agg, no pyplot state).

* :func:`accuracy_vs_resolution`: verification accuracy against the LR size, CR (HR-LR, solid) and ER (LR-LR,
  dotted) per pair set, HR-HR as a reference line (Knoche et al. 2021, 004 Fig. 5 and Fig. 9).
* :func:`distance_distributions`: positive vs negative cosine distances ``1 - cos`` per size, CR and ER side by
  side, as split violins (004 Fig. 7).
* :func:`roc_curves`: ROC per protocol with a logarithmic FAR axis.
* :func:`example_pairs_grid`: a few positive and negative pairs at every size, as the network sees them.

Score files are ``scores_<split>.npz`` from :func:`crossres.report.tables.write_scores`: keys
``<pair set>__<comparison>__[<protocol>__]{scores,pair_id,issame}`` with comparison ``hr_hr``, ``lr_lr``, ``hr_lr``
or ``lr_hr`` (the two pair orders of HR-LR).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from crossres.data.pairs import PairSet
from crossres.metrics.verification import verification_roc
from crossres.transforms.functional import Backend, degrade, to_float

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "accuracy_vs_resolution",
    "distance_distributions",
    "example_pairs_grid",
    "load_scores",
    "protocol_height",
    "roc_curves",
    "sort_protocols",
]

log = logging.getLogger(__name__)

_FIXED_PROTOCOL = re.compile(r"^(\d+)(?:x(\d+))?px$")
_COMPARISONS = ("hr_hr", "lr_lr", "hr_lr", "lr_hr")
# Table 2 of 004 lists the Knoche protocols from the widest range to the lowest resolutions.
_KNOCHE_ORDER = ("avg_sizes", "all_res", "high_res_focus", "mid_res_focus", "low_res_focus")
_POSITIVE, _NEGATIVE = "tab:blue", "tab:orange"  # 004 Fig. 7: positive blue, negative yellow
_DPI = 120

ScoreTable = dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]]
#: A ``scores_<split>.npz`` path, its key -> array mapping, or a :data:`ScoreTable` from :func:`load_scores`.
Scores = str | Path | Mapping[Any, Any]


# ------------------------------------------------------------------------------------------------ helpers
def protocol_height(protocol: str) -> int | None:
    """LR height of a fixed-size protocol (``"14px"`` -> 14, ``"16x12px"`` -> 16); ``None`` for the others."""
    match = _FIXED_PROTOCOL.match(protocol)
    return int(match.group(1)) if match else None


def sort_protocols(protocols: Sequence[str]) -> list[str]:
    """Fixed sizes by height, then the Knoche protocols in the order of 004 Table 2, then the rest by name."""

    def key(name: str) -> tuple[int, int, str]:
        height = protocol_height(name)
        if height is not None:
            return (0, height, name)
        if name in _KNOCHE_ORDER:
            return (1, _KNOCHE_ORDER.index(name), name)
        return (2, 0, name)

    return sorted(dict.fromkeys(protocols), key=key)


def load_scores(scores: Scores) -> ScoreTable:
    """Read a ``scores_<split>.npz`` into ``(pair set, comparison, protocol) -> (scores, issame)``.

    Args:
        scores: the ``.npz`` file, a mapping with its keys (e.g. ``CrossResMethod.eval_scores[split]``), or an
            already loaded table (returned as is).

    Returns:
        Float64 cosine similarities and bool labels, ordered by ``pair_id``; the protocol is ``""`` for HR-HR.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if a key does not follow ``<pair set>__<comparison>__[<protocol>__]<field>``.
    """
    if isinstance(scores, Mapping) and all(isinstance(k, tuple) for k in scores):
        return dict(scores)
    if isinstance(scores, str | Path):
        path = Path(scores)
        if not path.is_file():
            raise FileNotFoundError(f"score file {path} not found (written by `crossres test` as scores_<split>.npz)")
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    else:
        arrays = {k: np.asarray(v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in scores.items()}
    fields: dict[tuple[str, str, str], dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        parts = key.split("__")
        where = [i for i, part in enumerate(parts[:-1]) if part in _COMPARISONS]
        if not where or parts[-1] not in ("scores", "pair_id", "issame") or where[0] == 0:
            raise ValueError(
                f"score key {key!r} does not read '<pair set>__<comparison>__[<protocol>__]<field>' with comparison "
                f"in {_COMPARISONS} and field in ('scores', 'pair_id', 'issame')"
            )
        i = where[0]
        name = ("__".join(parts[:i]), parts[i], "__".join(parts[i + 1 : -1]))
        fields.setdefault(name, {})[parts[-1]] = value
    table: ScoreTable = {}
    for name, entry in fields.items():
        if "scores" not in entry or "issame" not in entry:
            raise ValueError(f"scores of {'/'.join(n for n in name if n)} lack 'scores' or 'issame'")
        order = np.argsort(entry["pair_id"], kind="stable") if "pair_id" in entry else slice(None)
        table[name] = (entry["scores"].astype(np.float64)[order], entry["issame"].astype(bool)[order])
    return table


def _pooled(table: ScoreTable, pair_set: str, scenario: str, protocol: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Scores of a scenario: ``"CR"`` pools both HR-LR pair orders (004 §3.4), ``"ER"`` is LR-LR, ``"HR"`` HR-HR."""
    if scenario == "HR":
        return table.get((pair_set, "hr_hr", ""))
    comparisons = ("hr_lr", "lr_hr") if scenario == "CR" else ("lr_lr",)
    found = [table[(pair_set, c, protocol)] for c in comparisons if (pair_set, c, protocol) in table]
    if not found:
        return None
    return np.concatenate([s for s, _ in found]), np.concatenate([m for _, m in found])


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI, facecolor="white")
    return path


def _read_rows(rows: Sequence[Mapping[str, Any]] | str | Path) -> list[Mapping[str, Any]]:
    if isinstance(rows, str | Path):
        import json

        path = Path(rows)
        if not path.is_file():
            raise FileNotFoundError(
                f"results file {path} not found (written by `crossres test` as results_<split>.json)"
            )
        return list(json.loads(path.read_text()))
    return list(rows)


def _spread(items: Sequence[Any], count: int) -> list[Any]:
    """At most ``count`` items, evenly spread, always keeping the first and the last."""
    if len(items) <= count:
        return list(items)
    index = np.unique(np.round(np.linspace(0, len(items) - 1, count)).astype(int))
    return [items[i] for i in index]


# ----------------------------------------------------------------------------------- accuracy vs size
def accuracy_vs_resolution(
    rows: Sequence[Mapping[str, Any]] | str | Path,
    path: str | Path,
    title: str | None = None,
    legend_title: str = "pair set",
) -> Path:
    """Verification accuracy (%) against the LR size, 004 Fig. 5 (per data set) and Fig. 9.

    Every pair set gets one colour: CR = HR-LR accuracy (solid), ER = LR-LR (dotted), and its HR-HR accuracy as a
    dashed horizontal line. Error bars (a band for more than 24 sizes) are the standard deviation over the folds.
    Only fixed-size protocols (``"14px"``, ``"16x12px"`` by height) are on the x axis.

    Args:
        rows: evaluation rows (``CrossResMethod.eval_results[split]``) or a ``results_<split>.json``.
        path: the PNG to write.
        title: figure title.
        legend_title: title of the colour legend (``"method"`` when the rows' ``pair_set`` names methods, as in
            ``benchmarks/compare_methods.py``).

    Returns:
        ``path``.

    Raises:
        ValueError: if no row has a fixed-size protocol.
    """
    records = _read_rows(rows)
    fixed = [r for r in records if protocol_height(str(r.get("protocol", ""))) is not None]
    if not fixed:
        found = sorted({str(r.get("protocol", "")) for r in records} - {""})
        raise ValueError(
            f"accuracy_vs_resolution needs fixed-size protocols such as '14px' or '16x12px'; the rows have {found}"
        )
    pair_sets = sorted({str(r["pair_set"]) for r in records})
    fig = _new_figure(8.5, 4.8)
    ax = fig.add_subplot()
    colours = _colours(len(pair_sets))
    values: list[float] = [50.0]
    heights = sorted({protocol_height(str(r["protocol"])) or 0 for r in fixed})
    many = len(heights) > 24
    for colour, pair_set in zip(colours, pair_sets, strict=True):
        for comparison, style, marker in (("HR-LR", "-", "o"), ("LR-LR", ":", "s")):
            points = sorted(
                (protocol_height(str(r["protocol"])) or 0, 100 * float(r["acc"]), 100 * float(r.get("acc_std") or 0))
                for r in fixed
                if r["pair_set"] == pair_set and r["comparison"] == comparison
            )
            if points:
                x, y, std = (list(v) for v in zip(*points, strict=True))
                ax.plot(
                    x, y, linestyle=style, marker=None if many else marker, markersize=4, color=colour, linewidth=1.6
                )
                lower = [a - s for a, s in zip(y, std, strict=True)]
                upper = [a + s for a, s in zip(y, std, strict=True)]
                if many:  # a band: error bars at every pixel would hide the curves
                    ax.fill_between(x, lower, upper, color=colour, alpha=0.12, linewidth=0)
                else:
                    ax.errorbar(x, y, yerr=std, fmt="none", ecolor=colour, elinewidth=0.9, capsize=2.5, alpha=0.8)
                values += lower + upper
        hr = [100 * float(r["acc"]) for r in records if r["pair_set"] == pair_set and r["comparison"] == "HR-HR"]
        if hr:
            ax.axhline(hr[0], linestyle="--", color=colour, linewidth=1.1, alpha=0.8)
            values.append(hr[0])
    ax.axhline(50.0, color="0.6", linewidth=0.8, linestyle="-.")
    low, high = min(values), max(values)
    ax.set_ylim(max(0.0, low - 3), min(101.0, high + 3))
    if not many:
        ax.set_xticks(heights)
    ax.set_xlabel("LR size (px, image height)")
    ax.set_ylabel("verification accuracy (%, 10-fold)")
    ax.grid(alpha=0.3)
    _style_legend(ax, pair_sets, colours, legend_title)
    ax.set_title(title or "Accuracy vs resolution: CR = HR-LR (solid), ER = LR-LR (dotted), HR-HR (dashed)")
    return _save(fig, path)


def _colours(count: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]


def _style_legend(ax: Axes, pair_sets: Sequence[str], colours: Sequence[Any], title: str = "pair set") -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, linewidth=3) for c in colours]
    first = ax.legend(handles, pair_sets, title=title, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.add_artist(first)
    styles = [
        Line2D([], [], color="0.2", linestyle="-", marker="o", markersize=4),
        Line2D([], [], color="0.2", linestyle=":", marker="s", markersize=4),
        Line2D([], [], color="0.2", linestyle="--"),
        Line2D([], [], color="0.6", linestyle="-."),
    ]
    labels = ["CR: HR-LR", "ER: LR-LR", "HR-HR", "chance (50 %)"]
    ax.legend(styles, labels, title="comparison", loc="lower left", bbox_to_anchor=(1.01, 0.0), fontsize=8)


# ------------------------------------------------------------------------------- distance distributions
def _distribution_columns(
    table: ScoreTable, pair_set: str, sizes: Sequence[int | str], hr_size: int | None
) -> list[tuple[str, str | None]]:
    """``(label, protocol)`` per requested size or protocol name; protocol ``None`` is HR-HR."""
    available = {p: protocol_height(p) for (s, c, p) in table if s == pair_set and c != "hr_hr"}
    by_height: dict[int, str] = {}
    for protocol, height in sorted(available.items(), key=lambda kv: (len(kv[0]), kv[0])):
        if height is not None:
            by_height.setdefault(height, protocol)
    largest = max(by_height, default=0)
    requested = sorted(dict.fromkeys(int(s) for s in sizes if not isinstance(s, str)))
    named = [s for s in dict.fromkeys(sizes) if isinstance(s, str)]
    columns: list[tuple[str, str | None]] = []
    hr_wanted = False
    for size in requested:
        if hr_size is not None and size >= hr_size:
            hr_wanted = True
        elif size in by_height:
            columns.append((f"{size} px", by_height[size]))
        elif hr_size is None and size == requested[-1] and size > largest:
            hr_wanted = True
        else:
            log.warning("distance_distributions: %s has no %d px protocol; skipped", pair_set, size)
    for protocol in named:
        if protocol in available:
            columns.append((protocol.removesuffix("_focus"), protocol))
        else:
            log.warning("distance_distributions: %s has no protocol %r; skipped", pair_set, protocol)
    if hr_wanted and (pair_set, "hr_hr", "") in table:
        columns.append(("HR" if hr_size is None else f"HR\n({hr_size} px)", None))
    return columns


def _split_violin(ax: Axes, data: np.ndarray, x: float, side: str, colour: Any, width: float = 0.8) -> None:
    """Half a violin (``side`` "left" or "right" of ``x``) with its median, or a bar for degenerate data."""
    if data.size == 0:
        return
    sign = -1 if side == "left" else 1
    median = float(np.median(data))
    if data.size >= 2 and float(np.ptp(data)) > 1e-9:
        parts = ax.violinplot([data], positions=[x], widths=width, showextrema=False, bw_method="scott")
        for body in parts["bodies"]:  # type: ignore[attr-defined]
            vertices = body.get_paths()[0].vertices
            vertices[:, 0] = np.clip(vertices[:, 0], x, np.inf) if sign > 0 else np.clip(vertices[:, 0], -np.inf, x)
            body.set_facecolor(colour)
            body.set_edgecolor("0.25")
            body.set_linewidth(0.6)
            body.set_alpha(0.75)
    else:
        ax.plot([x, x + sign * width / 2], [median, median], color=colour, linewidth=3)
    ax.plot([x, x + sign * width * 0.3], [median, median], color="black", linewidth=1.2)


def distance_distributions(
    scores: Scores,
    path: str | Path,
    sizes: Sequence[int | str] = (7, 14, 28, 56, 112),
    hr_size: int | None = None,
    pair_sets: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Positive vs negative cosine distances ``1 - cos`` per size, CR and ER, as split violins (004 Fig. 7).

    One row per pair set, two panels: CR (HR-LR, both pair orders pooled) and ER (LR-LR). In each, positive pairs
    are the left (blue) and negative pairs the right (orange) half of the violin at each size, with their medians;
    the last column is the HR-HR distribution, shared by both panels as the centre of Fig. 7.

    Args:
        scores: a ``scores_<split>.npz`` (or its loaded mapping).
        path: the PNG to write.
        sizes: LR heights to show, and protocol names (``"low_res_focus"``) drawn after them; a size with no
            ``"<size>px"`` protocol that is at least ``hr_size`` (or, without ``hr_size``, above every protocol's
            size) is the HR column; other missing sizes are skipped.
        hr_size: HR image height, used for the HR column.
        pair_sets: pair sets to draw (default all).
        title: figure title.

    Returns:
        ``path``.

    Raises:
        ValueError: if none of ``sizes`` can be drawn for any pair set.
    """
    table = load_scores(scores)
    names = list(pair_sets) if pair_sets is not None else sorted({s for s, _, _ in table})
    layout = [(name, _distribution_columns(table, name, sizes, hr_size)) for name in names]
    layout = [(name, columns) for name, columns in layout if columns]
    if not layout:
        protocols = sort_protocols([p for (_, c, p) in table if c != "hr_hr"])
        raise ValueError(f"distance_distributions: none of the sizes {list(sizes)} is among the protocols {protocols}")
    width = max(len(columns) for _, columns in layout)
    fig = _new_figure(max(8.0, 2.0 + 1.6 * width), 0.6 + 3.4 * len(layout))
    axes = fig.subplots(len(layout), 2, squeeze=False, sharey=True)
    for row, (name, columns) in enumerate(layout):
        for col, (scenario, label) in enumerate((("CR", "CR: HR-LR"), ("ER", "ER: LR-LR"))):
            ax = axes[row, col]
            for x, (_, protocol) in enumerate(columns):
                found = _pooled(table, name, "HR" if protocol is None else scenario, protocol or "")
                if found is None:
                    continue
                distance, issame = 1.0 - found[0], found[1]  # cosine distance of L2-normalised embeddings
                _split_violin(ax, distance[issame], x, "left", _POSITIVE)
                _split_violin(ax, distance[~issame], x, "right", _NEGATIVE)
            ax.set_xticks(range(len(columns)), [c for c, _ in columns])
            ax.set_xlim(-0.6, len(columns) - 0.4)
            ax.set_title(f"{name}: {label}", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
            if col == 0:
                ax.set_ylabel("cosine distance  1 - cos")
            if row == len(layout) - 1:
                ranges = any(p is not None and protocol_height(p) is None for _, p in columns)
                ax.set_xlabel("LR size or protocol" if ranges else "LR size")
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=_POSITIVE, alpha=0.75), Patch(facecolor=_NEGATIVE, alpha=0.75)]
    fig.legend(handles, ["positive pairs", "negative pairs"], loc="outside lower center", ncols=2, fontsize=9)
    fig.suptitle(title or "Cosine-distance distributions of positive and negative pairs (black: median)")
    return _save(fig, path)


# ---------------------------------------------------------------------------------------------- ROC
def _auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Trapezoidal area under the ROC polyline (rates descending, as :func:`verification_roc` returns them)."""
    return float(np.sum((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2))


def roc_curves(scores: Scores, path: str | Path, max_protocols: int = 8, title: str | None = None) -> Path:
    """ROC curves (TAR against FAR on a log axis) per protocol, CR and ER, with HR-HR as reference.

    One row per pair set, two panels: CR (HR-LR, both pair orders pooled) and ER (LR-LR). Fixed-size protocols
    are coloured from dark (small) to light (large); with more than ``max_protocols`` of them an evenly spread
    subset (smallest and largest included) is drawn. Other protocols (Knoche ranges) are always drawn.

    Args:
        scores: a ``scores_<split>.npz`` (or its loaded mapping).
        path: the PNG to write.
        max_protocols: most fixed-size protocols drawn per panel.
        title: figure title.

    Returns:
        ``path``.

    Raises:
        ValueError: if the scores hold no pair set.
    """
    from matplotlib import colormaps

    table = load_scores(scores)
    names = sorted({s for s, _, _ in table})
    if not names:
        raise ValueError("roc_curves: the score file holds no pair set")
    from matplotlib.lines import Line2D

    fig = _new_figure(12.5, 0.6 + 3.8 * len(names))
    axes = fig.subplots(len(names), 2, squeeze=False)
    cmap = colormaps["viridis"]
    others = [colormaps["tab10"](i) for i in (3, 5, 6, 7, 8, 1)]  # clear of viridis' purples, greens, yellows
    for row, name in enumerate(names):
        protocols = sort_protocols([p for (s, c, p) in table if s == name and c != "hr_hr"])
        fixed = _spread([p for p in protocols if protocol_height(p) is not None], max_protocols)
        other = [p for p in protocols if protocol_height(p) is None]
        styles: list[tuple[str | None, str, Any, Any]] = []
        for i, protocol in enumerate(fixed):
            styles.append((protocol, protocol, cmap(0.85 * i / max(1, len(fixed) - 1)), "-"))
        for i, protocol in enumerate(other):
            styles.append((protocol, protocol, others[i % len(others)], "-."))
        styles.append((None, "HR-HR", "black", "--"))
        aucs: dict[str, list[str]] = {legend: [] for _, legend, _, _ in styles}
        smallest = 1.0
        for col, (scenario, label) in enumerate((("CR", "CR: HR-LR"), ("ER", "ER: LR-LR"))):
            ax = axes[row, col]
            for protocol, legend, colour, style in styles:
                found = _pooled(table, name, "HR" if protocol is None else scenario, protocol or "")
                if found is None or found[1].all() or not found[1].any():
                    aucs[legend].append("–")
                    continue
                fpr_t, tpr_t, _ = verification_roc(torch.from_numpy(found[0]), torch.from_numpy(found[1]))
                fpr, tpr = fpr_t.numpy(), tpr_t.numpy()
                keep = fpr > 0
                smallest = min(smallest, float(fpr[keep].min()) if keep.any() else 1.0)
                ax.plot(fpr[keep], tpr[keep], color=colour, linestyle=style, linewidth=1.4)
                aucs[legend].append(f"{_auc(fpr, tpr):.3f}")
            ax.set_xscale("log")
            ax.set_ylim(0.0, 1.01)
            ax.set_xlabel("FAR (false accept rate)")
            ax.set_ylabel("TAR (true accept rate)")
            ax.set_title(f"{name}: {label}", fontsize=10)
            ax.grid(which="both", alpha=0.25)
        for ax in axes[row]:
            ax.set_xlim(smallest, 1.0)
        handles = [Line2D([], [], color=colour, linestyle=style, linewidth=1.6) for _, _, colour, style in styles]
        labels = [f"{legend}  {' / '.join(aucs[legend])}" for _, legend, _, _ in styles]
        axes[row, 1].legend(
            handles,
            labels,
            title="protocol  AUC CR / ER",
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            fontsize=8,
            title_fontsize=8,
        )
    fig.suptitle(title or "ROC per protocol (HR-LR pools both pair orders)")
    return _save(fig, path)


# ----------------------------------------------------------------------------------------- example pairs
def example_pairs_grid(
    pair_set: PairSet,
    sizes: Sequence[int],
    path: str | Path,
    num_positive: int = 2,
    num_negative: int = 2,
    backend: Backend = "pil",
    title: str | None = None,
) -> Path:
    """A few positive and negative pairs of a pair set at HR and at every LR size, as the networks see them.

    Each cell shows both faces of a pair degraded to one size with Eq. (1) of 004 (down to the size, bicubic back
    up to the HR size, :func:`~crossres.transforms.functional.degrade`); the last column is the HR pair.

    Args:
        pair_set: the pair set.
        sizes: LR heights (sizes at or above the HR height are skipped: the HR column shows them).
        path: the PNG to write.
        num_positive: same-identity pairs shown (the first ones of the set).
        num_negative: different-identity pairs shown.
        backend: resampling backend of the degradation (the data module's ``backend``).
        title: figure title.

    Returns:
        ``path``.

    Raises:
        ValueError: if the pair set has fewer positive or negative pairs than asked for.
    """
    same = torch.nonzero(pair_set.issame).flatten()[:num_positive].tolist()
    different = torch.nonzero(~pair_set.issame).flatten()[:num_negative].tolist()
    if len(same) < num_positive or len(different) < num_negative:
        raise ValueError(
            f"pair set {pair_set.name!r} has {int(pair_set.issame.sum())} positive and {int((~pair_set.issame).sum())} "
            f"negative pairs; asked for {num_positive} and {num_negative}"
        )
    chosen = same + different
    indices = pair_set.pairs[chosen].reshape(-1).tolist()
    hr = to_float(torch.stack([pair_set.images[i] for i in indices]))
    height, width = int(hr.shape[-2]), int(hr.shape[-1])
    lr_sizes = [s for s in sorted(dict.fromkeys(int(s) for s in sizes)) if 1 <= s < height]
    views = [(f"{s} px", degrade(hr, s, backend=backend)) for s in lr_sizes] + [(f"HR ({height}x{width})", hr)]
    gap = max(1, width // 16)
    fig = _new_figure(0.9 + 2.1 * len(views), 0.5 + 1.15 * len(chosen))
    axes = fig.subplots(len(chosen), len(views), squeeze=False)
    for row, pair_index in enumerate(chosen):
        for col, (label, images) in enumerate(views):
            left, right = images[2 * row], images[2 * row + 1]
            spacer = torch.ones(3, height, gap)
            picture = torch.cat([left, spacer, right], dim=-1).clamp(0, 1).permute(1, 2, 0).cpu().numpy()
            ax = axes[row, col]
            ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(label, fontsize=9)
            if col == 0:
                positive = bool(pair_set.issame[pair_index])
                ax.set_ylabel(
                    f"{'same' if positive else 'different'}\npair {pair_index}",
                    fontsize=8,
                    color="tab:green" if positive else "tab:red",
                )
    fig.suptitle(title or f"{pair_set.name}: example pairs at each LR size (degraded and upsampled, Eq. (1))")
    return _save(fig, path)
