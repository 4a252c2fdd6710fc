"""Training samplers: rank-aware and disjoint, P x K identity-balanced, deterministic, resumable, kept by Lightning."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.trainer.states import RunningStage
from torch.utils.data import DataLoader

from crossres.data.datamodule import FaceDataModule
from crossres.data.options import DegradationOptions, SyntheticOptions
from crossres.data.samplers import IdentityBalancedSampler, ShuffledSampler, identity_labels
from crossres.data.synthetic import SyntheticFaces

# 30 identities with 1 .. 9 images each (uneven, as real data).
LABELS = np.repeat(np.arange(30), [1 + i % 9 for i in range(30)])


def _balanced(rank: int = 0, replicas: int = 2, **kwargs: object) -> IdentityBalancedSampler:
    options: dict[str, object] = {"batch_size": 8, "images_per_class": 2, "num_replicas": replicas, "rank": rank}
    return IdentityBalancedSampler(LABELS, **(options | kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize("replicas", [2, 3])
def test_identity_balanced_ranks_get_disjoint_p_by_k_batches(replicas: int) -> None:
    ranks = [list(_balanced(rank, replicas)) for rank in range(replicas)]
    assert len({len(r) for r in ranks}) == 1 and len(ranks[0]) == len(_balanced(0, replicas))
    for a in range(replicas):
        for b in range(a + 1, replicas):
            assert not set(ranks[a]) & set(ranks[b])
    for indices in ranks:
        for batch in np.asarray(indices).reshape(-1, 8):
            counts = Counter(LABELS[batch].tolist())
            assert len(counts) == 4 and set(counts.values()) == {2}  # P = 4 identities x K = 2 images


def test_identity_balanced_is_deterministic_and_changes_with_epoch_and_seed() -> None:
    first, again, other_seed = _balanced(), _balanced(), _balanced(seed=1)
    assert list(first) == list(again)
    assert list(first) != list(other_seed)
    epoch0 = list(first)
    first.set_epoch(1)
    assert list(first) != epoch0


def test_identity_balanced_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="multiple of data.images_per_class"):
        IdentityBalancedSampler(LABELS, batch_size=9, images_per_class=2)
    with pytest.raises(ValueError, match="identities"):
        IdentityBalancedSampler(np.repeat([0, 1], 10), batch_size=8, images_per_class=2)


def test_shuffled_sampler_disjoint_per_rank_and_covers_the_epoch() -> None:
    ranks = [list(ShuffledSampler(range(103), num_replicas=2, rank=r, seed=3)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 51
    assert not set(ranks[0]) & set(ranks[1]) and len(set(ranks[0]) | set(ranks[1])) == 102


def test_fast_forward_and_item_seeds() -> None:
    sampler = ShuffledSampler(range(20), seed=0, item_seeds=True)
    sampler.set_epoch(2)
    full = list(sampler)
    assert all(isinstance(i, int) and isinstance(s, int) for i, s in full)
    sampler.fast_forward(8)
    assert list(sampler) == full[8:]  # the same indices with the same per-item seeds
    assert list(sampler) == full  # only the next pass is shortened
    sampler.set_epoch(3)
    assert [s for _, s in sampler] != [s for _, s in full]


def test_lightning_keeps_the_sampler_under_ddp() -> None:
    # use_distributed_sampler=True (experiments/trainer/ddp.yaml) must not wrap our rank-aware sampler.
    trainer = Trainer(accelerator="cpu", strategy="ddp", devices=2, use_distributed_sampler=True, logger=False)
    sampler = _balanced()
    loader = DataLoader(range(len(LABELS)), batch_size=8, sampler=sampler)
    prepared = trainer._data_connector._prepare_dataloader(loader, shuffle=True, mode=RunningStage.TRAINING)
    assert prepared is loader and prepared.sampler is sampler


def test_identity_labels_without_decoding() -> None:
    faces = SyntheticFaces(num_identities=3, images_per_identity=2, image_size=(32, 32))
    assert identity_labels(faces).tolist() == [0, 0, 1, 1, 2, 2]


def test_datamodule_identity_balanced_batches() -> None:
    dm = FaceDataModule(
        image_size=(32, 32), synthetic=SyntheticOptions(num_identities=6, images_per_identity=4, pairs=20),
        protocols=[8], degradation=DegradationOptions(lr_sizes=[8]), batch_size=6, num_workers=0,
        train_sampler="identity_balanced", images_per_class=2,
    )  # fmt: skip
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, IdentityBalancedSampler) and len(loader) == 4
    for batch in loader:
        assert sorted(Counter(batch["label"].tolist()).values()) == [2, 2, 2]
    assert torch.is_tensor(batch["image"])
