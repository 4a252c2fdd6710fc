"""`crossres` (alias `lightning`): the LightningCLI of every method.

Examples:
    crossres fit -c experiments/baseline.yaml
    crossres test -c experiments/baseline.yaml --ckpt_path runs/baseline/checkpoints/last.ckpt
    crossres fit --model.help Baseline
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_info

import crossres.methods  # noqa: F401  (registers every method for --model)
from crossres.checkpoint_io import ResumableCheckpoint, unreadable_checkpoint
from crossres.data.datamodule import FaceDataModule
from crossres.errors import InputError
from crossres.loggers import RunCSVLogger
from crossres.methods.base import CrossResMethod
from crossres.nn.weights import load_backbone_weights
from crossres.report.tables import quality_table, reference_table, results_table, write_results, write_scores

__all__ = ["CrossResCLI", "RunConfigCallback", "main", "run_lightning"]

_CKPT_ALIASES = ("last", "best", "hpc", "registry")


def _global_rank() -> int:
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _default_precision(class_path: str, accelerator: Any) -> str:
    if accelerator not in (None, "auto", "gpu", "cuda") or not torch.cuda.is_available():
        return "32-true"
    module, _, name = class_path.rpartition(".")
    method = getattr(importlib.import_module(module or "crossres.methods"), name, None)
    return str(getattr(method, "gpu_precision", "32-true"))


class RunConfigCallback(SaveConfigCallback):
    """Lightning's ``SaveConfigCallback`` that never replaces a run's ``config.yaml``.

    A resumed ``fit`` (or anything else that finds ``config.yaml`` in its log directory) writes its configuration
    beside it as ``config-<stage>-<timestamp>.yaml`` instead, whatever ``overwrite`` says.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not self.already_saved and self.save_to_log_dir:
            log_dir = trainer.log_dir
            if log_dir is not None and trainer.is_global_zero and (Path(log_dir) / self.config_filename).exists():
                self.config_filename = _unused(
                    Path(log_dir), f"config-{getattr(stage, 'value', stage)}-{time.strftime('%Y%m%d-%H%M%S')}", ".yaml"
                )
            self.overwrite = False
        super().setup(trainer, pl_module, stage)


def _unused(folder: Path, stem: str, suffix: str = "") -> str:
    """``stem + suffix``, or ``stem-1 + suffix``, ... : the first name not taken in ``folder``."""
    name, n = stem + suffix, 0
    while (folder / name).exists():
        n += 1
        name = f"{stem}-{n}{suffix}"
    return name


def _read_checkpoint(path: str) -> dict[str, Any]:
    """A Lightning checkpoint's contents (tensors memory-mapped where the file allows), or an ``InputError``."""
    hint = f"to evaluate a network's weights without a Lightning checkpoint, pass them as --weights {path}"
    try:
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # not a zip file: the legacy format cannot be memory-mapped
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise InputError(f"--ckpt_path: {unreadable_checkpoint(path, error)}; {hint}") from error
    if not isinstance(payload, dict) or not isinstance(payload.get("state_dict"), dict):
        raise InputError(
            f"--ckpt_path {path} is not a Lightning checkpoint (no 'state_dict'; an insightface backbone.pth is a "
            f"plain state dict); {hint}"
        )
    return payload


def _batches_trained(checkpoint: dict[str, Any]) -> int:
    """Training batches behind a checkpoint: the step of the first ``metrics.csv`` row a resumed run logs."""
    fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
    stepped = fit_loop.get("epoch_loop.state_dict", {}).get("_batches_that_stepped", 0)
    # A save from on_train_batch_end precedes Lightning's count of that batch; its progress already has it.
    processed = fit_loop.get("epoch_loop.batch_progress", {}).get("total", {}).get("processed", 0)
    return int(max(stepped, processed))


