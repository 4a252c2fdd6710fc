"""Readers and writers for real face data: insightface RecordIO and ``.bin``, identity folders, LFW ``pairs.txt``.

No mxnet: the MXNet/dmlc RecordIO container, the insightface ``IRHeader`` and the ``.bin`` pickles are parsed
here directly. Every reader yields ``uint8`` ``(3, H, W)`` RGB tensors, as ``docs/design.md`` fixes.

RecordIO layout (dmlc-core ``recordio.h``/``recordio.cc``, mxnet ``recordio.py``, insightface ``face2rec2.py``):

* a physical record is ``uint32 magic 0xced7230a``, ``uint32 lrecord`` (``cflag = lrecord >> 29``,
  ``length = lrecord & (2**29 - 1)``), ``length`` payload bytes, zero padding to a multiple of 4. A payload that
  contains the magic number at a 4-byte aligned position is split there into parts (``cflag`` 1 = first,
  2 = middle, 3 = last, 0 = whole record); the reader re-inserts the magic between the parts.
* a logical record is ``struct "<IfQQ"`` (``flag``, ``label`` float32, ``id``, ``id2``), then ``flag`` float32
  labels when ``flag > 0`` (the class is the first of them), then the encoded image.
* ``train.idx`` has one ``key<TAB>byte offset`` line per record. Record 0 is a header-only record whose labels
  are ``(first identity record, end of identity records)``: images are records ``1 .. label[0] - 1``, and
  records ``label[0] .. label[1] - 1`` hold one ``(first image, end image)`` range per identity.
* ``property`` is one line ``num_classes,height,width``.
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import pickle
import re
import struct
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image, encode_jpeg

from crossres.data.pairs import PairSet
from crossres.errors import InputError

__all__ = [
    "CorruptRecordError",
    "ImageFiles",
    "ImageFolderFaces",
    "LazyJPEGImages",
    "RecordIOFaces",
    "decode_image_bytes",
    "encode_jpeg_bytes",
    "export_dataset",
    "export_pair_set",
    "folder_pairs",
    "load_bin",
    "load_lfw_pairs",
    "write_bin",
    "write_image_folder",
    "write_recordio",
]

log = logging.getLogger(__name__)

RECORDIO_MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", RECORDIO_MAGIC)
_LENGTH_MASK = (1 << 29) - 1
_IR_FORMAT = "<IfQQ"  # mxnet IRHeader: flag, label, id, id2
_IR_SIZE = struct.calcsize(_IR_FORMAT)
_LAYOUT = "expected insightface layout: train.rec, train.idx, property"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


class CorruptRecordError(InputError):
    """A training item that cannot be read: a RecordIO record or an image file of an identity folder.

    A record: bad magic, truncated, bad header or undecodable image; an image file: undecodable or not of the
    configured size.
    """


class _RefusedGlobal(InputError, pickle.UnpicklingError):
    """A ``.bin`` pickle that needs a global other than the few numpy reconstructors."""


# ----------------------------------------------------------------------------------------------- images
def decode_image_bytes(data: bytes | bytearray | memoryview | np.ndarray) -> Tensor:
    """Decode an encoded JPEG/PNG image to ``uint8`` RGB ``(3, H, W)``.

    Args:
        data: the encoded bytes.

    Returns:
        The decoded image; grayscale images are expanded to three channels.

    Raises:
        RuntimeError: if the bytes are not a decodable JPEG/PNG image.
    """
    buffer = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1)
    if buffer.size == 0:
        raise RuntimeError("empty image data")
    return decode_image(torch.from_numpy(buffer.copy()), mode=ImageReadMode.RGB)


def encode_jpeg_bytes(image: Tensor | bytes, quality: int = 95) -> bytes:
    """Encode an image tensor as JPEG; bytes are passed through unchanged (assumed already encoded).

    Args:
        image: ``uint8`` ``(3, H, W)``/``(1, H, W)``, or float in ``[0, 1]``, or encoded bytes.
        quality: JPEG quality, 1-100.

    Returns:
        The JPEG bytes.

    Raises:
        ValueError: if ``image`` is not a ``(C, H, W)`` tensor with 1 or 3 channels.
    """
    if isinstance(image, bytes | bytearray):
        return bytes(image)
    if not isinstance(image, Tensor) or image.ndim != 3 or image.shape[0] not in (1, 3):
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"image must be a (3, H, W) or (1, H, W) tensor or encoded bytes, got {shape}")
    if image.is_floating_point():
        image = (image.detach().float() * 255.0).round().clamp(0, 255).to(torch.uint8)
    return encode_jpeg(image.detach().cpu().contiguous(), quality=quality).numpy().tobytes()


class LazyJPEGImages(Sequence[Tensor]):
    """Encoded images kept in memory and decoded on access (``len()`` and ``[i]`` -> ``uint8 (3, H, W)``).

    Args:
        encoded: one encoded JPEG/PNG image per entry.
    """

    def __init__(self, encoded: Sequence[bytes]) -> None:
        self.encoded = list(encoded)

    def __len__(self) -> int:
        return len(self.encoded)

    @overload
    def __getitem__(self, index: int) -> Tensor: ...

    @overload
    def __getitem__(self, index: slice) -> list[Tensor]: ...

    def __getitem__(self, index: int | slice) -> Tensor | list[Tensor]:
        if isinstance(index, slice):
            return [decode_image_bytes(b) for b in self.encoded[index]]
        return decode_image_bytes(self.encoded[index])


class ImageFiles(Sequence[Tensor]):
    """Image files decoded on access (``len()`` and ``[i]`` -> ``uint8 (3, H, W)``).

    Args:
        paths: one image file per entry.
    """

    def __init__(self, paths: Sequence[str | Path]) -> None:
        self.paths = [Path(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    @overload
    def __getitem__(self, index: int) -> Tensor: ...

    @overload
    def __getitem__(self, index: slice) -> list[Tensor]: ...

    def __getitem__(self, index: int | slice) -> Tensor | list[Tensor]:
        if isinstance(index, slice):
            return [_read_image_file(p) for p in self.paths[index]]
        return _read_image_file(self.paths[index])


def _read_image_file(path: Path) -> Tensor:
    try:
        return decode_image_bytes(path.read_bytes())
    except RuntimeError as err:
        raise RuntimeError(f"cannot decode image {path}: {err}") from err


def _check_writable(paths: Iterable[Path], overwrite: bool) -> None:
    for path in paths:
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")


# --------------------------------------------------------------------------------------------- RecordIO
def _parse_idx(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``train.idx`` into ``(keys, offsets)`` int64 arrays, in file order."""
    tokens = path.read_text().split()
    if len(tokens) % 2:
        raise ValueError(f"{path}: expected lines 'key<TAB>offset', found an odd number of fields")
    try:
        table = np.array(tokens, dtype=np.int64).reshape(-1, 2)
    except ValueError as err:
        raise ValueError(f"{path}: expected integer lines 'key<TAB>offset' ({err})") from err
    return table[:, 0].copy(), table[:, 1].copy()


