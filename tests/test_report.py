"""Run reports from a tiny real run: fit -> test through the CLI, then tables, figures, CSV, wandb, comparisons."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from crossres.cli import main
from crossres.commands import run
from crossres.data.protocols import build_protocols
from crossres.metrics.verification import verification_roc
from crossres.report.plots import (
    accuracy_vs_resolution,
    distance_distributions,
    load_scores,
    protocol_height,
    sort_protocols,
)
from crossres.report.run_report import build_report, compare_runs, find_results_dir, knoche_table, report_sizes

from .conftest import REPO, TINY_DATA, TINY_MODEL, TINY_TRAINER, flat_data

PROTOCOLS = [4, 8, 12, 16, 24, 32]
FIGURES = ("accuracy_vs_resolution.png", "distance_distributions.png", "roc.png", "example_pairs.png")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real run shared by every test here: fit, then test at six LR sizes of 32 px faces."""
    runs = tmp_path_factory.mktemp("report") / "runs"
    data = [a for a in TINY_DATA if not a.startswith("--data.protocols")]
    args = [f"--runs_dir={runs}", *TINY_TRAINER, *data, f"--data.protocols={PROTOCOLS}", *TINY_MODEL, "--name=tiny"]
    main(["fit", *args, "--trainer.limit_val_batches=0"])  # the report reads the test split only
    main(["test", *args, f"--ckpt_path={runs / 'tiny' / 'checkpoints' / 'last.ckpt'}"])
    return runs / "tiny"


def _copy_run(run_dir: Path, destination: Path) -> Path:
    """A copy of the run's test results (no checkpoints, no report)."""
    results = find_results_dir(run_dir)
    target = destination / results.name
    shutil.copytree(results, target, ignore=shutil.ignore_patterns("report", "wandb"))
    return destination


def _image(path: Path) -> np.ndarray:
    from matplotlib.image import imread

    return imread(path)


