import multiprocessing
import warnings

import numpy as np
import pytest
import torch

from crossres.data import synthetic
from crossres.data.pairs import PairSet
from crossres.data.priors import PARSING_CLASSES
from crossres.data.synthetic import SyntheticFaces, synthetic_pair_set

CLASS = {name: i for i, name in enumerate(PARSING_CLASSES)}
LIPS = (CLASS["upper_lip"], CLASS["inner_mouth"], CLASS["lower_lip"])
QUIET = {"pose": 0.0, "illumination": 0.0, "expression": 0.0, "clutter": 0.0, "noise": 0.0}


def _render_bytes(args: tuple[int, int, int]) -> bytes:
    seed, identity, index = args
    return SyntheticFaces(seed=seed).render(identity, index)["image"].numpy().tobytes()


def test_deterministic_across_instances_caches_and_processes():
    first = SyntheticFaces(seed=3).render(17, 5)
    synthetic._identity.cache_clear()
    second = SyntheticFaces(num_identities=1, images_per_identity=1, seed=3).render(17, 5)
    for key in ("image", "landmarks", "parsing"):
        assert torch.equal(first[key], second[key]), key
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.map(_render_bytes, [(3, 17, 5)])[0] == first["image"].numpy().tobytes()


def test_cache_serves_identical_independent_items_without_rendering_again(monkeypatch):
    plain = SyntheticFaces(num_identities=2, images_per_identity=2, image_size=32)
    cached = SyntheticFaces(num_identities=2, images_per_identity=2, image_size=32, cache=True)
    first, reference = cached[3], plain[3]
    calls = []
    render = synthetic._render
    monkeypatch.setattr(synthetic, "_render", lambda *a: calls.append(a) or render(*a))
    first["image"].zero_()  # a caller writing into an item must not change the cache
    again = cached[3]
    assert calls == []
    for key in ("image", "landmarks", "parsing"):
        assert torch.equal(again[key], reference[key]), key
        assert again[key].dtype == reference[key].dtype, key
    plain[3]
    assert len(calls) == 1  # without the cache every read renders


def test_seed_identity_and_index_change_the_image():
    base = SyntheticFaces(seed=0).render(4, 1)["image"]
    assert not torch.equal(base, SyntheticFaces(seed=1).render(4, 1)["image"])
    assert not torch.equal(base, SyntheticFaces(seed=0).render(5, 1)["image"])
    assert not torch.equal(base, SyntheticFaces(seed=0).render(4, 2)["image"])


@pytest.mark.parametrize("size", [112, (112, 96), (64, 64)])
def test_item_shapes_and_dtypes(size):
    data = SyntheticFaces(num_identities=3, images_per_identity=2, image_size=size)
    height, width = (size, size) if isinstance(size, int) else size
    assert len(data) == 6 and data.num_classes == 3
    item = data[5]
    assert set(item) == {"image", "label", "landmarks", "parsing"}
    assert item["image"].shape == (3, height, width) and item["image"].dtype == torch.uint8
    assert item["landmarks"].shape == (68, 2) and item["landmarks"].dtype == torch.float32
    assert item["parsing"].shape == (height, width) and item["parsing"].dtype == torch.int64
    assert item["label"] == 2 and isinstance(item["label"], int)
    assert 0 <= int(item["parsing"].min()) and int(item["parsing"].max()) < len(PARSING_CLASSES)
    plain = SyntheticFaces(num_identities=3, images_per_identity=2, image_size=size, return_priors=False)[5]
    assert set(plain) == {"image", "label"} and torch.equal(plain["image"], item["image"])


def test_labels_cover_range_and_identity_offset_is_disjoint():
    train = SyntheticFaces(num_identities=4, images_per_identity=3)
    held_out = SyntheticFaces(num_identities=4, images_per_identity=3, identity_offset=4)
    assert sorted({train[i]["label"] for i in range(len(train))}) == [0, 1, 2, 3]
    assert sorted({held_out[i]["label"] for i in range(len(held_out))}) == [0, 1, 2, 3]
    # held-out label 0 is global identity 4
    assert torch.equal(held_out[0]["image"], train.render(4, 0)["image"])
    train_images = {train[i]["image"].numpy().tobytes() for i in range(len(train))}
    assert not any(held_out[i]["image"].numpy().tobytes() in train_images for i in range(len(held_out)))
    with pytest.raises(IndexError):
        train[len(train)]


def test_landmarks_inside_image_and_consistent_with_parsing():
    data = SyntheticFaces(num_identities=12, images_per_identity=4, image_size=(112, 96))
    for i in range(len(data)):
        item = data[i]
        landmarks, parsing = item["landmarks"].numpy(), item["parsing"].numpy()
        height, width = parsing.shape
        assert landmarks.min() >= 0 and landmarks[:, 0].max() <= width - 1 and landmarks[:, 1].max() <= height - 1

        def label(point: np.ndarray, parsing: np.ndarray = parsing) -> int:
            x, y = np.round(point).astype(int)
            return int(parsing[y, x])

        def near(point: np.ndarray, classes: tuple[int, ...], parsing: np.ndarray = parsing) -> bool:
            x, y = np.round(point).astype(int)
            return bool(np.isin(parsing[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2], classes).any())

        # eye centroids: within a pixel of the eye class (a blinking eye can be a 1 px sliver)
        assert near(landmarks[36:42].mean(0), (CLASS["right_eye"],)), i
        assert near(landmarks[42:48].mean(0), (CLASS["left_eye"],)), i
        assert label(landmarks[30]) == CLASS["nose"], i
        assert label(landmarks[19]) == CLASS["right_brow"], i
        assert label(landmarks[24]) == CLASS["left_brow"], i
        assert all(near(p, LIPS) for p in landmarks[48:68]), i
        assert all(near(p, (CLASS["skin"], CLASS["hair"])) for p in landmarks[0:17]), i
        assert label(landmarks[[51, 57]].mean(0)) in LIPS