def _split_ir_header(payload: bytes) -> tuple[int, np.ndarray, bytes]:
    """Split an insightface/mxnet record into ``(flag, labels, body)`` (mxnet ``recordio.unpack``)."""
    if len(payload) < _IR_SIZE:
        raise CorruptRecordError(f"record of {len(payload)} bytes is shorter than its {_IR_SIZE}-byte IRHeader")
    flag, label, _, _ = struct.unpack_from(_IR_FORMAT, payload)
    body = payload[_IR_SIZE:]
    if flag == 0:
        return 0, np.array([label], dtype=np.float32), body
    if len(body) < 4 * flag:
        raise CorruptRecordError(f"IRHeader announces {flag} labels but only {len(body)} bytes follow")
    labels = np.frombuffer(body[: 4 * flag], dtype="<f4").astype(np.float32)
    return int(flag), labels, body[4 * flag :]


class RecordIOFaces(Dataset):
    """An insightface RecordIO training set (``faces_webface_112x112``, ``faces_emore``/MS1M-ArcFace, ...).

    Items are ``{"image": uint8 (3, H, W), "label": int}``. The ``.rec`` file is opened lazily, once per
    process (the object pickles without its file handle), so DataLoader workers and DDP ``spawn`` work.

    Corrupt records: by default reading one raises :class:`CorruptRecordError` naming the file, the record and
    the ``skip_corrupt`` switch. With ``skip_corrupt=True`` the next readable record is returned instead, and
    every item gains ``"corrupt"``: the number of unreadable records skipped to produce it (0 almost always).
    Summing ``batch["corrupt"]`` over an epoch therefore counts the skips of all DataLoader workers;
    ``self.num_corrupt`` counts only those of the current process (each worker holds its own copy), and each
    skipped record is logged once per process at WARNING level.

    Args:
        root: directory holding ``train.rec``, ``train.idx`` and ``property``.
        transform: optional callable applied to the ``uint8`` image tensor.
        skip_corrupt: replace unreadable records by the next readable one instead of raising.

    Raises:
        FileNotFoundError: if ``root`` lacks one of the three files.
        ValueError: if ``train.idx`` or ``property`` is malformed.
    """

    def __init__(self, root: str | Path, transform: Callable | None = None, skip_corrupt: bool = False) -> None:
        self.root = Path(root)
        self.transform = transform
        self.skip_corrupt = skip_corrupt
        self.rec_path = self.root / "train.rec"
        self.idx_path = self.root / "train.idx"
        self.property_path = self.root / "property"
        for path in (self.rec_path, self.idx_path, self.property_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path.name} not found under {self.root} ({_LAYOUT})")
        self.num_classes, height, width = self._read_property()
        self.image_size = (height, width)
        keys, offsets = _parse_idx(self.idx_path)
        if keys.size == 0:
            raise ValueError(f"{self.idx_path} is empty ({_LAYOUT})")
        self._lookup = _KeyLookup(keys, offsets)
        self.num_corrupt = 0
        self._fd: int | None = None
        self._fd_pid: int | None = None
        self._reported: set[int] = set()
        self.header0: tuple[int, int] | None = None
        self.keys = self._image_keys(keys)
        self._close()  # reopened lazily by whichever process reads first

    def _read_property(self) -> tuple[int, int, int]:
        text = self.property_path.read_text().strip()
        try:
            num_classes, height, width = (int(v) for v in text.split(","))
        except ValueError as err:
            raise ValueError(
                f"{self.property_path}: expected one line 'num_classes,height,width', got {text[:80]!r}"
            ) from err
        return num_classes, height, width

    def _image_keys(self, keys: np.ndarray) -> np.ndarray:
        if 0 not in self._lookup:
            return keys
        try:
            flag, labels, _ = _split_ir_header(self._read_record(0))
        except CorruptRecordError as err:
            raise CorruptRecordError(f"header record 0 of {self.rec_path} is unreadable: {err}") from err
        if flag == 0:  # no header record: every record is an image
            return keys
        # insightface MXFaceDataset: record 0 labels = (first identity record, end), images are 1 .. labels[0]-1.
        first_identity = int(labels[0])
        self.header0 = (first_identity, int(labels[1]) if labels.size > 1 else first_identity)
        return np.arange(1, first_identity, dtype=np.int64)

    # pickling: the file descriptor stays behind, each process opens its own.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fd"] = None
        state["_fd_pid"] = None
        state["_reported"] = set()
        return state

    def _close(self) -> None:
        fd, self._fd = getattr(self, "_fd", None), None
        if fd is not None and getattr(self, "_fd_pid", None) == os.getpid():
            try:
                os.close(fd)
            except OSError:
                pass

    def __del__(self) -> None:
        self._close()

    def _file(self) -> int:
        if self._fd is None or self._fd_pid != os.getpid():
            self._fd = os.open(self.rec_path, os.O_RDONLY)
            self._fd_pid = os.getpid()
        return self._fd

    def _pread(self, size: int, offset: int) -> bytes:
        data = os.pread(self._file(), size, offset)
        if len(data) != size:
            raise CorruptRecordError(
                f"truncated: needed {size} bytes at offset {offset}, the file ends after {len(data)}"
            )
        return data

    def _read_record(self, key: int) -> bytes:
        """Read the logical record ``key``, joining multi-part records (dmlc ``RecordIOReader::ReadRecord``)."""
        offset = self._lookup.get(key)
        if offset is None:
            raise CorruptRecordError(f"key {key} is not listed in {self.idx_path.name}")
        parts: list[bytes] = []
        first = True
        while True:
            magic, lrecord = struct.unpack("<II", self._pread(8, offset))
            if magic != RECORDIO_MAGIC:
                raise CorruptRecordError(
                    f"bad magic 0x{magic:08x} at offset {offset} (expected 0x{RECORDIO_MAGIC:08x})"
                )
            cflag, length = lrecord >> 29, lrecord & _LENGTH_MASK
            if (first and cflag not in (0, 1)) or (not first and cflag not in (2, 3)):
                raise CorruptRecordError(f"unexpected continuation flag {cflag} at offset {offset}")
            parts.append(self._pread(length, offset + 8) if length else b"")
            offset += 8 + ((length + 3) & ~3)
            if cflag in (0, 3):
                return b"".join(parts)
            parts.append(_MAGIC_BYTES)
            first = False

    def _load(self, key: int) -> tuple[Tensor, int]:
        flag, labels, body = _split_ir_header(self._read_record(key))
        label = float(labels[0])
        if not np.isfinite(label) or label < 0 or label != int(label):
            raise CorruptRecordError(f"label {label} is not a non-negative integer")
        try:
            image = decode_image_bytes(body)
        except RuntimeError as err:
            raise CorruptRecordError(f"image does not decode ({str(err).splitlines()[-1]})") from err
        return image, int(label)

    def __len__(self) -> int:
        return int(self.keys.size)

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} records in {self.rec_path}")
        index %= n
        for skipped in range(n):
            key = int(self.keys[(index + skipped) % n])
            try:
                image, label = self._load(key)
            except (CorruptRecordError, OSError, struct.error) as err:
                if not self.skip_corrupt:
                    raise CorruptRecordError(
                        f"corrupt record {key} (item {(index + skipped) % n}) in {self.rec_path}: {err}. "
                        "Set skip_corrupt=True (data config: skip_corrupt: true) to skip unreadable records."
                    ) from err
                self.num_corrupt += 1
                if key not in self._reported:
                    self._reported.add(key)
                    log.warning("skipping corrupt record %d in %s: %s", key, self.rec_path, err)
                continue
            if self.transform is not None:
                image = self.transform(image)
            item: dict[str, Any] = {"image": image, "label": label}
            if self.skip_corrupt:
                item["corrupt"] = skipped
            return item
        raise CorruptRecordError(f"no readable record in {self.rec_path}: all {n} records are corrupt")


