"""Two CPU processes (gloo) score exactly as one: the verification metric is DDP-correct."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

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


def test_ddp_metric_equals_single_process(tmp_path: Path) -> None:
    # 41 pairs over 2 ranks: the DistributedSampler pads one duplicate, which the metric must drop.
    data = [a for a in TINY_DATA if not a.startswith("--data.synthetic_pairs")] + ["--data.synthetic_pairs=41"]
    common = [f"--runs_dir={tmp_path}", "--name=ddp", *TRAINER, *data, *MODEL]
    _run("fit", *common, "--trainer.strategy=ddp", "--trainer.devices=2")
    run = tmp_path / "ddp"
    ddp = _rows(run / "results_val.csv")
    _run("validate", *common, "--trainer.devices=1", f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}")
    single = _rows(next(run.glob("validate-*/results_val.csv")))
    assert ddp.keys() == single.keys() and len(ddp) == 5
    for key, value in single.items():
        assert abs(ddp[key] - value) < 1e-9, (key, ddp[key], value)
