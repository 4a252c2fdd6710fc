"""The real command line, end to end, on tiny synthetic data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import crossres.methods
from crossres.cli import main
from crossres.methods import Baseline

from .conftest import REPO, TINY_MODEL


def _fit(args: list[str], name: str = "tiny") -> Path:
    main(["fit", *args, *TINY_MODEL, f"--name={name}"])
    return Path(next(a.split("=", 1)[1] for a in args if a.startswith("--runs_dir="))) / name


def test_fit_then_test_roundtrip(tiny_args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    run = _fit(tiny_args)
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    assert (run / "config.yaml").is_file()
    assert (run / "results_val.csv").is_file()
    out = capsys.readouterr().out
    assert "HR-LR acc %" in out and "synthetic" in out

    main(["test", *tiny_args, *TINY_MODEL, "--name=tiny", f"--ckpt_path={ckpt}"])
    tests = list(run.glob("test-*/results_test.csv"))
    assert len(tests) == 1
    text = tests[0].read_text()
    for comparison in ("HR-HR", "LR-LR", "HR-LR"):
        assert comparison in text
    # The fit's own results are still there: test never writes over them.
    assert (run / "results_val.csv").is_file()


def test_fit_refuses_existing_run_and_overwrite_replaces(
    tiny_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    run = _fit(tiny_args)
    marker = run / "checkpoints" / "last.ckpt"
    before = marker.stat().st_mtime_ns
    with pytest.raises(SystemExit) as exit_info:
        _fit(tiny_args)
    assert exit_info.value.code == 2
    assert "crossres fit: error: run directory" in capsys.readouterr().err
    assert marker.stat().st_mtime_ns == before
    _fit([*tiny_args, "--overwrite=true"])
    assert marker.is_file()


def test_missing_checkpoint_is_named(tiny_args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["test", *tiny_args, *TINY_MODEL, "--ckpt_path=nope.ckpt"])
    assert exit_info.value.code == 2
    assert "crossres test: error: --ckpt_path nope.ckpt" in capsys.readouterr().err


def test_unknown_key_is_named(tiny_args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["fit", *tiny_args, *TINY_MODEL, "--model.not_a_key=1"])
    assert "not_a_key" in capsys.readouterr().err


@pytest.mark.parametrize(
    "bad", ["--data.degradation.lr_sizes=[0]", "--data.degradation.lr_sizes=[64]", "--data.degradation.lr_sizes=[-3]"]
)
def test_bad_lr_size_is_named(tiny_args: list[str], bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *tiny_args, *TINY_MODEL, bad])
    assert exit_info.value.code == 2
    assert "crossres fit: error: data.degradation.lr_sizes" in capsys.readouterr().err


def test_flat_data_keys_name_their_group(
    tiny_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flat = tmp_path / "flat.yaml"
    flat.write_text("data:\n  batch_size: 8\n  lr_sizes: [8]\n  synthetic_pairs: 40\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *tiny_args, *TINY_MODEL, "-c", str(flat)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"--config {flat}: data.lr_sizes is data.degradation.lr_sizes, data.synthetic_pairs is " in err
    assert "data.synthetic.pairs" in err
    with pytest.raises(SystemExit):
        main(["fit", *tiny_args, *TINY_MODEL, "--data.hflip=0.0"])
    assert "crossres fit: error: --data.hflip: data.hflip is data.augmentation.hflip" in capsys.readouterr().err
    section = tmp_path / "section.yaml"
    section.write_text("num_identities: 6\n")
    with pytest.raises(SystemExit):
        main(["fit", *tiny_args, *TINY_MODEL, "--data", str(section)])
    assert f"--data {section}: data.num_identities is data.synthetic.num_identities" in capsys.readouterr().err


def test_option_groups_compose_field_by_field(capsys: pytest.CaptureFixture[str]) -> None:
    layers = ["experiments/baseline.yaml", "experiments/make_run/teacher.yaml"]
    with pytest.raises(SystemExit):
        configs = [a for layer in layers for a in ("-c", str(REPO / layer))]
        main(["fit", *configs, "--data.degradation.lr_prob=0.5", "--print_config"])
    data = yaml.safe_load(capsys.readouterr().out)["data"]
    assert data["degradation"]["lr_sizes"] == [8, 16, 32] and data["degradation"]["lr_prob"] == 0.5
    assert data["synthetic"]["num_identities"] == 100 and data["synthetic"]["pairs"] == 600
    assert data["augmentation"]["hflip"] == 0.5


def test_help_shows_the_option_groups(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = capsys.readouterr().out
    for option in ("--data.synthetic.pair_identities", "--data.degradation.lr_sizes", "--data.augmentation.hflip"):
        assert option in out


def test_image_size_the_backbone_cannot_take(tiny_args: list[str]) -> None:
    args = [a for a in tiny_args if not a.startswith("--data.image_size")]
    with pytest.raises(ValueError, match="image_size"):
        main(["fit", *args, *TINY_MODEL, "--data.image_size=[30, 30]"])


def test_checkpoint_reload_gives_identical_embeddings(tiny_args: list[str]) -> None:
    run = _fit(tiny_args)
    model = Baseline.load_from_checkpoint(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    again = Baseline.load_from_checkpoint(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    model.eval(), again.eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.embed(x), again.embed(x))
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(model.state_dict()["backbone.conv1.weight"], state["backbone.conv1.weight"])
    loaded = crossres.methods.load_method(run / "checkpoints" / "last.ckpt")  # the class read from the file
    assert type(loaded) is Baseline
    with torch.no_grad():
        assert torch.equal(loaded.embed(x), model.embed(x))
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        crossres.methods.load_method(run / "missing.ckpt")


def _print_config(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    """``crossres fit <args> --print_config`` in-process (a subprocess per config costs an interpreter start)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--print_config"])
    out, err = capsys.readouterr()
    assert exit_info.value.code in (0, None), f"{args}: {err[-2000:]}"
    return yaml.safe_load(out)