class _KeyLookup:
    """Record key -> byte offset: a dense array when keys are compact (the usual 0..N), else a sorted search."""

    def __init__(self, keys: np.ndarray, offsets: np.ndarray) -> None:
        if keys.min() >= 0 and keys.max() < 4 * keys.size + 16:
            self.dense: np.ndarray | None = np.full(int(keys.max()) + 1, -1, dtype=np.int64)
            self.dense[keys] = offsets
        else:
            self.dense = None
            order = np.argsort(keys, kind="stable")
            self.sorted_keys, self.sorted_offsets = keys[order], offsets[order]

    def get(self, key: int) -> int | None:
        if self.dense is not None:
            if 0 <= key < self.dense.size and self.dense[key] >= 0:
                return int(self.dense[key])
            return None
        pos = int(np.searchsorted(self.sorted_keys, key))
        if pos < self.sorted_keys.size and self.sorted_keys[pos] == key:
            return int(self.sorted_offsets[pos])
        return None

    def __contains__(self, key: int) -> bool:
        return self.get(key) is not None


def _encode_record(flag: int, labels: Sequence[float], key: int, body: bytes) -> bytes:
    """One insightface record: IRHeader + (``flag`` float32 labels if ``flag > 0``) + body (mxnet ``pack``)."""
    if flag == 0:
        return struct.pack(_IR_FORMAT, 0, float(labels[0]), key, 0) + body
    return struct.pack(_IR_FORMAT, flag, 0.0, key, 0) + np.asarray(labels, dtype="<f4").tobytes() + body


