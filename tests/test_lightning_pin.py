"""The Lightning internals crossres relies on exist in the installed Lightning, within pyproject's pinned range."""

from __future__ import annotations

import re

import lightning
from lightning.fabric.loggers.csv_logs import _ExperimentWriter
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from packaging.version import Version

from .conftest import REPO

# What ResumableCheckpoint (crossres/checkpoint_io.py), RunCSVLogger (crossres/loggers.py) and CrossResCLI use of
# Lightning's private API. If one disappears, adapt those classes to the new Lightning, then move pyproject's pin.
PRIVATE = {
    ModelCheckpoint: ["_save_last_checkpoint", "_monitor_candidates", "_should_save_on_train_epoch_end",
                      "_should_skip_saving_checkpoint"],
    _ExperimentWriter: ["_check_log_dir_exists", "_record_new_keys", "_rewrite_with_new_header"],
    LightningCLI: ["_parse_ckpt_path"],
}  # fmt: skip


def _pinned_range() -> tuple[Version, Version]:
    pin = re.search(r'"lightning>=([\d.]+),<([\d.]+)"', (REPO / "pyproject.toml").read_text())
    assert pin, "pyproject.toml must pin lightning as >=X,<Y (crossres uses private Lightning API)"
    return Version(pin[1]), Version(pin[2])


def test_installed_lightning_is_in_the_pinned_range() -> None:
    low, high = _pinned_range()
    installed = Version(lightning.__version__)
    assert low <= installed < high, f"lightning {installed} is outside pyproject's pin [{low}, {high})"


def test_private_lightning_api_that_crossres_uses_still_exists() -> None:
    missing = [f"{cls.__name__}.{name}" for cls, names in PRIVATE.items() for name in names if not hasattr(cls, name)]
    assert not missing, (
        f"lightning {lightning.__version__} lacks {missing}: crossres.checkpoint_io.ResumableCheckpoint / "
        "crossres.loggers.RunCSVLogger / crossres.cli.CrossResCLI must be adapted before pyproject's pin moves"
    )
    assert hasattr(ModelCheckpoint(), "_last_global_step_saved"), "ModelCheckpoint._last_global_step_saved is gone"
