"""RIM (001) end to end: the real CLI, the manual minimax, the frozen teacher, resumes, failures, DDP."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from crossres.cli import main
from crossres.data.datamodule import FaceDataModule
from crossres.data.options import DegradationOptions, SyntheticOptions
from crossres.data.priors import landmarks_to_parsing
from crossres.methods.base import HR_MODEL_COMMAND, NonFiniteLossError
from crossres.methods.rim import RIM

from .conftest import REPO, TINY_DATA, TINY_RIM, TINY_TRAINER

TEACHER = {"teacher_backbone": "iresnet18", "teacher_backbone_kwargs": {"width": 8}, "teacher_embedding_size": 32}
SMALL = {**TINY_RIM, **TEACHER, "heatmap_sigma": 1.0}
RIM_ARGS = [
    "--model=crossres.methods.rim.RIM",
    "--model.teacher_backbone=iresnet18",
    "--model.teacher_backbone_kwargs={width: 8}",
    "--model.teacher_embedding_size=32",
    "--model.student_backbone_kwargs={width: 4}",
    "--model.assistant_backbone_kwargs={width: 4}",
    "--model.fhn_channels=8",
    "--model.fhn_feature_channels=4",
    "--model.fhn_blocks=1",
    "--model.domain_dim=16",
    "--model.quality_lr_sizes=[8]",
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Any:
    # The networks here are tiny: a second intra-op thread only adds synchronisation (and contention with xdist).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny HR Baseline, fitted once for this module: RIM's frozen teacher."""
    runs = tmp_path_factory.mktemp("teacher")
    main(
        [
            "fit", f"--runs_dir={runs}", *TINY_TRAINER, *TINY_DATA, "--name=hr", "--model=Baseline",
            "--model.backbone=iresnet18", "--model.backbone_kwargs={width: 8}", "--model.embedding_size=32",
        ]
    )  # fmt: skip
    return runs / "hr" / "checkpoints" / "last.ckpt"


def _datamodule() -> FaceDataModule:
    return FaceDataModule(
        image_size=(32, 32), synthetic=SyntheticOptions(num_identities=6, images_per_identity=4, pairs=40),
        protocols=[8], degradation=DegradationOptions(lr_policy="fixed", lr_sizes=[4]), batch_size=8,
        eval_batch_size=16, num_workers=0,
    )  # fmt: skip


