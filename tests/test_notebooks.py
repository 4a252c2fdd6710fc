"""The notebooks: every jupytext source runs on tiny settings; the executed ``.ipynb`` match their sources."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import REPO, SHARED

pytest.importorskip("jupytext", reason="notebook tests need the dev extra (jupytext, nbclient, ipykernel)")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = REPO / "notebooks"
EXPECTED = ["01_quickstart", "02_degradation", "03_evaluate_checkpoint", "04_hallucination"]
MAX_BYTES = 2 * 1024 * 1024  # every executed notebook together


def _runner() -> ModuleType:
    path = REPO / "docs" / "scripts" / "execute_notebooks.py"
    spec = importlib.util.spec_from_file_location("execute_notebooks", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RUNNER = _runner()
SOURCES = RUNNER.sources(NOTEBOOKS)


def test_every_notebook_has_a_source() -> None:
    assert [p.stem for p in SOURCES] == EXPECTED


# Each notebook starts its own kernel (torch + Lightning imports) and trains or evaluates a little: together about
# two minutes of two CPU cores, so all but the one that trains nothing are `slow` (`make test-all` runs them).
FAST = {"02_degradation"}
EXECUTE = [pytest.param(p, id=p.stem, marks=() if p.stem in FAST else pytest.mark.slow) for p in SOURCES]


@pytest.mark.parametrize("source", EXECUTE)
def test_notebook_executes_on_tiny_settings(source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    btm_stm = SHARED / "protocols" / "btm-stm"
    if btm_stm.is_dir():  # 03 then also compares the published LFW sizes with a seeded draw
        monkeypatch.setenv("CROSSRES_PROTOCOL_DIR", str(btm_stm))
    before = sorted(p.name for p in NOTEBOOKS.iterdir())
    notebook = RUNNER.execute(source, tmp_path, tiny=True, timeout=600)  # raises CellExecutionError on a failure
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count for cell in code)
    assert sorted(p.name for p in NOTEBOOKS.iterdir()) == before, "a notebook wrote into notebooks/"


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_executed_notebook_matches_its_source(source: Path) -> None:
    import jupytext

    executed_path = source.with_suffix(".ipynb")
    assert executed_path.is_file(), f"{executed_path.name} is missing: run `make notebooks`"
    executed, plain = jupytext.read(executed_path), jupytext.read(source)
    assert [(c.cell_type, c.source) for c in executed.cells] == [(c.cell_type, c.source) for c in plain.cells], (
        f"{executed_path.name} is older than {source.name}: run `make notebooks`"
    )
    code = [cell for cell in executed.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code), f"{executed_path.name} is not executed: run `make notebooks`"
    errors = [o for cell in code for o in cell.outputs if o.get("output_type") == "error"]
    assert not errors, f"{executed_path.name} holds an error output"


def test_executed_notebooks_are_small() -> None:
    total = sum(p.stat().st_size for p in NOTEBOOKS.glob("*.ipynb"))
    assert 0 < total < MAX_BYTES, f"the executed notebooks take {total / 1024:.0f} KiB (limit {MAX_BYTES // 1024})"
