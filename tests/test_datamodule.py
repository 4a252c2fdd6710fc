"""FaceDataModule: the batch contract of every split, and augmentations that keep priors consistent."""

from __future__ import annotations

from dataclasses import asdict, replace
from dataclasses import fields as dataclass_fields

import pytest
import torch
from torch.utils.data import default_collate

from crossres.data.datamodule import _IBUG_FLIP, FaceDataModule
from crossres.data.options import (
    GROUPED_KEYS,
    AugmentationOptions,
    DegradationOptions,
    SyntheticOptions,
    check_grouped_keys,
    group_flat_keys,
)
from crossres.errors import InputError
from crossres.transforms.functional import degrade, to_float

SYNTHETIC = SyntheticOptions(num_identities=4, images_per_identity=3, pairs=20)
DEGRADATION = DegradationOptions(lr_sizes=[4, 8])


def _dm(**kwargs: object) -> FaceDataModule:
    defaults: dict[str, object] = dict(
        image_size=(32, 32),
        synthetic=SYNTHETIC,
        degradation=DEGRADATION,
        protocols=[4, 8],
        batch_size=6,
        eval_batch_size=8,
        num_workers=0,
    )
    defaults.update(kwargs)
    return FaceDataModule(**defaults)  # type: ignore[arg-type]


def test_train_batch_contract() -> None:
    dm = _dm(degradation=replace(DEGRADATION, lr_views=[4, "8x8"]))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    out = dm.on_after_batch_transfer(batch, 0)
    assert set(out) >= {"hr", "lr", "lr_size", "label", "landmarks", "parsing", "lr_views"}
    assert out["hr"].dtype == torch.float32 and out["hr"].shape == (6, 3, 32, 32)
    assert out["lr"].shape == out["hr"].shape
    assert set(out["lr_size"][:, 0].tolist()) <= {4, 8}
    torch.testing.assert_close(out["lr"], degrade(out["hr"], out["lr_size"]))
    assert set(out["lr_views"]) == {"4px", "8x8px"}
    torch.testing.assert_close(out["lr_views"]["4px"], degrade(out["hr"], 4))
    assert dm.num_classes == 4


def test_eval_batch_has_every_protocol_and_both_images() -> None:
    dm = _dm()
    dm.setup("validate")
    loader = dm.val_dataloader()[0]
    batch = next(iter(loader))
    out = dm.on_after_batch_transfer(batch, 0)
    assert out["pair_set"] == "synthetic"
    assert set(out["lr1"]) == set(out["lr2"]) == {"4px", "8px"}
    torch.testing.assert_close(out["lr2"]["4px"], degrade(to_float(batch["image2"]), 4))
    assert out["issame"].dtype == torch.bool and out["pair_id"].tolist() == list(range(8))


def test_lr_prob_mixes_hr_and_lr() -> None:
    dm = _dm(degradation=DegradationOptions(lr_prob=0.5, lr_sizes=[8], lr_policy="fixed"))
    dm.setup("fit")
    out = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    is_hr = (out["lr_size"] == 32).all(1)
    assert is_hr.sum() == 3
    assert torch.equal(out["lr"][is_hr], out["hr"][is_hr])


def test_flip_keeps_landmarks_and_parsing_consistent() -> None:
    plain = _dm(image_size=(64, 64), augmentation=AugmentationOptions(hflip=0.0, brightness=0.0, saturation=0.0))
    flipped = _dm(image_size=(64, 64), augmentation=AugmentationOptions(hflip=1.0, brightness=0.0, saturation=0.0))
    plain.setup("fit"), flipped.setup("fit")
    a = plain.train_dataloader().dataset[0]
    b = flipped.train_dataloader().dataset[0]
    assert torch.equal(b["image"], a["image"].flip(-1))
    # The subject's left eye (iBUG 36-41) of the flipped image is the mirrored right eye (42-47).
    mirrored = a["landmarks"][_IBUG_FLIP].clone()
    mirrored[:, 0] = 64 - 1 - mirrored[:, 0]
    torch.testing.assert_close(b["landmarks"], mirrored, atol=1e-3, rtol=0)
    # Parsing: left/right classes swapped, so class 5 (the subject's right eye) lies where 36-41 are.
    for item in (a, b):
        eye = item["landmarks"][36:42].mean(0).round().long()
        assert item["parsing"][eye[1], eye[0]] == 5
    assert set(default_collate([a, b])) == {"image", "label", "landmarks", "parsing"}


