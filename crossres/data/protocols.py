"""Cross-resolution evaluation protocols: the LR size of every verification pair, reproducible.

Knoche et al. 2021 (§6.3) publish four protocols for LFW, AgeDB, CALFW, CPLFW and CFP-FP: the second image of
each pair is shown at a resolution drawn uniformly from a range (low 5-10 px, mid 11-39 px, high 40-112 px, all
5-112 px), the first stays at 112 px. Their CSV files (github.com/Martlgap/btm-stm, ``evaluation-protocols/``)
are one line of ``2 * P`` integers in the image order of the insightface ``.bin`` file: ``112, s_0, 112, s_1,
...``. Without a CSV (e.g. synthetic pair sets) the same ranges are drawn with a seed.

A protocol is a ``(P, 2)`` long tensor of per-pair LR sizes ``(h, w)``; sizes follow ``docs/design.md``: a side
length ``s`` means ``s x round(s * W / H)`` for an HR image of ``H x W``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["KNOCHE_ALIASES", "KNOCHE_PROTOCOLS", "build_protocols", "knoche_sizes", "load_knoche_csv"]

#: Knoche et al. §6.3 protocol name -> inclusive LR side-length range in px (ranges as in the published CSVs).
KNOCHE_PROTOCOLS: dict[str, tuple[int, int]] = {
    "low_res_focus": (5, 10),
    "mid_res_focus": (11, 39),
    "high_res_focus": (40, 112),
    "avg_sizes": (5, 112),
}
#: Alternative names: ``all_res`` is how the paper's Table 2 calls ``avg_sizes``.
KNOCHE_ALIASES: dict[str, str] = {"all_res": "avg_sizes"}
KNOCHE_PROTOCOLS["all_res"] = KNOCHE_PROTOCOLS["avg_sizes"]

_KNOCHE_HR_SIDE = 112
_FIXED = re.compile(r"^(\d+)(?:px)?$")
_RECT = re.compile(r"^(\d+)x(\d+)(?:px)?$")
_VALID_FORMS = (
    "expected an int or '14'/'14px' (fixed square size), '16x12' (height x width), or a Knoche protocol: "
    + ", ".join(sorted(KNOCHE_PROTOCOLS))
)


def load_knoche_csv(path: str | Path) -> Tensor:
    """Read a btm-stm protocol CSV into the LR side length of every pair.

    Args:
        path: a file such as ``LFW/low_res_focus.csv``: one line of ``2 * P`` comma-separated integers
            (CRLF allowed); even entries are the HR side (112), odd entries the LR side of the pair's second image.

    Returns:
        ``(P,)`` long tensor of LR side lengths.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: on a non-integer entry, an even entry that is not 112, an LR size outside ``1..112``, an odd
            number of entries or more than one line; the message names the file and the 0-based position.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Knoche protocol CSV {path} not found")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if len(lines) != 1:
        raise ValueError(f"{path}: expected one line of comma-separated sizes, found {len(lines)} non-empty lines")
    fields = lines[0].strip().rstrip(",").split(",")
    if len(fields) % 2:
        raise ValueError(f"{path}: expected 2 sizes per pair (HR, LR), found an odd number of entries ({len(fields)})")
    values: list[int] = []
    for position, field in enumerate(fields):
        try:
            value = int(field.strip())
        except ValueError:
            raise ValueError(f"{path}: entry at position {position} is {field!r}, expected an integer") from None
        if position % 2 == 0 and value != _KNOCHE_HR_SIDE:
            raise ValueError(f"{path}: entry at position {position} is {value}, expected the HR side 112")
        if position % 2 == 1 and not 1 <= value <= _KNOCHE_HR_SIDE:
            raise ValueError(f"{path}: LR size at position {position} is {value}, expected 1..112")
        values.append(value)
    return torch.tensor(values[1::2], dtype=torch.long)


def _canonical(name: str) -> str:
    return KNOCHE_ALIASES.get(name, name)


def knoche_sizes(name: str, num_pairs: int, seed: int = 0) -> Tensor:
    """Draw per-pair LR side lengths uniformly from a Knoche protocol range (for sets without a CSV).

    Args:
        name: ``low_res_focus``, ``mid_res_focus``, ``high_res_focus``, ``avg_sizes`` or ``all_res``.
        num_pairs: number of pairs ``P``.
        seed: generator seed; the same seed gives the same sizes.

    Returns:
        ``(P,)`` long tensor, every entry in the protocol's inclusive range.

    Raises:
        ValueError: on an unknown protocol name.
    """
    if name not in KNOCHE_PROTOCOLS:
        raise ValueError(f"unknown Knoche protocol {name!r}; expected one of {sorted(KNOCHE_PROTOCOLS)}")
    low, high = KNOCHE_PROTOCOLS[name]
    generator = torch.Generator().manual_seed(seed)
    # §6.3: "resolutions in the range ... are randomly picked each with the same probability".
    return torch.randint(low, high + 1, (num_pairs,), generator=generator, dtype=torch.long)


def _side_to_hw(sides: Tensor, hr_size: tuple[int, int]) -> Tensor:
    """Side length -> ``(h, w)``: the size refers to the height, width keeps the HR aspect ratio."""
    height, width = hr_size
    widths = torch.round(sides.double() * width / height).long().clamp_min(1)
    return torch.stack([sides, widths], dim=1)