class CrossResCLI(LightningCLI):
    """LightningCLI with crossres' run directories, links and result tables.

    Every run lives in ``<runs_dir>/<name>`` (``name`` defaults to the method's class name): logs,
    ``config.yaml``, ``checkpoints/`` and ``results_<split>.{csv,json,md}``; the run's folders come from
    ``--runs_dir`` and ``--name``, whatever a composed (saved) config says about the logger's folders,
    ``trainer.default_root_dir`` or ``checkpoint.dirpath``. ``fit`` refuses to start in a run directory that already
    holds a run, unless ``--overwrite`` (deletes it) or ``--ckpt_path`` (resumes it: ``last`` is
    ``checkpoints/last.ckpt``, which must exist; its ``metrics.csv`` history is kept); ``--ckpt_path auto`` resumes
    the run when it has a ``last.ckpt`` (or a SLURM ``hpc_ckpt``) and starts it otherwise.
    ``validate``/``test``/``predict`` log into ``<name>/<subcommand>-<timestamp>``, never over ``fit``'s files.
    ``--ckpt_path`` must be a Lightning checkpoint of the configured method; ``--weights`` loads a recogniser's
    weights (an insightface ``backbone.pth`` or a crossres checkpoint) into the model's backbone in every subcommand.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._resume_step: int | None = None
        kwargs.setdefault("save_config_callback", RunConfigCallback)
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--name", type=str | None, default=None, help="Run name (default: the method class).")
        parser.add_argument("--runs_dir", type=str, default="runs", help="Directory that holds all runs.")
        parser.add_argument("--overwrite", type=bool, default=False, help="Let fit replace an existing run.")
        parser.add_argument(
            "--weights",
            type=str | None,
            default=None,
            help="Recogniser weights (insightface backbone.pth or a crossres .ckpt) loaded into model.backbone in "
            "every subcommand: evaluate a pretrained network with `test`, or start `fit` from it.",
        )
        parser.add_lightning_class_args(ResumableCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val_acc_hr_lr",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "epoch{epoch:03d}-hrlr{val_acc_hr_lr:.4f}",
                "checkpoint.auto_insert_metric_name": False,
                "checkpoint.last_every_n_batches": 500,  # a run killed mid-epoch loses at most 500 batches
            }
        )
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.image_size", "model.init_args.image_size", apply_on="parse")

    def _parse_ckpt_path(self) -> None:
        # Checked before Lightning replaces the config's model by the checkpoint's hyper-parameters (and class).
        subcommand = self.config.get("subcommand")
        if subcommand:
            self._check_ckpt_path(self.config[subcommand], fitting=subcommand == "fit")
        super()._parse_ckpt_path()

    def _check_ckpt_path(self, cfg: Namespace, fitting: bool) -> None:
        ckpt_path = cfg.get("ckpt_path")
        run_dir = Path(cfg.runs_dir) / (cfg.get("name") or _snake(cfg.model.class_path.rsplit(".", 1)[-1]))
        last = run_dir / "checkpoints" / "last.ckpt"
        if ckpt_path == "auto":  # resume this run if it has a checkpoint, else start it (never over another run)
            if fitting and any(run_dir.glob("hpc_ckpt_*.ckpt")):
                ckpt_path = cfg.ckpt_path = "hpc"  # a requeued SLURM job: Lightning's own checkpoint of it
            elif last.is_file():
                ckpt_path = "last"
            else:
                ckpt_path = cfg.ckpt_path = None
        if ckpt_path == "last":  # the run's own last.ckpt, or an error: never a silent fresh start
            if not last.is_file():
                raise FileNotFoundError(
                    f"--ckpt_path last: {last} does not exist, so there is nothing to resume in {run_dir} (nothing "
                    "was changed). Check --name/--runs_dir, pass the checkpoint file itself, or start a new run "
                    "without --ckpt_path."
                )
            ckpt_path = cfg.ckpt_path = str(last)
        if ckpt_path and ckpt_path not in _CKPT_ALIASES:
            if not Path(ckpt_path).is_file():
                raise FileNotFoundError(f"--ckpt_path {ckpt_path}: no such checkpoint file")
            checkpoint = _read_checkpoint(ckpt_path)
            _check_checkpoint_class(checkpoint, ckpt_path, cfg.model.class_path)
            if fitting:
                self._resume_step = _batches_trained(checkpoint)

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        fitting = self.subcommand in ("fit", None)
        name = cfg.get("name") or _snake(cfg.model.class_path.rsplit(".", 1)[-1])
        cfg.name = name
        run_dir = Path(cfg.runs_dir) / name
        self.run_dir = run_dir
        self._check_weights_options(cfg, fitting)
        ckpt_path = cfg.get("ckpt_path")
        if not fitting and ckpt_path and cfg.data.get("train_classes") is None:
            # The model's classes come with the checkpoint: scoring it never reads the training set.
            model_args = cfg.model.get("init_args") or Namespace()
            classes = model_args.get("num_classes") or (cfg.model.get("dict_kwargs") or {}).get("num_classes")
            if classes is not None:
                cfg.data.train_classes = int(classes)
        # Where this subcommand writes: fit into the run directory, everything else into a new folder of its own.
        log_dir = run_dir
        version = ""
        if not fitting:
            version = _unused(run_dir, f"{self.subcommand}-{time.strftime('%Y%m%d-%H%M%S')}")
            log_dir = run_dir / version
        self.log_dir = log_dir
        logger = cfg.trainer.get("logger")
        if logger in (None, True) or (isinstance(logger, Namespace) and "CSVLogger" in logger.class_path):
            cfg.trainer.logger = Namespace(
                class_path="crossres.loggers.RunCSVLogger",
                init_args=Namespace(save_dir=cfg.runs_dir, name=name, version=version),
            )
        elif isinstance(logger, Namespace) and "TensorBoardLogger" in logger.class_path:
            logger.init_args.update({"save_dir": cfg.runs_dir, "name": name, "version": version})
        elif isinstance(logger, Namespace) and "WandbLogger" in logger.class_path:
            init = logger.init_args
            if init.get("save_dir") in (None, "", "."):  # WandbLogger's default "." would scatter runs
                init.save_dir = str(run_dir)
            init.name = init.get("name") or name
        if cfg.trainer.get("precision") is None:  # unset: the method's GPU default (RIM: bf16-mixed), 32-true on CPU
            cfg.trainer.precision = _default_precision(cfg.model.class_path, cfg.trainer.get("accelerator"))
        if not cfg.trainer.get("plugins"):
            cfg.trainer.plugins = [Namespace(class_path="crossres.checkpoint_io.AtomicCheckpointIO")]
        cfg.trainer.default_root_dir = str(log_dir)
        if fitting:
            cfg.checkpoint.dirpath = str(run_dir / "checkpoints")
        if fitting and _global_rank() == 0:
            if ckpt_path is None:
                self._protect_run_dir(run_dir, overwrite=cfg.overwrite)
            elif _holds_run(run_dir) and not _is_inside(Path(ckpt_path), run_dir):
                raise FileExistsError(
                    f"run directory {run_dir} already holds a run, and --ckpt_path {ckpt_path} is not one of its "
                    "checkpoints: resume this run with --ckpt_path last, or continue from that checkpoint under "
                    "another --name."
                )

    @staticmethod
    def _check_weights_options(cfg: Namespace, fitting: bool) -> None:
        weights, ckpt_path = cfg.get("weights"), cfg.get("ckpt_path")
        finetune_from = cfg.model.get("init_args", Namespace()).get("finetune_from")
        if weights and not Path(weights).is_file():
            raise FileNotFoundError(f"--weights {weights}: no such file (an insightface backbone.pth or a .ckpt)")
        if weights and finetune_from:
            raise InputError(
                f"--weights {weights} and model.finetune_from {finetune_from} both initialise the backbone: pass one"
            )
        if not fitting and weights and ckpt_path:
            raise InputError(
                f"--weights {weights} and --ckpt_path {ckpt_path}: the checkpoint holds all the model's weights and "
                "would replace them; pass --ckpt_path to evaluate a checkpoint, --weights to evaluate pretrained ones"
            )
        if not fitting and finetune_from and not ckpt_path:
            raise InputError(
                f"model.finetune_from {finetune_from} only initialises training (fit); to evaluate those weights "
                f"without training, pass --weights {finetune_from} (and model.finetune_from=null)"
            )

    def after_instantiate_classes(self) -> None:
        weights = (self.config[self.subcommand] if self.subcommand else self.config).get("weights")
        if weights:
            _load_weights(self.model, weights)

    def before_fit(self) -> None:
        logger = self.trainer.logger
        if self._resume_step is not None and isinstance(logger, RunCSVLogger):
            logger.keep_history(before_step=self._resume_step)

    @staticmethod
    def _protect_run_dir(run_dir: Path, overwrite: bool) -> None:
        if not _holds_run(run_dir):
            return
        if not overwrite:
            raise FileExistsError(
                f"run directory {run_dir} already holds a run. Resume it with --ckpt_path last, choose another "
                "--name, or pass --overwrite to delete it."
            )
        rank_zero_info(f"--overwrite: deleting the earlier run in {run_dir}")
        shutil.rmtree(run_dir)

    def _report(self, split: str) -> None:
        model = self.model
        if not isinstance(model, CrossResMethod) or self.trainer.global_rank != 0:
            return
        rows = model.eval_results.get(split, [])
        if not rows:
            return
        # Not `trainer.log_dir`: it broadcasts, and the other ranks have already returned.
        log_dir = Path(getattr(self.trainer.logger, "log_dir", None) or self.log_dir)
        far = float(model.hparams.get("far", 1e-3))
        method = type(model).__name__
        reference, quality = model.reference_results.get(split, []), model.sr_quality.get(split, [])
        write_results(rows, log_dir, split, reference, quality, method, far=far)
        write_scores(model.eval_scores.get(split, {}), log_dir, split)
        tables = [
            results_table(rows, title=f"{method}: {split} verification (10-fold accuracy)", far=far),
            quality_table(quality, title=f"{method}: super-resolved and bicubic probes against the HR face"),
            reference_table(rows, reference, method, title=f"{method} beside the HR network it starts from"),
        ]
        print("\n" + "\n\n".join(t for t in tables if t) + f"\n\n(results in {log_dir})\n", flush=True)

    def after_fit(self) -> None:
        self._report("val")

    def after_validate(self) -> None:
        self._report("val")

    def after_test(self) -> None:
        self._report("test")


def _holds_run(run_dir: Path) -> bool:
    return run_dir.is_dir() and any(run_dir.iterdir())


def _is_inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _check_checkpoint_class(checkpoint: dict[str, Any], path: str, class_path: str) -> None:
    saved = checkpoint.get("hyper_parameters", {}).get("_class_path")
    if isinstance(saved, str) and saved != class_path:
        raise InputError(
            f"--ckpt_path {path} holds a {saved.rsplit('.', 1)[-1]} ({saved}), but the config's model is "
            f"{class_path}: evaluate it with its own config (-c <its run>/config.yaml, or --model={saved})"
        )


def _load_weights(model: Any, path: str) -> None:
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, torch.nn.Module):
        raise InputError(
            f"--weights {path}: {type(model).__name__} has no single recogniser (model.backbone) to load them into; "
            "pass a checkpoint of it with --ckpt_path, or give the pretrained network through its *_weights options"
        )
    load_backbone_weights(backbone, path)
    rank_zero_info(f"--weights: loaded {path} into {type(model).__name__}.backbone")


def main(args: list[str] | None = None) -> Any:
    """Run the crossres command line (``crossres`` and ``lightning`` console scripts, ``python -m crossres``).

    See :func:`crossres.entry.main`: ``report``/``export``/``align`` go to :mod:`crossres.commands`, the others to
    :class:`CrossResCLI`; bad input exits with status 2 and one line naming the file or option.
    """
    from crossres.entry import main as entry_main

    return entry_main(args)


def run_lightning(args: list[str] | None = None) -> CrossResCLI:
    """Run ``fit``/``validate``/``test``/``predict`` with :class:`CrossResCLI` (``None``: read ``sys.argv``)."""
    return CrossResCLI(
        CrossResMethod,
        FaceDataModule,
        subclass_mode_model=True,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        args=args,
    )