def _trainer(**kwargs: Any) -> pl.Trainer:
    options: dict[str, Any] = {
        "accelerator": "cpu", "max_epochs": 1, "limit_train_batches": 1, "limit_val_batches": 0, "logger": False,
        "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }  # fmt: skip
    options.update(kwargs)
    return pl.Trainer(**options)


def _model(teacher_ckpt: Path, **kwargs: Any) -> RIM:
    pl.seed_everything(0)
    return RIM(**({"num_classes": 6, "image_size": (32, 32), "teacher_weights": str(teacher_ckpt)} | SMALL | kwargs))


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class _Corrupt(Callback):
    """Edits every training batch after the data module's transfer (``fn(batch)``)."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        self.fn(batch)


# ------------------------------------------------------------------------------------------------- CLI
def test_fit_then_test_through_cli(teacher_ckpt: Path, tiny_args: list[str]) -> None:
    args = [*tiny_args, *RIM_ARGS, f"--model.teacher_weights={teacher_ckpt}", "--name=rim"]
    cli = main(["fit", *args])
    run = Path(next(a.split("=", 1)[1] for a in tiny_args if a.startswith("--runs_dir="))) / "rim"
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.is_file() and (run / "results_val.csv").is_file()
    metrics = cli.trainer.callback_metrics
    for key in ("val_psnr_sr_8px", "val_psnr_bicubic_8px", "val_ssim_sr_8px", "val_ssim_bicubic_8px"):
        assert key in metrics and torch.isfinite(metrics[key])
    assert "val_psnr_sr_4px" not in metrics  # quality_lr_sizes: [8]
    for key in (
        "train_mmd",
        "train_loss_pixel",
        "train_loss_landmark",
        "train_loss_parsing",
        "train_loss_domain",
        "train_loss_student",
        "train_loss_assistant",
        "train_loss_recognition",
        "train_kernel_weight_0",
    ):
        assert key in metrics, key

    # Table 1 (d) / Table 2 HR-SR: the same checkpoint, the teacher on the SR face, no new training.
    main(["test", *args, "--model.eval_mode=fhn_teacher", f"--ckpt_path={ckpt}"])
    assert len(list(run.glob("test-*/results_test.csv"))) == 1

    model = RIM.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).eval()
    again = RIM.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).eval()
    x, size = torch.rand(3, 3, 32, 32), torch.full((3, 2), 8)
    with torch.no_grad():
        embeddings = {}
        for mode in ("rim", "fhn_student", "fhn_teacher", "teacher"):
            model.eval_mode = again.eval_mode = mode
            embeddings[mode] = model.embed_lr(x, size)
            assert torch.equal(embeddings[mode], again.embed_lr(x, size))
            assert embeddings[mode].shape == (3, 32)
        assert not torch.allclose(embeddings["rim"], embeddings["fhn_student"])  # the assistant's residual f_A^K
        torch.testing.assert_close(model.embed(x), model.teacher.net(x))  # HR gallery: the teacher
    with pytest.raises(ValueError, match="eval_mode"):
        model.eval_mode = "student"


def test_missing_teacher_weights_give_the_command(
    tiny_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as error:
        main(["fit", *tiny_args, *RIM_ARGS, f"--model.teacher_weights={tmp_path / 'none.ckpt'}"])
    err = capsys.readouterr().err
    assert error.value.code == 2 and "teacher_weights" in err and HR_MODEL_COMMAND in err


def test_experiment_config_without_teacher_stops_before_training(
    tiny_args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no runs/hr_teacher here: the default teacher_weights is missing
    config = str(REPO / "experiments" / "rim.yaml")
    with pytest.raises(SystemExit) as error:
        main(["fit", "-c", config, *tiny_args, "--data.degradation.lr_sizes=[4]", "--data.protocols=[4]"])
    err = capsys.readouterr().err
    assert error.value.code == 2 and "runs/hr_teacher" in err and HR_MODEL_COMMAND in err
    assert not list(tmp_path.glob("runs/rim/checkpoints/*.ckpt"))


# ----------------------------------------------------------------------------------- manual optimization
def test_every_player_steps_and_teacher_stays_bit_identical(teacher_ckpt: Path) -> None:
    model = _model(teacher_ckpt)
    trainer = _trainer()
    assert model.player_names() == ["fhn", "domain", "student", "assistant"]
    trainer.fit(model, datamodule=_datamodule())
    loaded = torch.load(teacher_ckpt, map_location="cpu", weights_only=True)["state_dict"]
    teacher_file = {k[len("backbone.") :]: v for k, v in loaded.items() if k.startswith("backbone.")}
    after_teacher = model.teacher.net.state_dict()
    assert after_teacher.keys() == teacher_file.keys()
    assert all(torch.equal(after_teacher[k], teacher_file[k]) for k in teacher_file), "teacher moved"
    # every optimizer stepped once per batch: global_step counts each optimizer step
    assert trainer.global_step == 4
    for optimizer, name in zip(trainer.optimizers, model.player_names(), strict=True):
        states = [optimizer.state[p] for group in optimizer.param_groups for p in group["params"]]
        assert all(s and int(s["step"]) == 1 for s in states), f"{name} did not step every parameter"


def test_player_parameters_change(teacher_ckpt: Path) -> None:
    model = _model(teacher_ckpt)
    fresh = _model(teacher_ckpt)
    assert fresh.fhn is not None and fresh.assistant is not None
    players = {
        "generator": lambda m: m.fhn.generator_parameters(),
        "integrator": lambda m: list(m.fhn.integrator.parameters()),
        "domain": lambda m: [*m.fhn.domain.parameters(), m.mmd.weight_logits],
        "student": lambda m: list(m.student.parameters()),
        "assistant": lambda m: list(m.assistant.parameters()),
    }
    trainer = _trainer(limit_train_batches=2)  # the zero-initialised image outputs pass gradients from step 2 on
    trainer.fit(model, datamodule=_datamodule())
    for name, params in players.items():
        changed = [not torch.equal(a, b) for a, b in zip(params(model), params(fresh), strict=True)]
        assert sum(changed) >= 0.5 * len(changed), f"{name}: only {sum(changed)}/{len(changed)} tensors moved"
    model.train()
    assert not model.teacher.training  # the frozen teacher stays in eval mode


class _EpochSnapshots(Callback):
    """State dicts of FHN, student and assistant at the end of every training epoch."""

    def __init__(self) -> None:
        self.states: list[dict[str, dict[str, torch.Tensor]]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.states.append({name: _snapshot(getattr(pl_module, name)) for name in ("fhn", "student", "assistant")})


def test_assistant_after_epoch_trains_it_alone_on_the_frozen_student(teacher_ckpt: Path) -> None:
    model, fresh = _model(teacher_ckpt, assistant_after_epoch=1), _model(teacher_ckpt, assistant_after_epoch=1)
    snapshots = _EpochSnapshots()
    _trainer(max_epochs=2, limit_train_batches=2, callbacks=[snapshots]).fit(model, datamodule=_datamodule())
    first, second = snapshots.states

    def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # epoch 0: FHN and student train, the assistant does not move
    assert same(first["assistant"], _snapshot(fresh.assistant))
    assert not same(first["student"], _snapshot(fresh.student))
    # epoch 1: FHN and student frozen (weights and BatchNorm statistics), the assistant learns Eq. (12)
    assert same(second["student"], first["student"]) and same(second["fhn"], first["fhn"])
    assert not same(second["assistant"], first["assistant"])
    with pytest.raises(ValueError, match="assistant_after_epoch"):
        _model(teacher_ckpt, use_assistant=False, assistant_after_epoch=1)


def test_nonfinite_loss_is_named_and_no_weight_moves(teacher_ckpt: Path) -> None:
    model = _model(teacher_ckpt)

    def poison(batch: dict[str, Any]) -> None:
        batch["landmarks"][0, 0, 0] = float("nan")

    trainer = _trainer(callbacks=[_Corrupt(poison)])
    snapshot: dict[str, torch.Tensor] = {}

    class _Snap(Callback):
        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            snapshot.update(_snapshot(pl_module))

    trainer.callbacks.append(_Snap())
    with pytest.raises(NonFiniteLossError, match="'landmark'.*global step 0"):
        trainer.fit(model, datamodule=_datamodule())
    state = model.state_dict()
    moved = [k for k, v in snapshot.items() if not torch.equal(state[k], v)]
    assert not moved, moved


def test_priors_switch_and_parsing_from_landmarks(teacher_ckpt: Path) -> None:
    model = _model(teacher_ckpt)

    def drop(batch: dict[str, Any]) -> None:
        batch.pop("landmarks"), batch.pop("parsing")

    with pytest.raises(ValueError, match="use_priors"):
        _trainer(callbacks=[_Corrupt(drop)]).fit(model, datamodule=_datamodule())
    off = _model(teacher_ckpt, use_priors=False)
    _trainer(callbacks=[_Corrupt(drop)]).fit(off, datamodule=_datamodule())
    assert "train_loss_landmark" not in off.trainer.callback_metrics
    # Real data without parsing labels: the parsing target is estimated from the landmarks (at the prior size).
    dm = _datamodule()
    dm.setup("fit")
    item = dm.train_dataloader().dataset[0]
    landmarks = item["landmarks"][None]
    heatmaps, parsing = model._prior_targets({"landmarks": landmarks})
    assert heatmaps.shape == (1, 68, 16, 16) and parsing.shape == (1, 16, 16)
    assert torch.equal(parsing, landmarks_to_parsing((landmarks - 0.5) / 2, (16, 16)))
    peak = heatmaps[0, 30].argmax()
    assert abs(int(peak % 16) - float((landmarks[0, 30, 0] - 0.5) / 2)) <= 1  # nose tip heatmap at the nose tip


def test_optimizer_states_resume_mid_epoch(teacher_ckpt: Path, tmp_path: Path) -> None:
    # every_n_train_steps counts optimizer steps: 4 players -> one checkpoint after the first of two batches.
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=4, save_top_k=-1, save_last=False)
    _trainer(limit_train_batches=2, enable_checkpointing=True, callbacks=[checkpoint]).fit(
        _model(teacher_ckpt), datamodule=_datamodule()
    )
    mid = tmp_path / "epoch=0-step=4.ckpt"
    assert mid.is_file(), sorted(p.name for p in tmp_path.iterdir())
    saved = torch.load(mid, map_location="cpu", weights_only=True)
    assert len(saved["optimizer_states"]) == 4 and all(s["state"] for s in saved["optimizer_states"])
    progress = saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]
    assert progress["processed"] == 1  # saved mid-epoch, after the first of two batches

    restored: list[dict[str, Any]] = []

    class _Capture(Callback):
        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            restored.extend(copy.deepcopy(opt.state_dict()) for opt in trainer.optimizers)

    trainer = _trainer(limit_train_batches=2, callbacks=[_Capture()])
    trainer.fit(_model(teacher_ckpt, teacher_weights="/nowhere.ckpt"), datamodule=_datamodule(), ckpt_path=mid)
    assert len(restored) == 4
    for got, want in zip(restored, saved["optimizer_states"], strict=True):
        assert got["state"].keys() == want["state"].keys()
        for index, state in want["state"].items():
            for key, value in state.items():
                assert torch.equal(torch.as_tensor(got["state"][index][key]), torch.as_tensor(value)), key
    assert trainer.global_step == 8  # the second batch ran once more: 4 + 4 optimizer steps


@pytest.mark.slow
def test_ddp_fit_two_cpu_processes(teacher_ckpt: Path, tmp_path: Path) -> None:
    # The override documented in experiments/rim.yaml: players idle in each other's backward passes.
    result = subprocess.run(
        [
            sys.executable, "-m", "crossres", "fit", f"--runs_dir={tmp_path}", "--name=ddp", *TINY_DATA, *RIM_ARGS,
            f"--model.teacher_weights={teacher_ckpt}", "--trainer.accelerator=cpu", "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2", "--trainer.enable_progress_bar=false", "--trainer.callbacks=null",
            "--trainer.num_sanity_val_steps=0", "--trainer.devices=2",
            "--trainer.strategy=ddp_find_unused_parameters_true",
        ],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "ddp" / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "ddp" / "results_val.csv").is_file()


def test_sr_grid_and_heatmap_peaks(tmp_path: Path) -> None:
    from crossres.report.hallucination import heatmap_peaks, rim_sr_grid

    heatmaps = torch.zeros(1, 2, 8, 8)
    heatmaps[0, 0, 3, 5] = 1.0  # row 3, column 5
    heatmaps[0, 1, 0, 7] = 1.0
    assert heatmap_peaks(heatmaps, stride=2).tolist() == [[[10.5, 6.5], [14.5, 0.5]]]
    model = RIM(**({"num_classes": 6, "image_size": (32, 32), "teacher_weights": None} | SMALL))
    path = tmp_path / "grid.png"
    rim_sr_grid(model, torch.rand(2, 3, 32, 32), 4, path=path)
    assert path.is_file() and path.stat().st_size > 1000
    assert model.training  # restored
