from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(2)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# A run small enough for a 2-core CPU: 32 px faces, a width-8 iresnet18, two training batches.
TINY_DATA = [
    "--data.image_size=[32, 32]",
    "--data.synthetic.num_identities=6",
    "--data.synthetic.images_per_identity=4",
    "--data.synthetic.pairs=40",
    "--data.protocols=[4, 8]",
    "--data.degradation.lr_sizes=[4, 8]",
    "--data.batch_size=8",
    "--data.eval_batch_size=16",
    "--data.num_workers=0",
]
TINY_TRAINER = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.accelerator=cpu",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.num_sanity_val_steps=0",
    "--trainer.logger=null",
    "--trainer.callbacks=null",
]
#: A tiny Baseline, for tests of the command line rather than of a method.
TINY_MODEL = [
    "--model=Baseline",
    "--model.backbone=iresnet18",
    "--model.backbone_kwargs={width: 8}",
    "--model.embedding_size=32",
    "--model.lr=0.05",
]

#: A tiny RIM's networks (teacher, student, assistant, FHN, domain critic); tests add the teacher's embedding size.
TINY_RIM: dict = {
    "teacher_backbone": "iresnet18",
    "teacher_backbone_kwargs": {"width": 8},
    "student_backbone_kwargs": {"width": 4},
    "assistant_backbone_kwargs": {"width": 4},
    "fhn_channels": 8,
    "fhn_feature_channels": 4,
    "fhn_blocks": 1,
    "domain_dim": 16,
}


def flat_data(data: dict) -> dict:
    """A grouped ``data`` config section spelled flat (``degradation.lr_sizes`` as ``lr_sizes``)."""
    from crossres.data.options import GROUPED_KEYS

    flat = {k: v for k, v in data.items() if k not in ("synthetic", "degradation", "augmentation")}
    for key, dotted in GROUPED_KEYS.items():
        group, field = dotted.split(".")
        if field in (data.get(group) or {}):
            flat[key] = data[group][field]
    return flat


@pytest.fixture
def tiny_args(tmp_path: Path) -> list[str]:
    return [f"--runs_dir={tmp_path / 'runs'}", *TINY_TRAINER, *TINY_DATA]


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is absent")
    return SHARED
