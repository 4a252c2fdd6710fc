"""Load backbone weights from insightface ``backbone.pth`` files or Lightning checkpoints."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["extract_state_dict", "load_backbone_weights"]

_LISTED = 10  # keys shown per category in error messages


def _clean_key(key: str) -> str:
    # torch.compile wraps modules as `_orig_mod`; DDP / DataParallel as a leading `module`.
    parts = [part for part in key.split(".") if part != "_orig_mod"]
    if parts and parts[0] == "module":
        parts = parts[1:]
    return ".".join(parts)


def _read(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise FileNotFoundError(
            f"backbone weights {str(path)!r} not found (expected an insightface backbone.pth or a Lightning .ckpt)"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{str(path)!r} cannot be read with torch.load(weights_only=True): it holds objects other than tensors "
            f"and plain containers, which crossres refuses to unpickle ({error})"
        ) from error
    if isinstance(payload, Mapping) and isinstance(payload.get("state_dict"), Mapping):
        payload = payload["state_dict"]  # Lightning checkpoint
    if not isinstance(payload, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in payload.items()
    ):
        raise ValueError(
            f"{str(path)!r} is neither a state dict (str -> Tensor) nor a Lightning checkpoint with a 'state_dict'"
        )
    return {_clean_key(key): value for key, value in payload.items()}


def _find_prefix(state_dict: Mapping[str, Tensor], wanted: set[str], path: Path) -> str:
    if wanted <= state_dict.keys():
        return ""
    candidates: set[str] = set()
    for key in state_dict:
        parts = key.split(".")
        candidates.update(".".join(parts[:i]) + "." for i in range(1, len(parts)) if ".".join(parts[i:]) in wanted)
    complete = [candidate for candidate in sorted(candidates) if all(candidate + name in state_dict for name in wanted)]
    if len(complete) == 1:
        return complete[0]
    if len(complete) > 1:
        raise ValueError(
            f"{str(path)!r} holds several complete backbones under prefixes {complete}; pass prefix= to choose one"
        )
    if any(key.startswith("backbone.") for key in state_dict):
        return "backbone."  # incomplete backbone: the strict check below lists what is missing
    return ""


def extract_state_dict(path: str | Path, keys: set[str] | None = None, prefix: str | None = None) -> dict[str, Tensor]:
    """Read a state dict and strip the prefixes of a Lightning checkpoint, ``torch.compile`` and DDP.

    Args:
        path: An insightface ``backbone.pth`` (plain state dict) or a Lightning checkpoint (``state_dict`` key).
        keys: The state-dict keys of the target module, used to auto-detect the prefix when ``prefix`` is None.
        prefix: Key prefix of the backbone in the file, e.g. ``"backbone."``, ``"guide."`` or
            ``"model.backbone."``; ``""`` for none; ``None`` to detect it from ``keys`` (a prefix under which all
            ``keys`` are present, else ``"backbone."`` if such keys exist, else none).

    Returns:
        The state dict with the prefix, ``_orig_mod.`` and a leading ``module.`` removed from every key.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not a state dict or checkpoint, ``prefix`` matches no key, or several
            complete backbones make the prefix ambiguous.
    """
    return _extract(Path(path), keys, prefix)[0]


def _extract(path: Path, keys: set[str] | None, prefix: str | None) -> tuple[dict[str, Tensor], str]:
    state_dict = _read(path)
    if prefix is None:
        prefix = _find_prefix(state_dict, keys, path) if keys else ""
    if prefix and not prefix.endswith("."):
        prefix += "."
    if not prefix:
        return state_dict, prefix
    selected = {_clean_key(key[len(prefix) :]): value for key, value in state_dict.items() if key.startswith(prefix)}
    if not selected:
        heads = sorted({key.split(".")[0] + "." for key in state_dict})
        raise ValueError(f"prefix {prefix!r} matches no key in {str(path)!r}; its top-level prefixes are {heads}")
    return selected, prefix


def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:_LISTED]) + (", ..." if len(items) > _LISTED else "")
    return f"{len(items)} {title}: [{shown}]"


def load_backbone_weights(
    backbone: nn.Module, path: str | Path, strict: bool = True, prefix: str | None = None
) -> None:
    """Load weights into a backbone from an insightface ``backbone.pth`` or a Lightning checkpoint.

    The file is read with ``torch.load(path, map_location="cpu", weights_only=True)``. ``_orig_mod.``
    (``torch.compile``) and a leading ``module.`` (DDP) are stripped from the keys; a Lightning checkpoint's
    ``state_dict`` is used with the backbone's prefix removed.

    Args:
        backbone: The module to load into, e.g. from :func:`crossres.nn.build_backbone`.
        path: The weights file.
        strict: If True, missing or unexpected keys are an error; otherwise the matching keys are loaded and the
            rest reported in a warning. Shape mismatches are always an error.
        prefix: Key prefix of the backbone in the file (``"backbone."``, ``"guide."``, ``"model.backbone."``, ``""``
            for none); ``None`` detects it (see :func:`extract_state_dict`).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is unreadable under ``weights_only=True`` or the prefix is ambiguous or unknown.
        RuntimeError: If keys are missing or unexpected (``strict``) or shapes differ, listing the first 10 of each.
    """
    own = backbone.state_dict()
    state_dict, used_prefix = _extract(Path(path), set(own), prefix)
    missing = [key for key in own if key not in state_dict]
    unexpected = [key for key in state_dict if key not in own]
    mismatched = [
        f"{key}: file {tuple(value.shape)} vs model {tuple(own[key].shape)}"
        for key, value in state_dict.items()
        if key in own and value.shape != own[key].shape
    ]
    problems = []
    if strict and missing:
        problems.append(_listing("missing keys", missing))
    if strict and unexpected:
        problems.append(_listing("unexpected keys", unexpected))
    if mismatched:
        problems.append(_listing("shape mismatches", mismatched))
    if problems:
        raise RuntimeError(
            f"weights in {str(path)!r} do not fit {type(backbone).__name__} "
            f"(prefix={used_prefix!r}, strict={strict}): " + "; ".join(problems)
        )
    if missing or unexpected:
        warnings.warn(
            f"loaded {str(path)!r} non-strictly: "
            + "; ".join(_listing(t, k) for t, k in (("missing keys", missing), ("unexpected keys", unexpected)) if k),
            stacklevel=2,
        )
    backbone.load_state_dict({key: value for key, value in state_dict.items() if key in own}, strict=False)
