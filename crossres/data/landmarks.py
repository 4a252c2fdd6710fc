"""Landmark files: five points per image for alignment, 68 iBUG points for RIM's priors on real faces."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch
from torch import Tensor

from crossres.data.priors import NUM_LANDMARKS

__all__ = ["load_landmarks", "load_landmarks68"]


def load_landmarks(landmarks_file: str | Path, num_points: int = 5, entry_key: str | None = None) -> dict[str, Tensor]:
    """Read ``num_points`` landmarks per image (five for alignment; 68 iBUG points for RIM's priors).

    Args:
        landmarks_file: JSON ``{path: [[x, y] * num_points]}`` (``.json``; with ``entry_key``, an entry may also be
            an object holding the points under that key) or CSV lines ``path,x1,y1,...`` (an optional header line
            is skipped).
        num_points: points per image.
        entry_key: the key of the points inside JSON object entries (``"landmarks"`` in ``crossres align``'s
            ``landmarks.json``).

    Returns:
        Relative image path (as written in the file) -> ``(num_points, 2)`` float64 tensor.

    Raises:
        FileNotFoundError: if the file is missing.
        ValueError: on a malformed entry (the message names the file and line or key).
    """
    path = Path(landmarks_file)
    if not path.is_file():
        raise FileNotFoundError(f"landmarks file {path} not found")
    out: dict[str, Tensor] = {}
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object {{path: [[x, y] * {num_points}]}}")
        for key, value in data.items():
            points = value.get(entry_key) if entry_key is not None and isinstance(value, dict) else value
            try:
                out[str(key)] = torch.tensor(points, dtype=torch.float64).reshape(num_points, 2)
            except (TypeError, ValueError, RuntimeError) as err:
                raise ValueError(f"{path}: entry {key!r} is not {num_points} (x, y) points: {err}") from err
        return out
    with open(path, newline="") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            if not row or not "".join(row).strip():
                continue
            try:
                values = [float(v) for v in row[1:]]
            except ValueError:
                if lineno == 1:  # header
                    continue
                raise ValueError(
                    f"{path}:{lineno}: expected 'path,x1,y1,...' with {2 * num_points} numbers, got {row!r}"
                ) from None
            if len(values) != 2 * num_points:
                raise ValueError(
                    f"{path}:{lineno}: expected {2 * num_points} coordinates after the path, got {len(values)}"
                )
            out[row[0].strip()] = torch.tensor(values, dtype=torch.float64).reshape(num_points, 2)
    return out


def load_landmarks68(landmarks_file: str | Path) -> dict[str, Tensor]:
    """Read 68 iBUG landmarks per image, for RIM's heatmap and parsing priors on real data.

    Args:
        landmarks_file: the ``landmarks.json`` of :func:`detect_align_folder` (entries with a ``"landmarks"``
            key), a JSON ``{path: [[x, y] * 68]}``, or a CSV ``path,x0,y0,...,x67,y67`` (an optional header
            line is skipped).

    Returns:
        Image path (as written in the file) -> ``(68, 2)`` float64 tensor.

    Raises:
        FileNotFoundError: if the file is missing.
        ValueError: on a malformed entry (the message names the file and line or key).
    """
    return load_landmarks(landmarks_file, num_points=NUM_LANDMARKS, entry_key="landmarks")
