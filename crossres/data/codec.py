"""Encoded images: JPEG/PNG decoding to ``uint8`` ``(3, H, W)`` RGB tensors, JPEG encoding, lazy image sequences."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import overload

import numpy as np
import torch
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image, encode_jpeg

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFiles",
    "LazyJPEGImages",
    "decode_image_bytes",
    "encode_jpeg_bytes",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


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
