"""Execute the jupytext notebook sources (``notebooks/NN_*.py``) and write the executed ``.ipynb`` beside them.

Each notebook runs in a fresh kernel inside a temporary directory (nothing is written into the repository but the
``.ipynb``), with ``CROSSRES_NOTEBOOK_TINY=1`` unless ``--full``. Outputs are kept small: execution timings and
kernel metadata are dropped and long text outputs are cut.

Usage: ``python docs/scripts/execute_notebooks.py [--full] [notebooks/01_quickstart.py ...]`` (``make notebooks``)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
TINY_ENV = "CROSSRES_NOTEBOOK_TINY"
MAX_TEXT_LINES = 60  # longer stream / text outputs are cut to their first and last lines


def sources(directory: Path = NOTEBOOKS) -> list[Path]:
    """The notebook sources: ``NN_name.py`` in jupytext percent format."""
    return sorted(p for p in directory.glob("[0-9][0-9]_*.py"))


def execute(source: Path, cwd: Path, tiny: bool = True, timeout: int = 900) -> Any:
    """Run one notebook source in a fresh kernel with ``cwd`` as its working and temporary directory.

    The notebooks put what they write under ``tempfile.mkdtemp()``; ``TMPDIR=cwd`` keeps it inside ``cwd``.

    Returns:
        The executed notebook.

    Raises:
        nbclient.exceptions.CellExecutionError: if a cell fails (the message shows the cell and its traceback).
    """
    import jupytext
    from nbclient import NotebookClient

    notebook = jupytext.read(source)
    overrides = {TINY_ENV: "1" if tiny else "0", "TMPDIR": str(cwd)}
    previous = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)  # the kernel inherits this process's environment
    try:
        NotebookClient(
            notebook,
            timeout=timeout,
            kernel_name="python3",
            record_timing=False,
            resources={"metadata": {"path": str(cwd)}},
        ).execute()
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return notebook


def _cut(text: str) -> str:
    lines = text.splitlines(keepends=True)
    if len(lines) <= MAX_TEXT_LINES:
        return text
    head, tail = lines[: MAX_TEXT_LINES // 2], lines[-MAX_TEXT_LINES // 4 :]
    return "".join(head) + f"... ({len(lines) - len(head) - len(tail)} lines cut)\n" + "".join(tail)


def slim(notebook: Any) -> Any:
    """Drop volatile metadata and cut long text outputs, so the executed notebook stays small and diffs quietly."""
    notebook.metadata.pop("widgets", None)
    notebook.metadata.get("language_info", {}).pop("version", None)
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                output["text"] = _cut(output["text"])
            for key in ("text/plain", "text/markdown"):
                if key in output.get("data", {}):
                    output["data"][key] = _cut(output["data"][key])
    return notebook


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="sources to run (default: notebooks/NN_*.py)")
    parser.add_argument("--full", action="store_true", help=f"run with the full settings ({TINY_ENV}=0)")
    args = parser.parse_args(argv)
    import jupytext

    total = 0
    for source in args.notebooks or sources():
        tic = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="crossres_notebook_") as tmp:
            notebook = slim(execute(source.resolve(), Path(tmp), tiny=not args.full))
        target = source.resolve().with_suffix(".ipynb")
        jupytext.write(notebook, target, fmt="ipynb")
        size = target.stat().st_size
        total += size
        print(f"{target.relative_to(REPO)}: {size / 1024:.0f} KiB, {time.perf_counter() - tic:.0f} s", flush=True)
    print(f"{total / 1024:.0f} KiB in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