def test_synthetic_pair_identities_sets_the_pair_set_size() -> None:
    dm = _dm(synthetic=replace(SYNTHETIC, pairs=40, pair_identities=20))
    pair_set = dm.pair_set("synthetic").pair_set
    assert len(pair_set.images) == 20 * 4 and len(pair_set) == 40
    positives = {tuple(p) for p, same in zip(pair_set.pairs.tolist(), pair_set.issame.tolist(), strict=True) if same}
    assert len(positives) == 20  # distinct: 20 identities hold 120 positive pairs


def test_option_groups_take_mappings_and_name_unknown_fields() -> None:
    dm = _dm(synthetic={"num_identities": 5, "pairs": 20}, degradation={"lr_sizes": [8], "lr_prob": 0.5})
    assert dm.synthetic == SyntheticOptions(num_identities=5, pairs=20)
    assert dm.num_classes == 5 and dm.sampler.lr_prob == 0.5
    with pytest.raises(InputError, match=r"data\.degradation\.lr_size is not an option"):
        _dm(degradation={"lr_size": [8]})
    with pytest.raises(InputError, match=r"data\.degradation\.lr_sizes=\[64\]"):
        _dm(degradation=DegradationOptions(lr_sizes=[64]))
    with pytest.raises(InputError, match=r"data\.degradation .*noise_prob must be a probability"):
        _dm(degradation=replace(DEGRADATION, noise_prob=2.0))
    with pytest.raises(InputError, match=r"data\.synthetic\.num_identities=1"):
        _dm(synthetic=SyntheticOptions(num_identities=1))


def test_hparams_hold_the_groups_as_plain_dicts() -> None:
    dm = _dm(degradation=replace(DEGRADATION, lr_prob=0.5))
    assert dm.hparams["degradation"]["lr_prob"] == 0.5 and dm.hparams["degradation"]["lr_sizes"] == [4, 8]
    assert dm.hparams["synthetic"] == asdict(SYNTHETIC) and dm.hparams["augmentation"] == asdict(AugmentationOptions())
    assert dm.hparams_initial["degradation"] == dm.hparams["degradation"]
    assert type(FaceDataModule(**dm.hparams).degradation) is DegradationOptions  # load_from_checkpoint's call


def test_group_flat_keys_reads_flat_configs() -> None:
    flat = {"lr_sizes": [7], "synthetic_seed": 3, "num_identities": 5, "hflip": 0.0, "batch_size": 8}
    assert group_flat_keys(flat | {"degradation": {"lr_prob": 0.5}}) == {
        "batch_size": 8,
        "degradation": {"lr_prob": 0.5, "lr_sizes": [7]},
        "synthetic": {"num_identities": 5, "seed": 3},
        "augmentation": {"hflip": 0.0},
    }
    groups = {"synthetic": SyntheticOptions, "degradation": DegradationOptions, "augmentation": AugmentationOptions}
    fields = {f"{name}.{f.name}" for name, group in groups.items() for f in dataclass_fields(group)}
    assert sorted(GROUPED_KEYS.values()) == sorted(fields)  # every field once
    assert GROUPED_KEYS["synthetic_pair_identities"] == "synthetic.pair_identities"
    assert GROUPED_KEYS["images_per_identity"] == "synthetic.images_per_identity"
    assert GROUPED_KEYS["backend"] == "degradation.backend"
    with pytest.raises(InputError, match=r"data\.lr_sizes is data\.degradation\.lr_sizes"):
        check_grouped_keys(["batch_size", "lr_sizes"], "--config old.yaml")
