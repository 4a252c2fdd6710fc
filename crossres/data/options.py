"""Option groups of :class:`~crossres.data.datamodule.FaceDataModule`: synthetic, degradation, augmentation.

Each group is a dataclass: LightningCLI shows its fields as ``--data.<group>.<field>`` and a YAML config sets them
under ``data: <group>:``, one field at a time (a later ``-c`` file changes only the fields it names). In Python::

    FaceDataModule(synthetic=SyntheticOptions(num_identities=8), degradation=DegradationOptions(lr_sizes=[7]))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from crossres.data.synthetic import DEFAULT_DIVERSITY
from crossres.errors import InputError
from crossres.transforms.functional import Backend

__all__ = [
    "GROUPED_KEYS",
    "AugmentationOptions",
    "DegradationOptions",
    "SyntheticOptions",
    "check_grouped_keys",
    "group_flat_keys",
    "options",
]


@dataclass(frozen=True)
class SyntheticOptions:
    """The procedurally rendered faces (``train_format: synthetic`` and the ``"synthetic"`` pair set).

    Args:
        num_identities: training identities.
        images_per_identity: training images per identity.
        seed: seed of the renderer (training faces and synthetic pair sets).
        difficulty: scales every nuisance of the renderer (pose, light, clutter, noise).
        diversity: spread of the identities' coarse traits (skin, hair, beard colour and shape); lower values leave
            more of identity to fine detail, which low resolutions destroy (default: the calibrated
            ``crossres.data.synthetic.DEFAULT_DIVERSITY``).
        cache: keep rendered training faces in memory after their first epoch (each DataLoader worker holds the
            items it rendered, about 50 KB each at 112x112); rendering is about 5 ms per face on a CPU.
        pairs: pairs of a synthetic pair set (half positive).
        pair_identities: identities of a synthetic pair set (4 images each, disjoint from training). Each identity
            gives 6 distinct positive pairs: beyond ``3 * pair_identities`` pairs the positives repeat (a warning
            says so), so raise both together for a tighter estimate (e.g. 6000 and 1000).
    """

    num_identities: int = 100
    images_per_identity: int = 20
    seed: int = 0
    difficulty: float = 1.0
    diversity: float = DEFAULT_DIVERSITY
    cache: bool = True
    pairs: int = 600
    pair_identities: int = 50


@dataclass(frozen=True)
class DegradationOptions:
    """The device-side degradation of training faces (Knoche et al. 2021 §3.3, Eq. (1)).

    Args:
        lr_policy: how training LR sizes are drawn: ``"fixed"`` (``lr_sizes[0]``), ``"choice"`` or ``"range"``
            (``lr_sizes = [lo, hi]``).
        lr_sizes: training LR sizes (ints or ``[h, w]`` pairs); ``None``: ``[7, 14, 28, 56]``.
        lr_per: draw one size per ``"sample"`` or per ``"batch"``.
        lr_prob: share of training samples that are degraded (Knoche's BT uses 0.5).
        lr_views: extra fixed LR sizes computed for every training image, as ``batch["lr_views"]`` =
            ``{"7px": tensor, ...}`` (multi-branch methods: SiameseCR ST-M2, DCR's three resolutions).
        backend: resampling backend of the degradation, evaluation included (``"pil"`` matches PIL bicubic).
        blur_prob: probability of a random Gaussian blur on LR training samples.
        motion_blur_prob: probability of a random motion blur on LR training samples.
        noise_prob: probability of Gaussian noise on LR training samples.
        jpeg_prob: probability of JPEG compression on LR training samples.
    """

    lr_policy: Literal["fixed", "choice", "range"] = "choice"
    lr_sizes: list[int | list[int]] | None = None
    lr_per: Literal["sample", "batch"] = "sample"
    lr_prob: float = 1.0
    lr_views: list[int | str] | None = None
    backend: Backend = "pil"
    blur_prob: float = 0.0
    motion_blur_prob: float = 0.0
    noise_prob: float = 0.0
    jpeg_prob: float = 0.0


@dataclass(frozen=True)
class AugmentationOptions:
    """The CPU-side augmentation of training faces (Knoche et al. 2021 §3.1; albumentations).

    Args:
        hflip: horizontal flip probability.
        brightness: brightness jitter (``ColorJitter``).
        saturation: saturation jitter.
        crop_scale: lower bound of the area kept by the random crop (1.0 = no crop).
    """

    hflip: float = 0.5
    brightness: float = 0.2
    saturation: float = 0.2
    crop_scale: float = 1.0


GROUPED_KEYS: dict[str, str] = {
    "num_identities": "synthetic.num_identities",
    "images_per_identity": "synthetic.images_per_identity",
    # the other synthetic fields carry the group's name: synthetic_seed -> synthetic.seed
    **{f"synthetic_{f.name}": f"synthetic.{f.name}" for f in dataclasses.fields(SyntheticOptions)[2:]},
    **{f.name: f"degradation.{f.name}" for f in dataclasses.fields(DegradationOptions)},
    **{f.name: f"augmentation.{f.name}" for f in dataclasses.fields(AugmentationOptions)},
}
"""Flat ``data`` keys of grouped options -> their ``<group>.<field>`` (``lr_sizes`` -> ``degradation.lr_sizes``)."""

_Options = TypeVar("_Options", SyntheticOptions, DegradationOptions, AugmentationOptions)


def options(cls: type[_Options], value: _Options | Mapping[str, Any] | None, key: str) -> _Options:
    """One option group, from its dataclass, a mapping of its fields (a config's section) or ``None`` (defaults).

    Args:
        cls: the group's dataclass.
        value: the group as given.
        key: the group's key in messages, e.g. ``"data.degradation"``.

    Returns:
        An instance of ``cls``.

    Raises:
        InputError: for a field ``cls`` does not have, or a value of another type.
    """
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise InputError(f"{key} must be a {cls.__name__} or a mapping of its fields, got {value!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in value if k not in names]
    if unknown:
        raise InputError(f"{key}.{unknown[0]} is not an option; {key} has {', '.join(names)}")
    return cls(**value)


def group_flat_keys(data: Mapping[str, Any]) -> dict[str, Any]:
    """A ``data`` config section with every flat key of :data:`GROUPED_KEYS` moved into its group.

    Reads a run's ``config.yaml`` that spells the options flat (``crossres report``); a grouped section passes
    unchanged.

    Args:
        data: the ``data`` section.

    Returns:
        A copy, with ``{"lr_sizes": [7]}`` as ``{"degradation": {"lr_sizes": [7]}}``.
    """
    out = {k: v for k, v in data.items() if k not in GROUPED_KEYS}
    for flat, dotted in GROUPED_KEYS.items():
        if flat in data:
            group, field = dotted.split(".")
            section = out.get(group)
            out[group] = (dict(section) if isinstance(section, Mapping) else {}) | {field: data[flat]}
    return out


def check_grouped_keys(keys: Iterable[str], where: str) -> None:
    """Raise for flat ``data`` keys of grouped options, naming each one's ``data.<group>.<field>``.

    Args:
        keys: keys of a ``data`` section.
        where: what holds them, for the message (``"--config run/config.yaml"``).

    Raises:
        InputError: when ``keys`` holds one of :data:`GROUPED_KEYS`.
    """
    flat = [k for k in keys if k in GROUPED_KEYS]
    if flat:
        moves = ", ".join(f"data.{k} is data.{GROUPED_KEYS[k]}" for k in flat)
        raise InputError(
            f"{where}: {moves}; set each in its group (data.synthetic, data.degradation or data.augmentation), e.g. "
            "data: {degradation: {lr_sizes: [14]}} in YAML or --data.degradation.lr_sizes=[14]"
        )
