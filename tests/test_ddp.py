"""Two CPU processes (gloo) score exactly as one: the verification metric is DDP-correct, for the plain, a siamese
and the minimax method, with Lightning's DDP and crossres' rank-aware training samplers."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, TINY_DATA

MODEL = ["--model=Baseline", "--model.backbone_kwargs={width: 8}", "--model.embedding_size=32"]
TRAINER = [
    "--trainer.accelerator=cpu",
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.num_sanity_val_steps=0",
    "--trainer.callbacks=null",
]


def _rows(path: Path) -> dict[tuple[str, str, str], float]:
    with path.open() as f:
        return {(r["pair_set"], r["comparison"], r["protocol"]): float(r["acc"]) for r in csv.DictReader(f)}


def _run(*args: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "crossres", *args], capture_output=True, text=True, cwd=REPO, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]


def _ddp_equals_single(tmp_path: Path, model: list[str], strategy: str = "ddp") -> None:
    """Fit on 2 gloo processes, validate the checkpoint on 1: every accuracy equal."""
    # 41 pairs over 2 ranks: the DistributedSampler pads one duplicate, which the metric must drop.
    data = [a for a in TINY_DATA if not a.startswith("--data.synthetic.pairs")] + ["--data.synthetic.pairs=41"]
    common = [f"--runs_dir={tmp_path}", "--name=ddp", *TRAINER, *data, *model]
    _run("fit", *common, f"--trainer.strategy={strategy}", "--trainer.devices=2")
    run = tmp_path / "ddp"
    ddp = _rows(run / "results_val.csv")
    _run("validate", *common, "--trainer.devices=1", f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}")
    single = _rows(next(run.glob("validate-*/results_val.csv")))
    assert ddp.keys() == single.keys() and len(ddp) == 5
    for key, value in single.items():
        assert abs(ddp[key] - value) < 1e-9, (key, ddp[key], value)


def test_ddp_metric_equals_single_process(tmp_path: Path) -> None:
    _ddp_equals_single(tmp_path, MODEL)


@pytest.mark.slow
def test_ddp_siamese_identity_balanced_equals_single_process(tmp_path: Path) -> None:
    # SiameseCR (shared-weight HR/LR branches) with P x K batches: 4 identities x 2 images per rank.
    model = [
        "--model=SiameseCR", "--model.backbone_kwargs={width: 8}", "--model.embedding_size=32",
        "--data.degradation.lr_policy=fixed", "--data.degradation.lr_sizes=[8]",
        "--data.train_sampler=identity_balanced", "--data.images_per_class=2",
    ]  # fmt: skip
    _ddp_equals_single(tmp_path, model)


@pytest.mark.slow
def test_ddp_minimax_rim_equals_single_process(tmp_path: Path) -> None:
    # RIM: four players stepped by hand (manual optimization), with experiments/rim.yaml's DDP strategy.
    teacher = tmp_path / "teacher"
    _run("fit", f"--runs_dir={teacher}", "--name=hr", *TRAINER, *TINY_DATA, *MODEL, "--trainer.devices=1")
    model = [
        "--model=crossres.methods.rim.RIM", "--model.teacher_backbone=iresnet18",
        "--model.teacher_backbone_kwargs={width: 8}", "--model.teacher_embedding_size=32",
        f"--model.teacher_weights={teacher / 'hr' / 'checkpoints' / 'last.ckpt'}",
        "--model.student_backbone_kwargs={width: 4}", "--model.assistant_backbone_kwargs={width: 4}",
        "--model.fhn_channels=8", "--model.fhn_feature_channels=4", "--model.fhn_blocks=1", "--model.domain_dim=16",
        "--model.quality_lr_sizes=[8]", "--data.degradation.lr_policy=fixed", "--data.degradation.lr_sizes=[4]",
    ]  # fmt: skip
    _ddp_equals_single(tmp_path, model, strategy="ddp_find_unused_parameters_true")