def _check_range(name: str, sizes: Tensor, hr_size: tuple[int, int]) -> None:
    if sizes.numel() == 0:
        return
    too_small = (sizes < 1).any(dim=1)
    too_big = (sizes[:, 0] > hr_size[0]) | (sizes[:, 1] > hr_size[1])
    bad = too_small | too_big
    if bad.any():
        first = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"protocol {name!r}: LR size {tuple(sizes[first].tolist())} of pair {first} is outside 1..HR size "
            f"{hr_size}; LR sizes must be positive and at most the HR size"
        )


def build_protocols(
    specs: Sequence[int | str],
    num_pairs: int,
    hr_size: tuple[int, int] = (112, 112),
    seed: int = 0,
    csv_dir: str | Path | None = None,
    knoche_scale: float | None = None,
) -> dict[str, Tensor]:
    """Turn protocol specs into per-pair LR sizes.

    Args:
        specs: each one of: an int ``14`` (or ``"14"``/``"14px"``) -> protocol ``"14px"``, every pair at
            ``14 x round(14 * W / H)``; ``"16x12"`` -> ``"16x12px"`` at ``16 x 12``; a Knoche name
            (``low_res_focus``, ``mid_res_focus``, ``high_res_focus``, ``avg_sizes``, alias ``all_res``) ->
            sizes from ``csv_dir/<name>.csv`` when that file exists, else drawn in the protocol's range with
            ``seed`` (side lengths are heights; widths keep the HR aspect ratio).
        num_pairs: number of pairs ``P`` of the pair set.
        hr_size: HR image size ``(H, W)``.
        seed: seed of drawn Knoche sizes (``knoche_sizes(name, P, seed)``).
        csv_dir: folder of the btm-stm CSVs for this pair set (e.g. ``.../btm-stm/LFW``).
        knoche_scale: Knoche sizes are sides of 112 px ArcFace crops; on faces of another framing each side is
            multiplied by this factor and rounded (at least 1 px, at most the HR height), so that the face keeps the
            same number of pixels. ``None``: ``H / 112`` (the same framing at another size). For dlib's 150 px
            chips use :func:`crossres.data.chip.knoche_scale` (the ratio of the eye distances).

    Returns:
        Protocol name -> ``(P, 2)`` long tensor of LR sizes ``(h, w)``, in spec order.

    Raises:
        ValueError: on an unknown spec (the message lists the valid forms), a CSV with a different number of
            pairs, or sizes below 1 or above the HR size.
    """
    hr_size = (int(hr_size[0]), int(hr_size[1]))
    scale = hr_size[0] / _KNOCHE_HR_SIDE if knoche_scale is None else float(knoche_scale)
    if not scale > 0:
        raise ValueError(f"knoche_scale must be positive, got {knoche_scale}")
    protocols: dict[str, Tensor] = {}
    for spec in specs:
        name, sizes = _build_one(spec, num_pairs, hr_size, seed, csv_dir, scale)
        _check_range(name, sizes, hr_size)
        protocols[name] = sizes
    return protocols


def _build_one(
    spec: int | str, num_pairs: int, hr_size: tuple[int, int], seed: int, csv_dir: str | Path | None, scale: float
) -> tuple[str, Tensor]:
    if isinstance(spec, bool):
        raise ValueError(f"protocol spec {spec!r} is a bool; {_VALID_FORMS}")
    if isinstance(spec, int):
        spec = str(spec)
    if not isinstance(spec, str):
        raise ValueError(f"protocol spec {spec!r} has type {type(spec).__name__}; {_VALID_FORMS}")
    text = spec.strip()
    if match := _FIXED.match(text):
        side = int(match.group(1))
        if side < 1:
            raise ValueError(f"protocol {spec!r}: LR size must be at least 1 px")
        return f"{side}px", _side_to_hw(torch.full((num_pairs,), side, dtype=torch.long), hr_size)
    if match := _RECT.match(text):
        h, w = int(match.group(1)), int(match.group(2))
        return f"{h}x{w}px", torch.tensor([[h, w]], dtype=torch.long).expand(num_pairs, 2).clone()
    if text in KNOCHE_PROTOCOLS:
        csv = _find_csv(text, csv_dir)
        if csv is not None:
            sides = load_knoche_csv(csv)
            if sides.numel() != num_pairs:
                raise ValueError(f"{csv}: has {sides.numel()} pairs, the pair set has {num_pairs}")
        else:
            sides = knoche_sizes(text, num_pairs, seed=seed)
        if scale != 1.0:
            sides = torch.round(sides.double() * scale).long().clamp(1, hr_size[0])
        return text, _side_to_hw(sides, hr_size)
    raise ValueError(f"unknown protocol spec {spec!r}; {_VALID_FORMS}")


def _find_csv(name: str, csv_dir: str | Path | None) -> Path | None:
    if csv_dir is None:
        return None
    for candidate in dict.fromkeys((name, _canonical(name))):
        path = Path(csv_dir) / f"{candidate}.csv"
        if path.is_file():
            return path
    return None