def _write_physical(stream: io.BufferedWriter, payload: bytes) -> None:
    """Write one logical record, split at aligned magic numbers (dmlc ``RecordIOWriter::WriteRecord``)."""
    if len(payload) >= 1 << 29:
        raise ValueError(f"RecordIO records must be smaller than 2**29 bytes, got {len(payload)}")
    start = 0
    for pos in range(0, len(payload) - 3, 4):
        if payload[pos : pos + 4] == _MAGIC_BYTES:
            cflag = 1 if start == 0 else 2
            stream.write(struct.pack("<II", RECORDIO_MAGIC, (cflag << 29) | (pos - start)))
            stream.write(payload[start:pos])
            start = pos + 4
    cflag = 3 if start else 0
    tail = payload[start:]
    stream.write(struct.pack("<II", RECORDIO_MAGIC, (cflag << 29) | len(tail)))
    stream.write(tail)
    stream.write(b"\0" * (-len(tail) % 4))


def write_recordio(
    root: str | Path,
    items: Iterable[tuple[Tensor | bytes, int]],
    image_size: tuple[int, int] | None = None,
    quality: int = 95,
    num_classes: int | None = None,
    overwrite: bool = False,
) -> dict[str, int]:
    """Write ``train.rec``, ``train.idx`` and ``property`` in the insightface layout.

    Images are grouped by label (stable order within a label): records ``1..N`` are the images, record 0 the
    header ``(N + 1, N + 1 + identities)`` and records ``N + 1 ..`` one ``(first image, end)`` range per label,
    as insightface's ``face2rec2.py`` writes them. Encoded payloads are staged in a temporary file, so memory
    stays O(number of images) whatever the order of ``items``.

    Args:
        root: output directory (created).
        items: ``(image, label)`` pairs; images as ``uint8`` ``(3, H, W)`` tensors or encoded JPEG bytes.
        image_size: ``(h, w)`` written to ``property``; ``None`` takes the size of the first image.
        quality: JPEG quality of encoded tensors.
        num_classes: written to ``property``; ``None`` uses ``max(label) + 1``.
        overwrite: replace existing files instead of raising.

    Returns:
        ``{"images": N, "identities": number of distinct labels, "num_classes": C}``.

    Raises:
        FileExistsError: if an output file exists and ``overwrite`` is false.
        ValueError: on a negative label, no items, or ``num_classes`` smaller than the labels need.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rec_path, idx_path, property_path = root / "train.rec", root / "train.idx", root / "property"
    _check_writable((rec_path, idx_path, property_path), overwrite)
    stage_path = root / "train.rec.staging"
    entries: list[tuple[int, int, int]] = []  # (label, offset, length) in the staging file
    try:
        with open(stage_path, "wb") as stage:
            offset = 0
            for image, label in items:
                label = int(label)
                if label < 0:
                    raise ValueError(f"labels must be non-negative integers, got {label}")
                if image_size is None:
                    decoded = image if isinstance(image, Tensor) else decode_image_bytes(image)
                    image_size = (int(decoded.shape[-2]), int(decoded.shape[-1]))
                data = encode_jpeg_bytes(image, quality)
                stage.write(data)
                entries.append((label, offset, len(data)))
                offset += len(data)
        if not entries:
            raise ValueError("write_recordio got no items")
        labels_present = sorted({e[0] for e in entries})
        classes = labels_present[-1] + 1 if num_classes is None else int(num_classes)
        if classes <= labels_present[-1]:
            raise ValueError(f"num_classes={classes} but labels go up to {labels_present[-1]}")
        order = sorted(range(len(entries)), key=lambda i: entries[i][0])
        num_images = len(entries)
        ranges: list[list[int]] = []  # [first key, end key) per label
        previous: int | None = None
        with open(stage_path, "rb") as stage, open(rec_path, "wb") as rec, open(idx_path, "w") as idx:
            header = (float(num_images + 1), float(num_images + 1 + len(labels_present)))
            idx.write(f"0\t{rec.tell()}\n")
            _write_physical(rec, _encode_record(2, header, 0, b""))
            for key, i in enumerate(order, start=1):
                label, start, length = entries[i]
                if label != previous:
                    ranges.append([key, key + 1])
                    previous = label
                ranges[-1][1] = key + 1
                stage.seek(start)
                idx.write(f"{key}\t{rec.tell()}\n")
                _write_physical(rec, _encode_record(0, (float(label),), key, stage.read(length)))
            for key, (first_key, end_key) in enumerate(ranges, start=num_images + 1):
                idx.write(f"{key}\t{rec.tell()}\n")
                _write_physical(rec, _encode_record(2, (float(first_key), float(end_key)), key, b""))
        assert image_size is not None
        property_path.write_text(f"{classes},{image_size[0]},{image_size[1]}\n")
    finally:
        stage_path.unlink(missing_ok=True)
    return {"images": num_images, "identities": len(labels_present), "num_classes": classes}


# ------------------------------------------------------------------------------------------------ .bin
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


# --------------------------------------------------------------------------------------- image folders
def _scan_identity_folder(root: Path, extensions: Sequence[str]) -> tuple[list[str], list[tuple[Path, int]]]:
    if not root.is_dir():
        raise FileNotFoundError(f"{root} not found (expected an identity folder: <root>/<identity>/*.jpg)")
    suffixes = {e.lower() for e in extensions}
    classes: list[str] = []
    samples: list[tuple[Path, int]] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
        if files:
            samples.extend((p, len(classes)) for p in files)
            classes.append(folder.name)
    if not samples:
        raise FileNotFoundError(
            f"no images ({', '.join(sorted(suffixes))}) found under {root}/<identity>/ "
            "(expected an identity folder: <root>/<identity>/*.jpg)"
        )
    return classes, samples


def _keep_identities(
    root: Path, classes: list[str], samples: list[tuple[Path, int]], identities: Collection[str]
) -> tuple[list[str], list[tuple[Path, int]], list[str]]:
    """Restrict a scanned identity folder to ``identities``: ``(classes, relabelled samples, listed but absent)``."""
    wanted = set(identities)
    old_labels = [label for label, name in enumerate(classes) if name in wanted]
    kept = [classes[label] for label in old_labels]
    if not kept:
        examples = ", ".join(sorted(wanted)[:3]) or "none"
        raise InputError(
            f"none of the {len(wanted)} identities asked for ({examples}, ...) has images under {root}; the names "
            f"must be folder names of {root}/<identity>/ (e.g. {classes[0]!r})"
        )
    new_label = {old: new for new, old in enumerate(old_labels)}
    kept_samples = [(path, new_label[old]) for path, old in samples if old in new_label]
    return kept, kept_samples, sorted(wanted - set(kept))


class ImageFolderFaces(Dataset):
    """Identity folders ``root/<identity>/*.jpg|png``: items ``{"image": uint8 (3, H, W), "label": int}``.

    Labels index the sorted names of the identity folders that contain at least one image. With ``landmarks``,
    items also carry ``"landmarks"``: float32 ``(68, 2)`` iBUG points, which feed RIM's heatmap and parsing
    priors on real faces.

    An image that does not decode, or (with ``image_size``) has another size, raises :class:`CorruptRecordError`
    naming the file; with ``skip_corrupt=True`` the next readable image is returned instead, and every item gains
    ``"corrupt"``: the number of images skipped to produce it (as :class:`RecordIOFaces` does).

    Args:
        root: the dataset directory.
        transform: optional callable applied to the ``uint8`` image tensor (not to the landmarks).
        extensions: accepted file suffixes (case-insensitive).
        identities: only these identity folders (e.g. the training people of LFW's ``peopleDevTrain.txt``); listed
            names without images under ``root`` are kept in ``missing_identities`` (none of them there: an
            :class:`~crossres.errors.InputError`). ``None``: every folder.
        landmarks: 68 landmarks per image, paths relative to ``root``: the ``landmarks.json`` that
            ``crossres align`` writes beside its output, or any JSON/CSV in iBUG order
            (:func:`crossres.data.landmarks.load_landmarks68`).
        image_size: ``(h, w)`` every image must have (a batch stacks them); ``None``: any size.
        skip_corrupt: replace unreadable images by the next readable one instead of raising.

    Raises:
        FileNotFoundError: if ``root`` is missing or holds no images, or the landmarks file is missing.
        ValueError: if an image has no landmarks in ``landmarks``.
    """

    def __init__(
        self,
        root: str | Path,
        transform: Callable | None = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        identities: Collection[str] | None = None,
        landmarks: str | Path | None = None,
        image_size: tuple[int, int] | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        self.root = Path(root)
        self.transform = transform
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        self.skip_corrupt = skip_corrupt
        self.num_corrupt = 0
        self._reported: set[int] = set()
        self.classes, self.samples = _scan_identity_folder(self.root, extensions)
        self.missing_identities: list[str] = []
        if identities is not None:
            self.classes, self.samples, self.missing_identities = _keep_identities(
                self.root, self.classes, self.samples, identities
            )
        self.num_classes = len(self.classes)
        self.landmarks: list[Tensor] | None = None
        if landmarks is not None:
            from crossres.data.landmarks import load_landmarks68

            table = load_landmarks68(landmarks)
            names = [path.relative_to(self.root).as_posix() for path, _ in self.samples]
            missing = [name for name in names if name not in table]
            if missing:
                raise ValueError(
                    f"{len(missing)} of {len(names)} images of {self.root} have no landmarks in {landmarks}, "
                    f"e.g. {missing[0]!r} (paths are relative to {self.root})"
                )
            self.landmarks = [table[name].float() for name in names]

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, path: Path) -> Tensor:
        try:
            image = decode_image_bytes(path.read_bytes())
        except (RuntimeError, OSError) as err:
            raise CorruptRecordError(f"image {path} does not decode ({str(err).splitlines()[-1]})") from err
        if self.image_size is not None and tuple(image.shape[-2:]) != self.image_size:
            h, w = self.image_size
            raise CorruptRecordError(
                f"image {path} is {image.shape[-2]}x{image.shape[-1]} px; the faces must be {h}x{w} (data.image_size): "
                "align them to that size (crossres align) or set data.image_size"
            )
        return image

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images under {self.root}")
        index %= n
        for skipped in range(n):
            item_index = (index + skipped) % n
            path, label = self.samples[item_index]
            try:
                image = self._load(path)
            except CorruptRecordError as err:
                if not self.skip_corrupt:
                    raise CorruptRecordError(
                        f"{err}. Set skip_corrupt=True (--data.skip_corrupt=true) to skip such images."
                    ) from err
                self.num_corrupt += 1
                if item_index not in self._reported:
                    self._reported.add(item_index)
                    log.warning("skipping %s", err)
                continue
            if self.transform is not None:
                image = self.transform(image)
            item: dict[str, Any] = {"image": image, "label": label}
            if self.landmarks is not None:
                item["landmarks"] = self.landmarks[item_index].clone()
            if self.skip_corrupt:
                item["corrupt"] = skipped
            return item
        raise CorruptRecordError(f"no readable image under {self.root}: all {n} images are unreadable")


def folder_pairs(root: str | Path, num_pairs: int, seed: int = 0, name: str | None = None) -> PairSet:
    """Draw a balanced verification pair set from an identity folder.

    Even pair ids are same-identity pairs, odd ones different-identity pairs, so every contiguous fold of the
    10-fold protocol is balanced. Pairs are distinct and reproducible from ``seed``.

    Args:
        root: identity folder ``root/<identity>/*.jpg``.
        num_pairs: number of pairs (``ceil(P / 2)`` positive).
        seed: sampling seed.
        name: pair-set name; default the folder name.

    Returns:
        The pair set over :class:`ImageFiles` (all images of the folder, decoded on access).

    Raises:
        ValueError: if the folder cannot supply that many distinct positive or negative pairs.
    """
    root = Path(root)
    classes, samples = _scan_identity_folder(root, IMAGE_EXTENSIONS)
    by_class: list[list[int]] = [[] for _ in classes]
    for i, (_, label) in enumerate(samples):
        by_class[label].append(i)
    multi = [members for members in by_class if len(members) >= 2]
    num_same = (num_pairs + 1) // 2
    num_diff = num_pairs - num_same
    max_same = sum(len(m) * (len(m) - 1) // 2 for m in multi)
    max_diff = (len(samples) ** 2 - sum(len(m) ** 2 for m in by_class)) // 2
    if num_same > max_same or num_diff > max_diff:
        raise ValueError(
            f"{root}: cannot draw {num_same} positive / {num_diff} negative distinct pairs "
            f"(at most {max_same} / {max_diff}); lower num_pairs or add images"
        )
    rng = np.random.default_rng(seed)
    seen: set[tuple[int, int]] = set()

    def draw(same: bool) -> tuple[int, int]:
        while True:
            if same:
                members = multi[int(rng.integers(len(multi)))]
                a, b = rng.choice(len(members), size=2, replace=False)
                i, j = members[int(a)], members[int(b)]
            else:
                c1, c2 = rng.choice(len(by_class), size=2, replace=False)
                i = by_class[int(c1)][int(rng.integers(len(by_class[int(c1)])))]
                j = by_class[int(c2)][int(rng.integers(len(by_class[int(c2)])))]
            key = (min(i, j), max(i, j))
            if key not in seen:
                seen.add(key)
                return i, j

    pairs = [draw(k % 2 == 0) for k in range(num_pairs)]
    issame = [k % 2 == 0 for k in range(num_pairs)]
    return PairSet(
        name=name or root.name,
        images=ImageFiles([p for p, _ in samples]),
        pairs=torch.tensor(pairs, dtype=torch.long).reshape(-1, 2),
        issame=torch.tensor(issame, dtype=torch.bool),
    )


def write_image_folder(
    root: str | Path, items: Iterable[tuple[Tensor | bytes, int]], quality: int = 95, overwrite: bool = False
) -> dict[str, int]:
    """Write ``(image, label)`` pairs as an identity folder ``root/<label:07d>/<n:06d>.jpg``.

    Zero-padded folder names keep the sorted order equal to the label order, so :class:`ImageFolderFaces`
    reads the labels back unchanged (for labels below 10**7).

    Args:
        root: output directory.
        items: ``(image, label)`` pairs; tensors or encoded JPEG bytes.
        quality: JPEG quality of encoded tensors.
        overwrite: replace existing files instead of raising.

    Returns:
        ``{"images": N, "identities": number of distinct labels}``.
    """
    root = Path(root)
    counts: dict[int, int] = {}
    for image, label in items:
        label = int(label)
        n = counts.get(label, 0)
        path = root / f"{label:07d}" / f"{n:06d}.jpg"
        _check_writable([path], overwrite)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_jpeg_bytes(image, quality))
        counts[label] = n + 1
    return {"images": sum(counts.values()), "identities": len(counts)}


def _dataset_items(dataset: Dataset) -> Iterator[tuple[Tensor, int]]:
    for i in range(len(dataset)):  # type: ignore[arg-type]
        item = dataset[i]
        yield item["image"], int(item["label"])


def export_dataset(
    dataset: Dataset,
    out_dir: str | Path,
    fmt: Literal["rec", "folder"] = "rec",
    quality: int = 95,
    overwrite: bool = False,
) -> dict[str, int]:
    """Write any dataset yielding ``{"image", "label"}`` as insightface RecordIO or as an identity folder.

    Args:
        dataset: e.g. :class:`~crossres.data.synthetic.SyntheticFaces` or :class:`ImageFolderFaces`.
        out_dir: output directory.
        fmt: ``"rec"`` (``train.rec``/``train.idx``/``property``) or ``"folder"``.
        quality: JPEG quality.
        overwrite: replace existing files instead of raising.

    Returns:
        The writer's counts.

    Raises:
        ValueError: on an unknown ``fmt``.
    """
    if fmt == "rec":
        num_classes = getattr(dataset, "num_classes", None)
        return write_recordio(
            out_dir, _dataset_items(dataset), quality=quality, num_classes=num_classes, overwrite=overwrite
        )
    if fmt == "folder":
        return write_image_folder(out_dir, _dataset_items(dataset), quality=quality, overwrite=overwrite)
    raise ValueError(f"fmt must be 'rec' or 'folder', got {fmt!r}")


# ------------------------------------------------------------------------------------------ LFW pairs
_COUNT = re.compile(r"^[1-9]\d*$")


def load_lfw_pairs(
    pairs_file: str | Path, image_root: str | Path, name: str = "lfw", check_files: bool = True
) -> PairSet:
    r"""Read an LFW ``pairs.txt`` (or ``pairsDevTest.txt``) in its original format.

    The header is ``"<folds>\t<n>"`` (``"10\t300"``: 10 folds of ``n`` positive then ``n`` negative pairs) or a
    single ``"<n>"``; then ``name\tn1\tn2`` same-person lines and ``name1\tn1\tname2\tn2`` different-person
    lines. Image ``n`` of ``name`` is ``image_root/name/name_<n:04d>.jpg`` (or ``.png``/``.jpeg`` when that is the
    file there, as in a ``crossres align --ext png`` tree). Images are decoded on access.

    With a single-count header (View 1's ``pairsDevTrain.txt``/``pairsDevTest.txt``: ``n`` same-person lines, then
    ``n`` different-person lines) the pairs are returned alternating, same-person first, so that every contiguous
    fold of the 10-fold protocol holds both kinds; ``"<folds>\t<n>"`` files keep their order (their folds are
    balanced already, and per-pair protocol files follow it).

    Args:
        pairs_file: the pairs file.
        image_root: the LFW image directory (``lfw/`` or ``lfw-deepfunneled/`` of an aligned copy).
        name: pair-set name used in metric keys.
        check_files: verify that every referenced image exists.

    Returns:
        The pair set over :class:`ImageFiles` (each image listed once).

    Raises:
        FileNotFoundError: if the pairs file or (with ``check_files``) a referenced image is missing.
        ValueError: on a malformed line (message gives file and line number) or a wrong number of pairs.
    """
    pairs_file, image_root = Path(pairs_file), Path(image_root)
    if not pairs_file.is_file():
        raise FileNotFoundError(f"LFW pairs file {pairs_file} not found")
    lines = pairs_file.read_text().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ValueError(f"{pairs_file}: empty file; expected a header line like '10\\t300'")
    header = lines[0].split()
    if not header or len(header) > 2 or not all(_COUNT.match(v) for v in header):
        raise ValueError(f"{pairs_file}:1: expected a header '<folds>\\t<pairs per class>' (e.g. '10\\t300')")
    expected = 2 * int(header[0]) * (int(header[1]) if len(header) == 2 else 1)
    index: dict[Path, int] = {}
    pairs: list[tuple[int, int]] = []
    issame: list[bool] = []

    def image(person: str, number: str, lineno: int) -> int:
        if not _COUNT.match(number):
            raise ValueError(f"{pairs_file}:{lineno}: image number {number!r} is not a positive integer")
        stem = str(image_root / person / f"{person}_{int(number):04d}")
        path = next((Path(stem + ext) for ext in IMAGE_EXTENSIONS if Path(stem + ext).is_file()), Path(stem + ".jpg"))
        if path not in index:
            if check_files and not path.is_file():
                raise FileNotFoundError(
                    f"{pairs_file}:{lineno}: image {path} (or .jpeg, .png) not found under {image_root} (for an "
                    "aligned folder: a photo the aligner skipped, listed in its skipped.csv)"
                )
            index[path] = len(index)
        return index[path]

    for lineno, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if len(fields) == 3:
            pairs.append((image(fields[0], fields[1], lineno), image(fields[0], fields[2], lineno)))
            issame.append(True)
        elif len(fields) == 4:
            pairs.append((image(fields[0], fields[1], lineno), image(fields[2], fields[3], lineno)))
            issame.append(False)
        else:
            raise ValueError(
                f"{pairs_file}:{lineno}: expected 'name<TAB>n1<TAB>n2' or 'name1<TAB>n1<TAB>name2<TAB>n2', got {line!r}"
            )
    if len(pairs) != expected:
        raise ValueError(f"{pairs_file}: header {lines[0]!r} announces {expected} pairs, found {len(pairs)}")
    if len(header) == 1:  # View 1 lists all same-person pairs first: alternate them so that every fold is balanced
        same = [k for k, flag in enumerate(issame) if flag]
        different = [k for k, flag in enumerate(issame) if not flag]
        order = [k for both in itertools.zip_longest(same, different) for k in both if k is not None]
        pairs, issame = [pairs[k] for k in order], [issame[k] for k in order]
    return PairSet(
        name=name,
        images=ImageFiles(list(index)),
        pairs=torch.tensor(pairs, dtype=torch.long).reshape(-1, 2),
        issame=torch.tensor(issame, dtype=torch.bool),
    )
