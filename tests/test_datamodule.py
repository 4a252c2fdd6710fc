"""FaceDataModule: the batch contract of every split, and augmentations that keep priors consistent."""

from __future__ import annotations

import torch
from torch.utils.data import default_collate

from crossres.data.datamodule import _IBUG_FLIP, FaceDataModule
from crossres.transforms.functional import degrade, to_float


def _dm(**kwargs: object) -> FaceDataModule:
    defaults: dict[str, object] = dict(
        image_size=(32, 32),
        num_identities=4,
        images_per_identity=3,
        synthetic_pairs=20,
        protocols=[4, 8],
        lr_sizes=[4, 8],
        batch_size=6,
        eval_batch_size=8,
        num_workers=0,
    )
    defaults.update(kwargs)
    return FaceDataModule(**defaults)  # type: ignore[arg-type]


def test_train_batch_contract() -> None:
    dm = _dm(lr_views=[4, "8x8"])
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
    dm = _dm(lr_prob=0.5, lr_sizes=[8], lr_policy="fixed")
    dm.setup("fit")
    out = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    is_hr = (out["lr_size"] == 32).all(1)
    assert is_hr.sum() == 3
    assert torch.equal(out["lr"][is_hr], out["hr"][is_hr])


def test_flip_keeps_landmarks_and_parsing_consistent() -> None:
    plain = _dm(image_size=(64, 64), hflip=0.0, brightness=0.0, saturation=0.0)
    flipped = _dm(image_size=(64, 64), hflip=1.0, brightness=0.0, saturation=0.0)
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
    dm = _dm(synthetic_pairs=40, synthetic_pair_identities=20)
    pair_set = dm.pair_set("synthetic").pair_set
    assert len(pair_set.images) == 20 * 4 and len(pair_set) == 40
    positives = {tuple(p) for p, same in zip(pair_set.pairs.tolist(), pair_set.issame.tolist(), strict=True) if same}
    assert len(positives) == 20  # distinct: 20 identities hold 120 positive pairs