def test_build_report_writes_table_figures_and_csv(tiny_run: Path) -> None:
    paths = build_report(tiny_run)
    results = find_results_dir(tiny_run)
    assert results.parent == tiny_run and results.name.startswith("test-")
    report = results / "report"
    assert paths[0] == report / "report.md"
    assert {p.name for p in paths} == {"report.md", "table_test.csv", *FIGURES}
    for name in FIGURES:
        picture = _image(report / name)
        assert picture.shape[0] > 300 and picture.shape[1] > 600, name
        assert picture[..., :3].std() > 0.05, f"{name} is blank"

    text = (report / "report.md").read_text()
    assert text.startswith("# Baseline: test report")
    assert "| pair set | LR size | HR-HR acc % | LR-LR acc % | HR-LR acc % |" in text
    for protocol in PROTOCOLS:
        assert f"| synthetic | {protocol}px |" in text
    for name in FIGURES:
        assert f"]({name})" in text
    assert "Knoche et al. protocols" not in text  # none was evaluated

    rows = json.loads((results / "results_test.json").read_text())
    by_key = {(r["comparison"], r["protocol"]): r for r in rows}
    with (report / "table_test.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [line["protocol"] for line in table] == [f"{p}px" for p in PROTOCOLS]
    for line in table:
        assert float(line["hr_lr_acc"]) == pytest.approx(by_key[("HR-LR", line["protocol"])]["acc"], abs=1e-6)
        assert float(line["lr_lr_acc"]) == pytest.approx(by_key[("LR-LR", line["protocol"])]["acc"], abs=1e-6)
        assert float(line["hr_hr_acc"]) == pytest.approx(by_key[("HR-HR", "")]["acc"], abs=1e-6)


def test_report_reads_a_flat_config(tiny_run: Path, tmp_path: Path) -> None:
    copy = _copy_run(tiny_run, tmp_path / "flat")
    results = find_results_dir(copy)
    config = yaml.safe_load((results / "config.yaml").read_text())
    config["data"] = flat_data(config["data"]) | {"backend": "kornia"}
    (results / "config.yaml").write_text(yaml.safe_dump(config))
    paths = build_report(copy)
    assert "example_pairs.png" in {p.name for p in paths}


def test_report_refuses_to_overwrite(tiny_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = find_results_dir(tiny_run) / "report"
    if not report.exists():
        build_report(tiny_run, examples=False)
    marker = report / "report.md"
    before = marker.stat().st_mtime_ns
    with pytest.raises(FileExistsError, match=str(report)):
        build_report(tiny_run)
    assert run(["report", str(tiny_run)]) == 2
    assert str(report) in capsys.readouterr().err
    assert marker.stat().st_mtime_ns == before
    assert run(["report", str(tiny_run), "--overwrite", "--no-examples"]) == 0
    assert "report.md" in capsys.readouterr().out
    assert not (report / "example_pairs.png").exists()  # replaced, not merged


def test_missing_results_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="results_test.json"):
        build_report(tmp_path / "empty")
    assert run(["report", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_compare_runs_two_methods(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = _copy_run(tiny_run, tmp_path / "other")
    results = find_results_dir(other)
    config = yaml.safe_load((results / "config.yaml").read_text())
    config["model"]["class_path"] = "crossres.methods.BatchCR"
    (results / "config.yaml").write_text(yaml.safe_dump(config))
    rows = json.loads((results / "results_test.json").read_text())
    for row in rows:
        row["acc"] = 0.99 if row["protocol"] == "4px" else row["acc"] / 2
    (results / "results_test.json").write_text(json.dumps(rows))

    out = tmp_path / "compare.md"
    text = compare_runs([tiny_run, other], out)
    assert out.read_text() == text
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    header, first, second = lines[0], lines[1], lines[2]
    assert header.startswith("| method | run | pair set | HR-HR | LR-LR 4px | HR-LR 4px | LR-LR 8px |")
    assert header.count("px") == 2 * len(PROTOCOLS)
    assert first.startswith("| Baseline | tiny | synthetic |") and second.startswith("| BatchCR | other | synthetic |")
    # 4 px: the second run is best (bold); elsewhere the first.
    cells_first, cells_second = first.split(" | ")[3:], second.split(" | ")[3:]
    assert cells_second[1] == "**99.00**" and cells_second[2] == "**99.00**"
    assert cells_first[0].startswith("**") and cells_first[3].startswith("**")
    with pytest.raises(FileExistsError, match="compare.md"):
        compare_runs([tiny_run, other], out)
    assert run(["report", str(tiny_run), str(other), "--compare", str(out)]) == 2  # compare file exists
    assert "--compare" in capsys.readouterr().err


def test_knoche_table_and_wandb_offline(tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = _copy_run(tiny_run, tmp_path / "knoche")
    results = find_results_dir(copy)
    rows = json.loads((results / "results_test.json").read_text())
    extra = []
    for name, acc in (("low_res_focus", 0.61), ("avg_sizes", 0.83), ("mid_res_focus", 0.72)):
        for comparison in ("HR-LR", "LR-LR"):
            template = next(r for r in rows if r["comparison"] == comparison and r["protocol"] == "8px")
            extra.append(template | {"protocol": name, "acc": acc})
    (results / "results_test.json").write_text(json.dumps(rows + extra))
    monkeypatch.setenv("WANDB_MODE", "offline")
    import wandb

    wandb.finish()  # no run left open by an earlier test: the report must start its own
    build_report(copy, examples=False, wandb=True)

    text = (results / "report" / "report.md").read_text()
    assert (
        "| method | pair set | HR-HR (all HR) | avg_sizes HR-LR | mid_res_focus HR-LR | low_res_focus HR-LR |" in text
    )
    hr = next(r for r in rows if r["comparison"] == "HR-HR")["acc"]
    assert f"| Baseline | synthetic | {100 * hr:.2f} | 83.00 | 72.00 | 61.00 |" in text
    assert knoche_table(rows, "Baseline") == ""
    logged = list(results.glob("wandb/offline-run-*/files/media/images/report/*.png"))
    assert {p.name.split("_0_")[0] for p in logged} == {"accuracy_vs_resolution", "distance_distributions", "roc"}


def test_scores_file_reads_back_and_feeds_the_roc(tiny_run: Path) -> None:
    table = load_scores(find_results_dir(tiny_run) / "scores_test.npz")
    assert ("synthetic", "hr_hr", "") in table
    for protocol in PROTOCOLS:
        for comparison in ("lr_lr", "hr_lr", "lr_hr"):
            scores, issame = table[("synthetic", comparison, f"{protocol}px")]
            assert scores.shape == issame.shape == (40,) and issame.dtype == bool
    # Rows were re-ordered by pair_id; the ROC end points are (1, 1) and (0, 0).
    fpr, tpr, _ = verification_roc(torch.from_numpy(table[("synthetic", "hr_hr", "")][0]), torch.from_numpy(issame))
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (1.0, 1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="comparison"):
        load_scores({"synthetic__xx__4px__scores": np.zeros(3)})


def test_figures_refuse_what_they_cannot_draw(tiny_run: Path, tmp_path: Path) -> None:
    rows = [{"pair_set": "lfw", "comparison": "HR-LR", "protocol": "low_res_focus", "acc": 0.7, "acc_std": 0.1}]
    with pytest.raises(ValueError, match="fixed-size protocols"):
        accuracy_vs_resolution(rows, tmp_path / "a.png")
    scores = find_results_dir(tiny_run) / "scores_test.npz"
    with pytest.raises(ValueError, match="none of the sizes"):
        distance_distributions(scores, tmp_path / "d.png", sizes=[5, 7], hr_size=112)
    # Without hr_size, the largest requested size above every protocol is the HR column.
    assert distance_distributions(scores, tmp_path / "d.png", sizes=[4, 112]).is_file()


def test_protocol_helpers() -> None:
    assert protocol_height("14px") == 14 and protocol_height("16x12px") == 16 and protocol_height("avg_sizes") is None
    assert sort_protocols(["low_res_focus", "16px", "avg_sizes", "7px", "16x12px", "custom"]) == [
        "7px",
        "16px",
        "16x12px",
        "avg_sizes",
        "low_res_focus",
        "custom",
    ]
    sweep = [f"{s}px" for s in range(5, 113)]
    assert report_sizes(sweep, hr_size=112) == [7, 14, 28, 56]
    assert report_sizes([f"{s}px" for s in PROTOCOLS], hr_size=32) == [4, 8, 16, 24]


def test_eval_configs() -> None:
    sweep = yaml.safe_load((REPO / "experiments" / "eval" / "sweep.yaml").read_text())
    assert sweep == {"data": {"protocols": list(range(5, 113))}}
    knoche = yaml.safe_load((REPO / "experiments" / "eval" / "knoche.yaml").read_text())
    assert knoche["data"]["protocols"] == ["low_res_focus", "mid_res_focus", "high_res_focus", "avg_sizes"]
    assert "protocol_dir: ../shared/protocols/btm-stm" in (REPO / "experiments" / "eval" / "knoche.yaml").read_text()
    built = build_protocols(knoche["data"]["protocols"] + sweep["data"]["protocols"], num_pairs=20)
    assert len(built) == 4 + 108


def test_eval_configs_compose_with_a_method(capsys: pytest.CaptureFixture[str]) -> None:
    base = str(REPO / "experiments" / "baseline.yaml")
    for override, expected in (("sweep.yaml", list(range(5, 113))), ("knoche.yaml", ["low_res_focus"])):
        with pytest.raises(SystemExit) as exit_:
            main(["test", "-c", base, "-c", str(REPO / "experiments" / "eval" / override), "--print_config"])
        assert exit_.value.code in (0, None)
        protocols = yaml.safe_load(capsys.readouterr().out)["data"]["protocols"]
        assert protocols[: len(expected)] == expected


def _rows() -> list[dict]:
    rows = [{"pair_set": "lfw", "comparison": "HR-HR", "protocol": "", "acc": 0.9, "acc_std": 0.02}]
    for size in (8, 16):
        for comparison in ("HR-LR", "LR-LR"):
            rows.append(
                {"pair_set": "lfw", "comparison": comparison, "protocol": f"{size}px", "acc": 0.6 + size / 100,
                 "acc_std": 0.05, "tar_at_far": 0.3, "eer": 0.3}
            )  # fmt: skip
    return rows


def test_tar_column_names_its_far() -> None:
    from crossres.report.tables import results_table

    assert "TAR@FAR=0.001 %" in results_table(_rows())
    assert "TAR@FAR=0.01 %" in results_table(_rows(), far=1e-2)


def test_accuracy_plot_has_fold_error_bars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.axes import Axes

    drawn: list[list[float]] = []
    original = Axes.errorbar

    def record(self: Axes, x: list[float], y: list[float], yerr: list[float], **kwargs: object) -> object:
        drawn.append(list(yerr))
        return original(self, x, y, yerr=yerr, **kwargs)

    monkeypatch.setattr(Axes, "errorbar", record)
    accuracy_vs_resolution(_rows(), tmp_path / "acc.png")
    assert drawn == [[5.0, 5.0], [5.0, 5.0]]  # HR-LR and LR-LR, std in %


def test_report_captions_name_papers_and_far(tmp_path: Path) -> None:
    results = tmp_path / "runs" / "run" / "test-1"
    results.mkdir(parents=True)
    (results / "results_test.json").write_text(json.dumps(_rows()))
    (results / "config.yaml").write_text(
        yaml.safe_dump({"model": {"class_path": "x.Baseline", "init_args": {"far": 1e-4}}})
    )
    build_report(results.parent, examples=False)
    text = (results / "report" / "report.md").read_text()
    assert "Knoche et al. 2021, Fig. 5" in text and "004 Fig" not in text
    assert "TAR@FAR=0.0001 %" in text and "FAR = 0.0001" in text


def test_reference_table_one_line_per_comparison_and_size() -> None:
    from crossres.report.tables import reference_table

    def row(comparison: str, protocol: str, acc: float) -> dict:
        return {"pair_set": "s", "comparison": comparison, "protocol": protocol, "acc": acc, "acc_std": 0.01}

    keys = [("HR-HR", ""), ("HR-LR", "8px"), ("LR-LR", "8px"), ("HR-LR", "16px"), ("LR-LR", "16px")]
    table = reference_table([row(c, p, 0.9) for c, p in keys], [row(c, p, 0.8) for c, p in keys], "RIM")
    lines = table.splitlines()[2:]
    assert len(lines) == len(keys) == len(set(lines))
    assert lines[1] == "| s | HR-LR | 8px | 90.00 ± 1.00 | 80.00 ± 1.00 | **+10.00** |"