@pytest.mark.parametrize("config", sorted(p.name for p in (REPO / "experiments").glob("*.yaml")))
def test_every_experiment_config_parses(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = REPO / "experiments" / config
    assert "model" in yaml.safe_load(path.read_text()), f"{config} has no model"
    printed = _print_config(["-c", str(path)], capsys)
    assert printed["model"]["class_path"].startswith("crossres.methods.")


# The key prefix under which each config describes the network it loads from runs/hr_teacher.
_HR_NETWORK_PREFIX = {"guide_weights": "", "recognizer_weights": "", "teacher_weights": "teacher_"}


def test_configs_that_load_the_hr_teacher_describe_its_architecture() -> None:
    teacher = yaml.safe_load((REPO / "experiments/baseline.yaml").read_text())["model"]["init_args"]
    checked = 0
    for config in sorted((REPO / "experiments").glob("*.yaml")):
        args = yaml.safe_load(config.read_text())["model"].get("init_args", {})
        for key, prefix in _HR_NETWORK_PREFIX.items():
            if "hr_teacher" not in str(args.get(key, "")):
                continue
            checked += 1
            for arg in ("backbone", "backbone_kwargs", "embedding_size"):
                key = prefix + arg
                assert args.get(key) == teacher[arg], f"{config.name}: {key} differs from baseline.yaml"
    assert checked >= 4


def test_configs_compose(capsys: pytest.CaptureFixture[str]) -> None:
    layers = ["trainer/default.yaml", "data/synthetic.yaml", "baseline.yaml"]
    printed = _print_config([arg for layer in layers for arg in ("-c", str(REPO / "experiments" / layer))], capsys)
    assert printed["model"]["class_path"] == "crossres.methods.Baseline"
    assert printed["data"]["train_format"] == "synthetic"


def test_model_help_lists_documented_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--model.help", "Baseline"])
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    for argument in ("--model.backbone", "--model.train_on", "--model.lr", "--model.flip_test"):
        assert argument in out
    assert "margin" in out


def test_console_scripts() -> None:
    """Both console scripts are installed; ``lightning`` is the same CLI (``crossres`` runs a fit below)."""
    for script in ("crossres", "lightning"):
        assert (Path(sys.executable).parent / script).exists(), f"console script {script} not installed"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lightning"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    for subcommand in ("fit", "validate", "test", "predict"):
        assert subcommand in result.stdout


def test_console_script_fit_exits_zero(tiny_args: list[str]) -> None:
    """`make run` chains commands: a successful `crossres fit` must exit with status 0."""
    exe = Path(sys.executable).parent / "crossres"
    result = subprocess.run(
        [str(exe), "fit", *tiny_args, *TINY_MODEL, "--name=script"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "HR-LR" in result.stdout or "hr_lr" in result.stdout


def test_predict_returns_normalised_embeddings(tiny_args: list[str]) -> None:
    run = _fit(tiny_args)
    cli = main(["predict", *tiny_args, *TINY_MODEL, "--name=tiny", f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}"])
    predictions = cli.trainer.predict_loop.predictions
    batches = predictions[0] if isinstance(predictions[0], list) else predictions
    first = batches[0]
    assert {"hr1", "hr2", "lr1_4px", "lr2_8px", "pair_id", "issame"} <= set(first)
    torch.testing.assert_close(first["hr1"].norm(dim=1), torch.ones(len(first["hr1"])))
    assert sum(len(b["pair_id"]) for b in batches) == 40


def test_wandb_logger_offline(tiny_args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    args = [a for a in tiny_args if a != "--trainer.logger=null"]
    main(["fit", "-c", str(REPO / "experiments/trainer/wandb.yaml"), *args, *TINY_MODEL, "--name=wb"])
    run = Path(next(a.split("=", 1)[1] for a in args if a.startswith("--runs_dir="))) / "wb"
    import wandb

    wandb.finish()  # WandbLogger leaves its run open after fit; later tests in this process must not log into it
    assert list(run.glob("wandb/offline-run-*")), "no offline wandb run written"
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_trainer_saves_checkpoints_atomically(tiny_args: list[str]) -> None:
    from crossres.checkpoint_io import AtomicCheckpointIO
    from crossres.cli import CrossResCLI
    from crossres.data.datamodule import FaceDataModule
    from crossres.methods.base import CrossResMethod

    cli = CrossResCLI(
        CrossResMethod,
        FaceDataModule,
        subclass_mode_model=True,
        auto_configure_optimizers=False,
        run=False,
        args=[*tiny_args, *TINY_MODEL],
    )
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)


METHODS = [n for n in crossres.methods.__all__ if n not in ("CrossResMethod", "NonFiniteLossError", "load_method")]


@pytest.mark.parametrize("name", METHODS)
def test_every_method_is_exported_and_has_a_config(name: str) -> None:
    cls = getattr(crossres.methods, name)
    assert cls.__doc__ and "Paper:" in cls.__doc__ and "Args:" in cls.__doc__
    configs = [p for p in (REPO / "experiments").glob("*.yaml") if cls.__name__ in p.read_text()]
    assert configs, f"no experiment config uses {name}"
