"""Identity folders ``root/<identity>/*.jpg``: the training set, pair sets drawn from them, and their writers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from crossres.data.codec import IMAGE_EXTENSIONS, ImageFiles, _check_writable, decode_image_bytes, encode_jpeg_bytes
from crossres.data.pairs import PairSet
from crossres.data.recordio import CorruptRecordError, write_recordio
from crossres.errors import InputError

__all__ = [
    "ImageFolderFaces",
    "export_dataset",
    "folder_pairs",
    "write_image_folder",
]

log = logging.getLogger(__name__)


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
