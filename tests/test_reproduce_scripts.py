"""Smoke runs of the reproduction scripts leave the documented figures alone."""

from __future__ import annotations

import subprocess
import sys

from crossres.methods import RIM, load_method

from .conftest import REPO


def test_reproduce_rim_quick_writes_its_grid_in_out_not_in_docs(tmp_path) -> None:
    documented = REPO / "docs" / "img" / "rim_sr_grid.png"
    before = documented.read_bytes() if documented.exists() else None
    subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "reproduce_rim.py"),
            "run",
            "--quick",
            "--threads",
            "1",
            "--out",
            str(tmp_path),
            "--student-width",
            "4",
            "--rim-epochs",
            "30",
            "--assistant-after-epoch",
            "24",
        ],
        check=True,
        capture_output=True,
        cwd=REPO,
    )
    assert (tmp_path / "rim_sr_grid.png").stat().st_size > 0
    results = (tmp_path / "results.md").read_text()
    assert results.startswith("Table 1 shape")
    assert "student (iresnet34-w4)" in results
    assert "RIM schedule: 2 epochs, FHN + student 1, then the assistant alone 1" in results
    assert "| (e) | HR-LR | FHN + student, trained without the assistant" in results  # Table 1's (e), §4.1
    assert (tmp_path / "rim_without_assistant.ckpt").stat().st_size > 0
    assert isinstance(load_method(tmp_path / "rim_without_assistant.ckpt"), RIM)  # the checkpoints name their class
    assert (documented.read_bytes() if documented.exists() else None) == before


def test_reproduce_rim_refuses_an_assistant_phase_with_no_epochs(tmp_path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "reproduce_rim.py"),
            "run",
            "--rim-epochs",
            "6",
            "--assistant-after-epoch",
            "6",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert run.returncode == 2
    assert "--assistant-after-epoch 6 leaves the assistant no epoch of --rim-epochs 6" in run.stderr
    assert not any(tmp_path.iterdir())
