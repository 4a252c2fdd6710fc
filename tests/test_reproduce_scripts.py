"""Smoke runs of the reproduction scripts leave the documented figures alone."""

from __future__ import annotations

import subprocess
import sys

from .conftest import REPO


def test_reproduce_rim_quick_writes_its_grid_in_out_not_in_docs(tmp_path) -> None:
    documented = REPO / "docs" / "img" / "rim_sr_grid.png"
    before = documented.read_bytes() if documented.exists() else None
    subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "reproduce_rim.py"),
            "--quick",
            "--threads",
            "1",
            "--out",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
        cwd=REPO,
    )
    assert (tmp_path / "rim_sr_grid.png").stat().st_size > 0
    assert (tmp_path / "results.md").read_text().startswith("Table 1 shape")
    assert (documented.read_bytes() if documented.exists() else None) == before