def test_knobs_off_gives_identical_images_of_an_identity():
    data = SyntheticFaces(num_identities=2, images_per_identity=3, **QUIET)
    assert torch.equal(data[0]["image"], data[1]["image"])
    assert not torch.equal(data[0]["image"], data[3]["image"])
    noisy = SyntheticFaces(num_identities=2, images_per_identity=3, **{**QUIET, "noise": 1.0})
    assert not torch.equal(noisy[0]["image"], noisy[1]["image"])
    with pytest.raises(ValueError, match="pose"):
        SyntheticFaces(pose=-1.0)
    with pytest.raises(ValueError, match="image_size"):
        SyntheticFaces(image_size=(112,))


def test_diversity_scales_the_global_appearance():
    def skin_colour_spread(diversity: float) -> float:
        data = SyntheticFaces(num_identities=8, images_per_identity=1, diversity=diversity, **QUIET)
        colours = []
        for i in range(len(data)):
            item = data[i]
            colours.append(item["image"][:, item["parsing"] == CLASS["skin"]].float().mean(1))
        return float(torch.stack(colours).std(0).mean())

    assert skin_colour_spread(0.0) < 0.5 * skin_colour_spread(1.0)
    same = SyntheticFaces(num_identities=2, images_per_identity=1, diversity=0.0, **QUIET)
    assert not torch.equal(same[0]["image"], same[1]["image"])  # geometry and fine detail still differ
    with pytest.raises(ValueError, match="diversity"):
        SyntheticFaces(diversity=1.5)


def test_identity_is_visible_through_the_nuisance():
    data = SyntheticFaces(num_identities=12, images_per_identity=4)
    images = torch.stack([data[i]["image"] for i in range(len(data))]).float().flatten(1)
    labels = torch.arange(12).repeat_interleave(4)
    dist = torch.cdist(images, images)
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~torch.eye(len(labels), dtype=torch.bool)
    within, between = dist[same & off_diagonal].mean(), dist[~same].mean()
    assert within < 0.95 * between, (within, between)


def test_pair_set_structure():
    pair_set = synthetic_pair_set(num_identities=20, images_per_identity=3, num_pairs=200, image_size=64, seed=5)
    assert isinstance(pair_set, PairSet) and pair_set.name == "synthetic" and len(pair_set) == 200
    assert len(pair_set.images) == 60
    assert pair_set.images[0].dtype == torch.uint8 and pair_set.images[0].shape == (3, 64, 64)
    assert int(pair_set.issame.sum()) == 100
    assert int(pair_set.pairs.min()) >= 0 and int(pair_set.pairs.max()) < 60
    identity = pair_set.pairs // 3
    assert torch.equal(identity[:, 0] == identity[:, 1], pair_set.issame)
    assert (pair_set.pairs[:, 0] != pair_set.pairs[:, 1]).all()
    fold_identities = []
    for fold in range(10):
        chunk = slice(fold * 20, (fold + 1) * 20)
        assert int(pair_set.issame[chunk].sum()) == 10
        fold_identities.append(set(identity[chunk].flatten().tolist()))
    for a in range(10):
        for b in range(a + 1, 10):
            assert not fold_identities[a] & fold_identities[b]
    # evaluation identities are disjoint from a training set by default (offset 100000)
    reference = SyntheticFaces(image_size=64, seed=5, identity_offset=100000).render(100000, 0)["image"]
    assert any(torch.equal(reference, image) for image in pair_set.images)


def test_pair_set_defaults_and_errors():
    with pytest.raises(ValueError, match="unknown nuisance"):
        synthetic_pair_set(blur=1.0)
    with pytest.raises(ValueError, match="images_per_identity"):
        synthetic_pair_set(images_per_identity=1)
    small = synthetic_pair_set(num_identities=4, images_per_identity=2, num_pairs=40, image_size=32, noise=0.0)
    assert len(small) == 40 and int(small.issame.sum()) == 20
    for fold in range(10):
        assert 0 < int(small.issame[fold * 4 : (fold + 1) * 4].sum()) < 4


def test_pair_set_warns_when_positive_pairs_repeat():
    with pytest.warns(UserWarning, match=r"data\.synthetic\.pair_identities"):
        repeated = synthetic_pair_set(num_identities=10, images_per_identity=2, num_pairs=40, image_size=16)
    positives = [tuple(p) for p, same in zip(repeated.pairs.tolist(), repeated.issame.tolist(), strict=True) if same]
    assert len(set(positives)) < len(positives)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        distinct = synthetic_pair_set(num_identities=20, images_per_identity=2, num_pairs=40, image_size=16)
    positives = [tuple(p) for p, same in zip(distinct.pairs.tolist(), distinct.issame.tolist(), strict=True) if same]
    assert len(set(positives)) == len(positives) == 20
