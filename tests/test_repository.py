"""The repository ships what the package needs: no source file may be swallowed by ``.gitignore``."""

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ("crossres", "experiments", "tests", "benchmarks", "docs", "notebooks")


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="not a git checkout")
def test_no_source_file_is_gitignored() -> None:
    files = [
        str(p.relative_to(REPO))
        for top in SHIPPED
        for p in (REPO / top).rglob("*")
        if p.is_file()
        and p.suffix in {".py", ".yaml", ".md", ".csv", ".typed", ".ipynb"}
        and "__pycache__" not in p.parts
    ]
    assert files
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *files], cwd=REPO, capture_output=True, text=True
    ).stdout.split()
    assert not ignored, f".gitignore hides shipped files: {ignored}"
