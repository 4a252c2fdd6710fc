"""Load any crossres checkpoint as the method that wrote it."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

from crossres.methods.base import CrossResMethod

__all__ = ["load_method"]


def load_method(path: str | Path, map_location: str | torch.device = "cpu", **kwargs: Any) -> CrossResMethod:
    """Load a checkpoint written by ``crossres fit`` or a ``Trainer`` as its own method class.

    ``Baseline.load_from_checkpoint`` needs the class up front; this reads it from the checkpoint, where the CLI
    stores it as ``_class_path`` among the hyper-parameters. A checkpoint of a plain ``Trainer`` has no class path:
    load it with its class's own ``load_from_checkpoint``. The file is read with ``weights_only=True``, so nothing
    in it is executed.

    Args:
        path: the ``.ckpt`` file.
        map_location: where to put the tensors.
        **kwargs: hyper-parameters to override, as for ``load_from_checkpoint``.

    Returns:
        The method, in eval mode.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the checkpoint does not name a crossres method.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    class_path = checkpoint.get("hyper_parameters", {}).get("_class_path")
    if not isinstance(class_path, str) or "." not in class_path:
        raise ValueError(
            f"{path} does not name its method (no hyper_parameters._class_path, as `crossres fit` writes); "
            "load it with its class, e.g. crossres.methods.Baseline.load_from_checkpoint(path)"
        )
    module_name, class_name = class_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, CrossResMethod)):
        raise ValueError(f"{path}: {class_path} is not a crossres method")
    model = cls.load_from_checkpoint(path, map_location=map_location, weights_only=True, **kwargs)
    return model.eval()
