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
import sys
import time
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

import crossres.methods  # noqa: F401  (registers every method for --model)
from crossres.checkpoint_io import ResumableCheckpoint
from crossres.data.datamodule import FaceDataModule
from crossres.methods.base import CrossResMethod
from crossres.report.tables import quality_table, reference_table, results_table, write_results, write_scores

__all__ = ["CrossResCLI", "main"]

_CKPT_ALIASES = ("last", "best", "hpc", "registry")
_COMMANDS = ("report", "export", "align")


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


class CrossResCLI(LightningCLI):
    """LightningCLI with crossres' run directories, links and result tables.

    Every run lives in ``<runs_dir>/<name>`` (``name`` defaults to the method's class name): logs,
    ``config.yaml``, ``checkpoints/`` and ``results_<split>.{csv,json,md}``. ``fit`` refuses to start in a
    run directory that already holds a run, unless ``--overwrite`` (deletes it) or ``--ckpt_path`` (resumes).
    ``validate``/``test``/``predict`` log into ``<name>/<subcommand>-<timestamp>``, never over ``fit``'s files.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--name", type=str | None, default=None, help="Run name (default: the method class).")
        parser.add_argument("--runs_dir", type=str, default="runs", help="Directory that holds all runs.")
        parser.add_argument("--overwrite", type=bool, default=False, help="Let fit replace an existing run.")
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

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        name = cfg.get("name") or _snake(cfg.model.class_path.rsplit(".", 1)[-1])
        cfg.name = name
        run_dir = Path(cfg.runs_dir) / name
        self.run_dir = run_dir
        version = "" if self.subcommand == "fit" else f"{self.subcommand}-{time.strftime('%Y%m%d-%H%M%S')}"
        logger = cfg.trainer.get("logger")
        if logger in (None, True):
            cfg.trainer.logger = Namespace(
                class_path="lightning.pytorch.loggers.CSVLogger",
                init_args=Namespace(save_dir=cfg.runs_dir, name=name, version=version),
            )
        elif isinstance(logger, Namespace) and "WandbLogger" in logger.class_path:
            init = logger.init_args
            if init.get("save_dir") in (None, "", "."):  # WandbLogger's default "." would scatter runs
                init.save_dir = str(run_dir)
            init.name = init.get("name") or name
        if cfg.trainer.get("precision") is None:  # unset: the method's GPU default (RIM: bf16-mixed), 32-true on CPU
            cfg.trainer.precision = _default_precision(cfg.model.class_path, cfg.trainer.get("accelerator"))
        if not cfg.trainer.get("plugins"):
            cfg.trainer.plugins = [Namespace(class_path="crossres.checkpoint_io.AtomicCheckpointIO")]
        if cfg.trainer.get("default_root_dir") is None:
            cfg.trainer.default_root_dir = str(run_dir)
        if self.subcommand == "fit" and not cfg.checkpoint.get("dirpath"):
            cfg.checkpoint.dirpath = str(run_dir / "checkpoints")
        ckpt_path = cfg.get("ckpt_path")
        if ckpt_path and ckpt_path not in _CKPT_ALIASES and not Path(ckpt_path).is_file():
            raise FileNotFoundError(f"--ckpt_path {ckpt_path}: no such checkpoint file")
        if self.subcommand == "fit" and ckpt_path is None and _global_rank() == 0:
            self._protect_run_dir(run_dir, overwrite=cfg.overwrite)

    @staticmethod
    def _protect_run_dir(run_dir: Path, overwrite: bool) -> None:
        if not run_dir.exists() or not any(run_dir.iterdir()):
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
        log_dir = Path(getattr(self.trainer.logger, "log_dir", None) or self.run_dir)
        method = type(model).__name__
        reference, quality = model.reference_results.get(split, []), model.sr_quality.get(split, [])
        write_results(rows, log_dir, split, reference, quality, method)
        write_scores(model.eval_scores.get(split, {}), log_dir, split)
        tables = [
            results_table(rows, title=f"{method}: {split} verification (10-fold accuracy)"),
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


def main(args: list[str] | None = None) -> Any:
    """Run the crossres command line (``crossres`` and ``lightning`` console scripts, ``python -m crossres``).

    ``fit``/``validate``/``test``/``predict`` go to :class:`CrossResCLI`; ``report``/``export``/``align`` to
    :mod:`crossres.commands`.
    """
    argv = sys.argv[1:] if args is None else args
    if argv and argv[0] in _COMMANDS:
        from crossres.commands import run

        code = run(argv)
        if args is None:
            sys.exit(code)
        return code
    cli = CrossResCLI(
        CrossResMethod,
        FaceDataModule,
        subclass_mode_model=True,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        args=args,
    )
    # A console script passes main()'s return value to sys.exit: anything but None would exit with status 1.
    return cli if args is not None else None
