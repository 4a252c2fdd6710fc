"""insightface verification ``.bin`` pair sets (``lfw.bin``, ``agedb_30.bin``, ...) behind a restricted unpickler."""

from __future__ import annotations

import io
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from crossres.data.codec import LazyJPEGImages, _check_writable, encode_jpeg_bytes
from crossres.data.pairs import PairSet
from crossres.errors import InputError

__all__ = ["export_pair_set", "load_bin", "write_bin"]


class _RefusedGlobal(InputError, pickle.UnpicklingError):
    """A ``.bin`` pickle that needs a global other than the few numpy reconstructors."""


_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


def _numpy_global(name: str) -> Any:
    if name in ("ndarray", "dtype"):
        return getattr(np, name)
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    return getattr(multiarray, name)


class _BinUnpickler(pickle.Unpickler):
    """Unpickler for insightface ``.bin`` files: only bytes, lists, bools and plain numpy arrays are allowed.

    Any other global (``os.system``, ``builtins.eval``, ...) is refused before it is looked up, so a malicious
    file cannot run code.
    """

    def __init__(self, file: io.BufferedReader, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS:
            return _numpy_global(name)
        if (module, name) == ("_codecs", "encode"):  # how protocol-2 pickles of Python 3 store bytes
            import _codecs

            return _codecs.encode
        raise _RefusedGlobal(
            f"{self.path}: refused to load global {module}.{name}; an insightface .bin file holds only a list of "
            "JPEG bytes and a list of bools (numpy arrays allowed). The file may be malicious or not a .bin set."
        )


def load_bin(path: str | Path, name: str | None = None) -> PairSet:
    """Load an insightface verification ``.bin`` (``lfw.bin``, ``agedb_30.bin``, ``cfp_fp.bin``, ...).

    The file is a pickle of ``(list of encoded images, issame list)``; pair ``k`` is images ``(2k, 2k + 1)``.
    Files of the original release were written by Python 2 (``str`` images, read here as bytes through
    ``encoding="bytes"``), newer ones by Python 3 (``bytes``); images stored as 1-D ``uint8`` numpy arrays and
    ``issame`` stored as a numpy bool array are accepted too. The pickle is read with a restricted unpickler
    that refuses every global but the few numpy reconstructors. Images stay encoded and are decoded on access.

    Args:
        path: the ``.bin`` file.
        name: pair-set name used in metric keys; default: the file stem (``"lfw"``, ``"agedb_30"``, ...).

    Returns:
        The pair set, with :class:`LazyJPEGImages` images.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        pickle.UnpicklingError: if the file needs a refused global (e.g. a malicious pickle).
        InputError: if the file is truncated or not a pickle, or the content is not ``(images, issame)`` with
            ``len(images) == 2 * len(issame)`` (a ``ValueError``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (expected an insightface verification .bin such as lfw.bin)")
    with open(path, "rb") as f:
        try:
            content = _BinUnpickler(f, path).load()  # type: ignore[arg-type]
        except _RefusedGlobal:
            raise
        except Exception as err:  # truncated, not a pickle, ...
            raise InputError(
                f"{path} is not a readable insightface .bin pickle ({type(err).__name__}: {err}); the file may be "
                "truncated (an interrupted download or copy) or not a .bin pair set"
            ) from err
    if not isinstance(content, tuple | list) or len(content) != 2:
        raise InputError(f"{path}: expected a pickled (images, issame) pair, got {type(content).__name__}")
    bins, issame = content
    encoded: list[bytes] = []
    for i, entry in enumerate(bins):
        if isinstance(entry, bytes | bytearray):
            encoded.append(bytes(entry))
        elif isinstance(entry, np.ndarray) and entry.dtype == np.uint8 and entry.ndim == 1:
            encoded.append(entry.tobytes())
        else:
            kind = f"array {entry.dtype} {entry.shape}" if isinstance(entry, np.ndarray) else type(entry).__name__
            raise InputError(f"{path}: image {i} is {kind}; expected encoded image bytes (JPEG/PNG)")
    same = torch.as_tensor(np.asarray(issame, dtype=bool).reshape(-1))
    if len(encoded) != 2 * same.numel():
        raise InputError(f"{path}: {len(encoded)} images for {same.numel()} pairs; expected 2 images per pair")
    pairs = torch.arange(len(encoded), dtype=torch.long).reshape(-1, 2)
    return PairSet(name=name or path.stem, images=LazyJPEGImages(encoded), pairs=pairs, issame=same)


def write_bin(
    path: str | Path,
    images: Sequence[Tensor | bytes],
    issame: Sequence[bool] | Tensor,
    quality: int = 95,
    overwrite: bool = False,
) -> None:
    """Write an insightface verification ``.bin``: pickle of ``(list of JPEG bytes, list of bools)``.

    Args:
        path: output file.
        images: ``2 * P`` images (pair ``k`` = images ``2k, 2k + 1``), tensors or encoded bytes.
        issame: ``P`` flags.
        quality: JPEG quality of encoded tensors.
        overwrite: replace an existing file instead of raising.

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is false.
        ValueError: if ``len(images) != 2 * len(issame)``.
    """
    path = Path(path)
    _check_writable([path], overwrite)
    flags = [bool(v) for v in (issame.tolist() if isinstance(issame, Tensor) else issame)]
    if len(images) != 2 * len(flags):
        raise ValueError(f"write_bin needs 2 images per pair: got {len(images)} images for {len(flags)} pairs")
    encoded = [encode_jpeg_bytes(image, quality) for image in images]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump((encoded, flags), f, protocol=4)


def export_pair_set(pair_set: PairSet, path: str | Path, quality: int = 95, overwrite: bool = False) -> None:
    """Write any :class:`PairSet` as an insightface ``.bin`` (images duplicated per pair, as the format wants).

    Args:
        pair_set: the pairs to write.
        path: output ``.bin`` file.
        quality: JPEG quality.
        overwrite: replace an existing file instead of raising.
    """
    images = [pair_set.images[int(i)] for i in pair_set.pairs.reshape(-1)]
    write_bin(path, images, pair_set.issame, quality=quality, overwrite=overwrite)
