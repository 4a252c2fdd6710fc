"""The reference rows: every method's evaluation scores the HR network it starts from beside it; `make run`."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import torch
import yaml

from crossres.cli import main
from crossres.report.run_report import build_report

from .conftest import REPO, TINY_DATA, TINY_TRAINER
from .test_rim import RIM_ARGS


@pytest.fixture(scope="module")
def rim_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    """A tiny teacher and a tiny RIM on it, through the CLI; the RIM's CLI object and run directory."""
    torch.set_num_threads(1)
    runs = tmp_path_factory.mktemp("runs")
    common = [f"--runs_dir={runs}", *TINY_TRAINER, *TINY_DATA]
    teacher = ["--model=Baseline", "--model.backbone=iresnet18", "--model.backbone_kwargs={width: 8}"]
    main(["fit", *common, *teacher, "--model.embedding_size=32", "--name=hr"])
    weights = f"--model.teacher_weights={runs / 'hr' / 'checkpoints' / 'last.ckpt'}"
    cli = main(["fit", *common, *RIM_ARGS, weights, "--name=rim"])
    return cli, runs / "rim"


def test_reference_rows_beside_the_method(rim_run: tuple[object, Path], capsys: pytest.CaptureFixture[str]) -> None:
    cli, _ = rim_run
    model = cli.model  # type: ignore[attr-defined]
    rows, reference = model.eval_results["val"], model.reference_results["val"]
    assert {r["model"] for r in rows} == {"method"} and {r["model"] for r in reference} == {"reference"}
    key = ("pair_set", "comparison", "protocol")
    assert sorted(tuple(r[k] for k in key) for r in rows) == sorted(tuple(r[k] for k in key) for r in reference)
    # RIM's gallery side is its teacher: the two HR-HR rows are one measurement.
    hr_hr = [r["acc"] for r in (*rows, *reference) if r["comparison"] == "HR-HR"]
    assert hr_hr[0] == hr_hr[1]
    # The reference is RIM's Table 1 (a), the teacher on the bicubic probe: eval_mode "teacher" scores the same.
    model.eval_mode = "teacher"
    cli.trainer.validate(model, datamodule=cli.datamodule, verbose=False)  # type: ignore[attr-defined]
    teacher = {tuple(r[k] for k in key): r["acc"] for r in model.eval_results["val"]}
    assert teacher == {tuple(r[k] for k in key): r["acc"] for r in reference}
    assert "val_reference_acc_synthetic_hr_lr_8px" in cli.trainer.callback_metrics  # type: ignore[attr-defined]


def test_reference_in_the_files_and_the_report(rim_run: tuple[object, Path]) -> None:
    _, run = rim_run
    assert json.loads((run / "reference_val.json").read_text())[0]["model"] == "reference"
    assert [r["protocol"] for r in json.loads((run / "quality_val.json").read_text())] == ["8px"]
    assert "| RIM acc % | teacher acc % | RIM − teacher (points) |" in (run / "results_val.md").read_text()
    report = build_report(run, split="val", overwrite=True, examples=False)[0].read_text()
    assert "RIM − teacher (points)" in report and re.search(r"\| synthetic \| HR-LR \| 8px \|", report)
    assert "PSNR dB, SR" in report
    lines = [line for line in report.splitlines() if line.startswith("| synthetic |") and "RIM" not in line]
    side_by_side = [line for line in lines if line.count("|") == 7]
    assert len(side_by_side) == len(set(side_by_side)) > 0  # one line per comparison and LR size, none twice


def _run_recipe() -> list[list[str]]:
    """The commands of the Makefile's ``run`` target, split into arguments (make's ``$$`` as ``$``)."""
    text = (REPO / "Makefile").read_text().replace("\\\n", " ")
    recipe = text.split("\nrun:", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    return [shlex.split(part.replace("$$", "$")) for line in recipe for part in line.strip().split(" && ")]


def test_make_run_uses_the_checked_in_configs(capsys: pytest.CaptureFixture[str]) -> None:
    fits = [c for c in _run_recipe() if c[:2] == ["$(BIN)/crossres", "fit"]]
    assert len(fits) == 2
    configs = [[c[i + 1] for i, a in enumerate(c) if a == "-c"] for c in fits]
    assert configs[1][0] == "experiments/rim.yaml", "RIM stays the headline"
    printed = []
    for layers in configs:
        with pytest.raises(SystemExit):
            main(["fit", *(a for layer in layers for a in ("-c", str(REPO / layer))), "--print_config"])
        printed.append(yaml.safe_load(capsys.readouterr().out))
        assert all((REPO / layer).is_file() for layer in layers)
    teacher, rim = printed
    name = fits[0][fits[0].index("--name") + 1]
    assert rim["model"]["init_args"]["teacher_weights"] == f"runs/{name}/checkpoints/last.ckpt"
    assert rim["data"]["image_size"] == teacher["data"]["image_size"]
    for arg in ("backbone", "backbone_kwargs", "embedding_size"):
        assert rim["model"]["init_args"][f"teacher_{arg}"] == teacher["model"]["init_args"][arg]
    probe = rim["data"]["degradation"]["lr_sizes"]
    assert len(probe) == 1 and f"{probe[0]}" in str(rim["data"]["protocols"]), "RIM is scored at its training size"


@pytest.mark.parametrize("method", ["IPUNet", "GuidedCNN", "Baseline"])
def test_reference_and_sr_quality_of_other_methods(method: str) -> None:
    import lightning.pytorch as pl

    from crossres.data.datamodule import FaceDataModule
    from crossres.data.options import DegradationOptions, SyntheticOptions
    from crossres.methods import Baseline, GuidedCNN, IPUNet

    net = {"backbone": "iresnet18", "backbone_kwargs": {"width": 8}, "embedding_size": 32}
    models = {
        "IPUNet": lambda: IPUNet(num_classes=6, image_size=(32, 32), sr_size=32, unet_depth=5, unet_width=4, **net),
        "GuidedCNN": lambda: GuidedCNN(num_classes=6, image_size=(32, 32), **net),
        "Baseline": lambda: Baseline(num_classes=6, image_size=(32, 32), **net),
    }
    model = models[method]()
    data = FaceDataModule(
        image_size=(32, 32),
        synthetic=SyntheticOptions(num_identities=6, pairs=20),
        protocols=[8],
        degradation=DegradationOptions(lr_sizes=[8]),
        num_workers=0,
    )
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(model, datamodule=data, verbose=False)
    reference = model.reference_results.get("val", [])
    assert len(reference) == (0 if method == "Baseline" else len(model.eval_results["val"]))
    quality = model.sr_quality.get("val", [])
    assert [r["protocol"] for r in quality] == (["8px"] if method == "IPUNet" else [])
    if method == "GuidedCNN":  # the guide embeds the gallery: one HR-HR measurement
        assert reference[0]["acc"] == model.eval_results["val"][0]["acc"]
