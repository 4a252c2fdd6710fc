"""Runs are never lost or overwritten; pretrained weights are evaluated from the command line."""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from crossres.cli import main

from .conftest import REPO, TINY_DATA, TINY_MODEL, TINY_TRAINER, flat_data


def _digests(run: Path) -> dict[str, str]:
    """Checksums of every file of a run, sub-folders of validate/test/predict excluded."""
    return {
        str(p.relative_to(run)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file() and not p.relative_to(run).parts[0].startswith(("test-", "validate-", "predict-"))
    }


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny Baseline run (runs/tiny), fitted once for this module; copy it before changing it."""
    runs = tmp_path_factory.mktemp("fitted") / "runs"
    main(["fit", f"--runs_dir={runs}", *TINY_TRAINER, *TINY_DATA, *TINY_MODEL, "--name=tiny"])
    return runs / "tiny"


def _copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "runs" / run.name
    shutil.copytree(run, copy)
    return copy


# ----------------------------------------------------------------------------- validate/test write elsewhere
@pytest.mark.parametrize("logger_class", ["crossres.loggers.RunCSVLogger", "lightning.pytorch.loggers.CSVLogger"])
def test_test_with_the_runs_saved_config_never_writes_into_the_run(
    fitted: Path, tmp_path: Path, logger_class: str
) -> None:
    run = _copy(fitted, tmp_path)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["trainer"]["logger"]["init_args"]["version"] == ""  # the saved config pins fit's folder
    config["trainer"]["logger"]["class_path"] = logger_class
    config["runs_dir"] = str(run.parent)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    before = _digests(run)
    main(["test", "-c", str(run / "config.yaml"), f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}"])
    main(["validate", "-c", str(run / "config.yaml"), f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}"])
    assert _digests(run) == before
    (tested,) = run.glob("test-*")
    assert {"results_test.csv", "metrics.csv", "config.yaml", "hparams.yaml"} <= {p.name for p in tested.iterdir()}
    assert len(list(run.glob("validate-*/results_val.csv"))) == 1


def test_a_flat_saved_config_names_the_grouped_keys(
    fitted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(fitted, tmp_path)
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["datamodule_hyper_parameters"]["degradation"]["lr_sizes"] == [4, 8]
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"] = flat_data(config["data"])
    assert config["data"]["lr_sizes"] == [4, 8] and "degradation" not in config["data"]
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as exit_info:
        main(["test", "-c", str(run / "config.yaml"), f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"crossres test: error: --config {run / 'config.yaml'}: data.")
    assert "data.num_identities is data.synthetic.num_identities" in err
    assert "data.lr_sizes is data.degradation.lr_sizes" in err and "data.hflip is data.augmentation.hflip" in err
    assert not list(run.glob("test-*"))


def test_test_without_a_logger_still_writes_its_own_folder(fitted: Path, tmp_path: Path) -> None:
    run = _copy(fitted, tmp_path)
    before = _digests(run)
    args = [f"--runs_dir={run.parent}", *TINY_TRAINER, *TINY_DATA, *TINY_MODEL, "--name=tiny"]
    main(["test", *args, "--trainer.logger=false", f"--trainer.default_root_dir={run}", "--ckpt_path=last"])
    assert _digests(run) == before
    assert len(list(run.glob("test-*/results_test.csv"))) == 1


def _bad_input(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run ``crossres`` in-process on bad input: exit status 2 and one message on stderr, which is returned."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    assert exit_info.value.code == 2
    return capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- resuming
def test_resume_last_without_last_ckpt_stops_and_touches_nothing(
    fitted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(fitted, tmp_path)
    (run / "checkpoints" / "last.ckpt").unlink()
    before = _digests(run)
    args = [f"--runs_dir={run.parent}", *TINY_TRAINER, *TINY_DATA, *TINY_MODEL]
    assert "nothing to resume" in _bad_input(capsys, "fit", *args, "--name=tiny", "--ckpt_path=last")
    assert _digests(run) == before
    assert "nothing to resume" in _bad_input(capsys, "fit", *args, "--name=new", "--ckpt_path=last")
    assert not (run.parent / "new").exists()


def test_fit_from_another_runs_checkpoint_refuses_an_existing_run(
    fitted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _copy(fitted, tmp_path)
    other = _copy(fitted, tmp_path / "other")
    before = _digests(run)
    args = [f"--runs_dir={run.parent}", *TINY_TRAINER, *TINY_DATA, *TINY_MODEL, "--name=tiny"]
    error = _bad_input(capsys, "fit", *args, f"--ckpt_path={other / 'checkpoints' / 'last.ckpt'}")
    assert "not one of its checkpoints" in error
    assert _digests(run) == before


def _metrics(run: Path) -> list[tuple[str, str, str]]:
    with (run / "metrics.csv").open() as f:
        return [(row["epoch"], row["step"], row.get("train_loss", "")) for row in csv.DictReader(f)]


def _crossres_fit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crossres", "fit", *args],
        capture_output=True, text=True, cwd=REPO, timeout=600, env=os.environ | {"PYTHONHASHSEED": "0"},
    )  # fmt: skip


def test_resume_after_sigkill_keeps_the_metrics_history_and_the_config(tmp_path: Path) -> None:
    base = [
        f"--runs_dir={tmp_path}", *TINY_TRAINER, *TINY_DATA, *TINY_MODEL, "--trainer.max_epochs=2",
        "--trainer.limit_train_batches=3", "--trainer.log_every_n_steps=1", "--checkpoint.last_every_n_batches=1",
        "--trainer.deterministic=true",
    ]  # fmt: skip
    base = [a for a in base if a != "--trainer.callbacks=null"]
    result = _crossres_fit(*base, "--name=full")
    assert result.returncode == 0, result.stderr[-3000:]
    killer = ["--trainer.callbacks+=tests.test_faults.KillAt", "--trainer.callbacks.batch=4"]
    result = _crossres_fit(*base, "--name=killed", *killer)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    config = (tmp_path / "killed" / "config.yaml").read_text()
    assert ("0", "2", "") in _metrics(tmp_path / "killed")  # the first epoch's validation row is on disk

    result = _crossres_fit(*base, "--name=killed", "--ckpt_path=last")
    assert result.returncode == 0, result.stderr[-3000:]
    full, resumed = _metrics(tmp_path / "full"), _metrics(tmp_path / "killed")
    assert [row[:2] for row in resumed] == [row[:2] for row in full]  # every step once, none lost
    assert (tmp_path / "killed" / "config.yaml").read_text() == config
    assert len(list((tmp_path / "killed").glob("config-fit-*.yaml"))) == 1


# ------------------------------------------------------------------------------------ checkpoint and weights
def test_checkpoint_of_another_method_is_an_error(
    fitted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [f"--runs_dir={tmp_path}", *TINY_TRAINER, *TINY_DATA, "--model=BatchCR", "--model.embedding_size=32"]
    error = _bad_input(capsys, "test", *args, f"--ckpt_path={fitted / 'checkpoints' / 'last.ckpt'}")
    assert re.search(r"holds a Baseline .*crossres.methods.BatchCR", error)
    assert not (tmp_path / "batch_cr").exists()


@pytest.fixture(scope="module")
def backbone_pth(fitted: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fitted run's backbone as an insightface-style ``backbone.pth`` (a plain state dict)."""
    state = torch.load(fitted / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    path = tmp_path_factory.mktemp("weights") / "backbone.pth"
    torch.save({k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}, path)
    return path


def test_ckpt_path_with_a_plain_state_dict_suggests_weights(
    backbone_pth: Path, tiny_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    error = _bad_input(capsys, "test", *tiny_args, *TINY_MODEL, f"--ckpt_path={backbone_pth}")
    assert re.search(r"not a Lightning checkpoint.*--weights", error)


def test_weights_evaluate_a_pretrained_backbone_without_training(
    fitted: Path, backbone_pth: Path, tmp_path: Path
) -> None:
    args = [f"--runs_dir={tmp_path}", *TINY_TRAINER, *TINY_DATA, *TINY_MODEL]
    main(["test", *args, "--name=pretrained", f"--weights={backbone_pth}"])
    main(["test", *args, "--name=checkpoint", f"--ckpt_path={fitted / 'checkpoints' / 'last.ckpt'}"])
    (pretrained,) = (tmp_path / "pretrained").glob("test-*/results_test.csv")
    (checkpoint,) = (tmp_path / "checkpoint").glob("test-*/results_test.csv")
    assert pretrained.read_text() == checkpoint.read_text()  # the same backbone, the same scores


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--model.finetune_from={pth}"], "only initialises training"),
        (["--weights={pth}", "--ckpt_path={ckpt}"], "pass --ckpt_path to evaluate a checkpoint"),
        (["--weights={pth}", "--model.finetune_from={pth}"], "both initialise the backbone"),
        (["--weights=missing.pth"], "missing.pth"),
    ],
)
def test_options_that_cannot_apply_are_errors(
    fitted: Path,
    backbone_pth: Path,
    tiny_args: list[str],
    extra: list[str],
    match: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ckpt = fitted / "checkpoints" / "last.ckpt"
    extra = [e.format(pth=backbone_pth, ckpt=ckpt) for e in extra]
    assert match in _bad_input(capsys, "test", *tiny_args, *TINY_MODEL, *extra)


def test_weights_need_a_method_with_one_backbone(backbone_pth: Path) -> None:
    from crossres.cli import _load_weights

    with pytest.raises(ValueError, match=r"Linear has no single recogniser .*\*_weights"):
        _load_weights(torch.nn.Linear(2, 2), str(backbone_pth))


def test_pretrained_eval_config_describes_an_insightface_iresnet50(capsys: pytest.CaptureFixture[str]) -> None:
    configs = ["baseline.yaml", "eval/pretrained_iresnet50.yaml", "eval/knoche.yaml"]
    args = [arg for c in configs for arg in ("-c", str(REPO / "experiments" / c))]
    with pytest.raises(SystemExit):
        main(["test", *args, "--weights=backbone.pth", "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    model = printed["model"]["init_args"]
    assert (model["backbone"], model["backbone_kwargs"], model["embedding_size"]) == ("iresnet50", None, 512)
    assert printed["weights"] == "backbone.pth" and "low_res_focus" in printed["data"]["protocols"]


def test_ckpt_path_auto_resumes_or_starts(fitted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _copy(fitted, tmp_path)
    args = [f"--runs_dir={run.parent}", *TINY_TRAINER, *TINY_DATA, *TINY_MODEL, "--ckpt_path=auto"]
    cli = main(["fit", *args, "--name=new"])  # nothing to resume: a new run
    assert cli.trainer.ckpt_path is None and (run.parent / "new" / "checkpoints" / "last.ckpt").is_file()
    cli = main(["fit", *args, "--name=tiny", "--trainer.max_epochs=2"])  # resumes tiny's last.ckpt
    assert cli.trainer.ckpt_path == str(run / "checkpoints" / "last.ckpt")
    (run / "checkpoints" / "last.ckpt").unlink()
    assert "already holds a run" in _bad_input(capsys, "fit", *args, "--name=tiny")  # a run, no checkpoint
