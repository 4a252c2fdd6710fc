"""insightface RecordIO training sets (``train.rec``, ``train.idx``, ``property``), read and written without mxnet.

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
import logging
import os
import struct
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from crossres.data.codec import _check_writable, decode_image_bytes, encode_jpeg_bytes
from crossres.errors import InputError

__all__ = [
    "RECORDIO_MAGIC",
    "CorruptRecordError",
    "RecordIOFaces",
    "write_recordio",
]

log = logging.getLogger(__name__)

RECORDIO_MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", RECORDIO_MAGIC)
_LENGTH_MASK = (1 << 29) - 1
_IR_FORMAT = "<IfQQ"  # mxnet IRHeader: flag, label, id, id2
_IR_SIZE = struct.calcsize(_IR_FORMAT)
_LAYOUT = "expected insightface layout: train.rec, train.idx, property"


class CorruptRecordError(InputError):
    """A training item that cannot be read: a RecordIO record or an image file of an identity folder.

    A record: bad magic, truncated, bad header or undecodable image; an image file: undecodable or not of the
    configured size.
    """


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
