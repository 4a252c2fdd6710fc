"""``benchmarks/compare_methods.py`` on tiny data: runs through the real CLI, one table, one plot, no overwrite."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import REPO


def _load() -> ModuleType:
    path = REPO / "benchmarks" / "compare_methods.py"
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))  # it imports its sibling ``common``, as when run as a script
    spec = importlib.util.spec_from_file_location("compare_methods", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


compare = _load()

# 112 px faces (the Knoche protocols reach 112 px), 8 training images, 20 pairs, one batch of one epoch.
TINY = ["--budget", "1", "--identities", "4", "--images-per-identity", "2", "--pairs", "20"]
CPU = [
    "--",
    "--data.batch_size=8",
    "--data.eval_batch_size=40",
    "--data.num_workers=0",
    "--trainer.accelerator=cpu",
]


def _argv(tmp_path: Path, *extra: str) -> list[str]:
    runs, out = tmp_path / "runs", tmp_path / "out"
    return ["--runs-dir", str(runs), "--out", str(out), *TINY, *extra, *CPU]


def test_methods_by_key_alias_and_class_name() -> None:
    assert [m.key for m in compare.resolve_methods(None)] == list(compare.METHODS)
    chosen = compare.resolve_methods(["RIM", "batch_cr", "baseline"])
    assert [m.key for m in chosen] == ["baseline", "batch_cr_m", "rim"]  # the table's order
    with pytest.raises(SystemExit, match="unknown method"):
        compare.resolve_methods(["nope"])
    assert compare.stage_names(compare.METHODS["dcr"]) == ["dcr_stage1", "dcr"]


def test_milestones_scale_with_the_budget() -> None:
    config = {"trainer": {"max_epochs": 10}, "model": {"init_args": {"milestones": [6, 9]}}}
    assert compare.scaled_milestones(config, 20) == [12, 18]
    assert compare.scaled_milestones(config, 5) == [3, 4]
    assert compare.scaled_milestones(config, 1) == []
    assert compare.scaled_milestones({"trainer": {"max_epochs": 6}, "model": {"init_args": {}}}, 3) is None


def test_every_method_config_exists() -> None:
    for method in compare.METHODS.values():
        for config in method.configs:
            assert (REPO / "experiments" / config).is_file(), config


@pytest.mark.slow  # about a minute on 2 idle CPU cores (the Knoche protocols need 112 px faces)
def test_two_methods_one_epoch_then_refuse_then_reuse(tmp_path: Path) -> None:
    # GuidedCNN needs the HR recogniser: the comparison's Baseline run is added and trained first.
    report = compare.main(_argv(tmp_path, "--methods", "guided_cnn"))
    runs, out = tmp_path / "runs", tmp_path / "out"
    text = report.read_text()
    for expected in ("| Baseline | baseline |", "| GuidedCNN | guided_cnn |", "HR-LR 7px", "HR-LR 112px"):
        assert expected in text
    for protocol in compare.KNOCHE:
        assert f"HR-LR {protocol}" in text
    assert (out / "accuracy_vs_resolution.png").stat().st_size > 0
    assert str(runs / "baseline" / "checkpoints" / "last.ckpt") in (runs / "guided_cnn" / "config.yaml").read_text()
    ckpt = runs / "guided_cnn" / "checkpoints" / "last.ckpt"
    stamp = ckpt.stat().st_mtime_ns

    with pytest.raises(SystemExit, match="--reuse"):  # never over an existing run
        compare.main(_argv(tmp_path, "--methods", "guided_cnn"))
    assert ckpt.stat().st_mtime_ns == stamp

    compare.main(_argv(tmp_path, "--methods", "guided_cnn", "--reuse"))  # nothing to train or test again
    assert ckpt.stat().st_mtime_ns == stamp
    with pytest.raises(SystemExit, match="other settings"):  # runs of another budget are not comparable
        compare.main(_argv(tmp_path, "--methods", "guided_cnn", "--reuse", "--budget", "2"))
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings) == {"baseline", "guided_cnn"} and "fit_guided_cnn" in timings["guided_cnn"]


@pytest.mark.slow  # several minutes on CPU: RIM and IPUNet at 112 px
def test_every_method_one_epoch(tmp_path: Path) -> None:
    report = compare.main(_argv(tmp_path))
    text = report.read_text()
    for method in compare.METHODS.values():
        assert f"| {method.label} |" in text
