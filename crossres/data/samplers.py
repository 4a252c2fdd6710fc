"""Training samplers: rank-aware, a deterministic function of ``(seed, epoch, rank)``, resumable mid-epoch.

Both samplers subclass :class:`torch.utils.data.DistributedSampler`, so Lightning (``use_distributed_sampler``)
keeps them as they are instead of wrapping them in its own; they shard by ``num_replicas``/``rank`` themselves and
every rank gets the same number of indices, disjoint from the other ranks'. ``set_epoch`` (called by Lightning
before every epoch) changes the order; :meth:`EpochSampler.fast_forward` starts the next pass part-way through the
epoch, which is how :class:`~crossres.data.datamodule.FaceDataModule` resumes a run killed mid-epoch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence, Sized
from typing import Any

import numpy as np
from torch.utils.data import Dataset, DistributedSampler

__all__ = ["EpochSampler", "IdentityBalancedSampler", "ShuffledSampler", "identity_labels"]

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _item_seeds(base: int, start: int, stop: int) -> np.ndarray:
    """SplitMix64 of ``base + k`` for positions ``k`` in ``[start, stop)``: independent 64-bit seeds, vectorised."""
    with np.errstate(over="ignore"):
        z = np.uint64(base) + (np.arange(start, stop, dtype=np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return (z ^ (z >> np.uint64(31))) & _MASK64


class EpochSampler(DistributedSampler):
    """Base of the training samplers: this rank's share of one epoch, from ``(seed, epoch)``, fast-forwardable.

    Subclasses implement :meth:`rank_indices`. With ``item_seeds`` the sampler yields ``(index, seed)`` pairs instead
    of indices: ``seed`` is a 64-bit number fixed by ``(seed, epoch, rank, position)``, for datasets whose random
    per-item augmentations must replay exactly after a resume (the dataset must accept such pairs).

    Args:
        dataset: the (sized) data set the indices point into.
        num_replicas: number of ranks (``trainer.world_size``).
        rank: this rank (``trainer.global_rank``).
        seed: base seed; every rank must pass the same one.
        item_seeds: yield ``(index, seed)`` pairs.

    Raises:
        ValueError: for ``rank`` outside ``[0, num_replicas)``.
    """

    def __init__(
        self, dataset: Sized, num_replicas: int = 1, rank: int = 0, seed: int = 0, item_seeds: bool = False
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        super().__init__(
            dataset,  # type: ignore[arg-type]
            num_replicas=num_replicas,
            rank=rank,
            shuffle=True,
            seed=seed,
            drop_last=True,
        )
        self.item_seeds = item_seeds
        self._skip = 0

    def rank_indices(self) -> list[int]:
        """This rank's indices of epoch ``self.epoch``, in order (``len(self)`` of them)."""
        raise NotImplementedError

    def fast_forward(self, num_indices: int) -> None:
        """Let the next pass (only the next one) start ``num_indices`` into this rank's epoch.

        Args:
            num_indices: indices to skip, e.g. batches already trained times the batch size.

        Raises:
            ValueError: for a negative count.
        """
        if num_indices < 0:
            raise ValueError(f"num_indices must be >= 0, got {num_indices}")
        self._skip = int(num_indices)

    def __iter__(self) -> Iterator[Any]:
        indices = self.rank_indices()
        start, self._skip = min(self._skip, len(indices)), 0
        if not self.item_seeds:
            return iter(indices[start:])
        base = int(np.random.SeedSequence([self.seed, self.epoch, self.rank]).generate_state(1, np.uint64)[0])
        seeds = _item_seeds(base, start, len(indices)).tolist()
        return iter(zip(indices[start:], seeds, strict=True))

    def __len__(self) -> int:
        return self.num_samples


class ShuffledSampler(EpochSampler):
    """A random permutation per epoch, split over the ranks (``data.train_sampler: random``).

    The permutation of epoch ``e`` is ``torch.randperm`` seeded with ``seed + e`` (as in ``DistributedSampler``);
    the tail that does not divide by ``num_replicas`` is dropped, so the ranks' indices are disjoint.
    """

    def rank_indices(self) -> list[int]:
        return list(DistributedSampler.__iter__(self))


class IdentityBalancedSampler(EpochSampler):
    """P identities x K images per batch (``data.train_sampler: identity_balanced``), split over the ranks.

    Each epoch, every identity's images are shuffled and cut into chunks of ``images_per_class`` (K); an identity
    with fewer than K images gives one chunk drawn with replacement, the remainder of the others is left out (a
    different one every epoch). Chunks are ordered round by round (every identity's first chunk, in random order,
    then every second chunk, ...) and packed into batches of ``P = batch_size / K`` chunks of distinct identities.
    The epoch's batches are dealt to the ranks in turn (batch ``b`` to rank ``b % num_replicas``), so the ranks'
    indices are disjoint and each rank gets whole batches: use it with ``DataLoader(batch_size=batch_size)``.

    Args:
        labels: the identity of every item of the data set (see :func:`identity_labels`).
        batch_size: batch size per rank, a multiple of ``images_per_class``.
        images_per_class: K, images of one identity in a batch.
        num_replicas: number of ranks.
        rank: this rank.
        seed: base seed; every rank must pass the same one.
        item_seeds: yield ``(index, seed)`` pairs (see :class:`EpochSampler`).

    Raises:
        ValueError: if ``batch_size`` is not a multiple of ``images_per_class``, if there are fewer identities than
            ``P``, or if the data set is too small for one batch per rank.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        batch_size: int,
        images_per_class: int = 4,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        item_seeds: bool = False,
    ) -> None:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if images_per_class < 1 or batch_size < images_per_class or batch_size % images_per_class:
            raise ValueError(
                f"data.batch_size ({batch_size}, per device) must be a positive multiple of data.images_per_class "
                f"({images_per_class}) for the identity-balanced sampler"
            )
        super().__init__(range(len(labels)), num_replicas=num_replicas, rank=rank, seed=seed, item_seeds=item_seeds)
        self.batch_size = batch_size
        self.images_per_class = images_per_class
        self.classes_per_batch = batch_size // images_per_class
        order = np.argsort(labels, kind="stable")
        _, starts = np.unique(labels[order], return_index=True)
        self.groups = np.split(order, starts[1:]) if len(order) else []
        if len(self.groups) < self.classes_per_batch:
            raise ValueError(
                f"identity-balanced batches of {self.classes_per_batch} identities x {images_per_class} images need "
                f"at least {self.classes_per_batch} identities, the data set has {len(self.groups)}; lower "
                "data.batch_size or raise data.images_per_class"
            )
        self.chunks_per_class = np.array([max(1, len(g) // images_per_class) for g in self.groups], dtype=np.int64)
        total_batches = int(self.chunks_per_class.sum()) // self.classes_per_batch
        self.batches_per_rank = total_batches // num_replicas
        if self.batches_per_rank == 0:
            raise ValueError(
                f"{len(labels)} images give {total_batches} identity-balanced batches of {batch_size}, fewer than one "
                f"per rank ({num_replicas} ranks); lower data.batch_size"
            )
        self.num_samples = self.batches_per_rank * batch_size
        self.total_size = self.num_samples * num_replicas

    def epoch_batches(self) -> np.ndarray:
        """All ranks' batches of epoch ``self.epoch``: ``(batches_per_rank * num_replicas, batch_size)`` indices."""
        rng = np.random.default_rng([self.seed, self.epoch])
        k, p = self.images_per_class, self.classes_per_batch
        chunks: list[np.ndarray] = []
        owner: list[int] = []
        rounds: list[int] = []
        for identity, group in enumerate(self.groups):
            if len(group) < k:
                pieces = rng.choice(group, size=(1, k), replace=True)
            else:
                pieces = rng.permutation(group)[: (len(group) // k) * k].reshape(-1, k)
            chunks.extend(pieces)
            owner.extend([identity] * len(pieces))
            rounds.extend(range(len(pieces)))
        # Round by round, in random order within a round: neighbouring chunks rarely share an identity.
        stream = np.lexsort((rng.random(len(chunks)), np.asarray(rounds)))
        batches: list[list[int]] = []
        current: list[int] = []
        deferred: deque[int] = deque()
        for chunk in stream.tolist():
            if owner[chunk] in {owner[c] for c in current}:
                deferred.append(chunk)
            else:
                current.append(chunk)
            if len(current) == p:
                batches.append(current)
                current = []
                for _ in range(len(deferred)):  # earlier conflicts go first into the next batch
                    waiting = deferred.popleft()
                    if len(current) < p and owner[waiting] not in {owner[c] for c in current}:
                        current.append(waiting)
                    else:
                        deferred.append(waiting)
        # Skewed data can strand chunks of a few identities at the end: fill the fixed number of batches with them.
        leftover = current + list(deferred)
        needed = self.batches_per_rank * self.num_replicas
        while len(batches) < needed:
            batches.append(leftover[:p])
            leftover = leftover[p:]
        selected = np.asarray(batches[:needed], dtype=np.int64)
        return np.stack(chunks)[selected].reshape(needed, self.batch_size)

    def rank_indices(self) -> list[int]:
        return self.epoch_batches()[self.rank :: self.num_replicas].reshape(-1).tolist()


def identity_labels(dataset: Dataset) -> np.ndarray:
    """The identity label of every item of a training set, without decoding its images where possible.

    Looks for, in order: a ``labels`` attribute; :class:`~crossres.data.synthetic.SyntheticFaces` (label
    ``i // images_per_identity``); ``samples`` of ``(path, label)`` pairs
    (:class:`~crossres.data.folder.ImageFolderFaces`); a ``dataset`` attribute (wrappers). Otherwise every item is
    read once.

    Args:
        dataset: a map-style training set whose items hold ``"label"``.

    Returns:
        int64 array of ``len(dataset)`` labels.
    """
    labels = getattr(dataset, "labels", None)
    if labels is not None:
        return np.asarray(labels, dtype=np.int64)
    per_identity = getattr(dataset, "images_per_identity", None)
    identities = getattr(dataset, "num_identities", None)
    if isinstance(per_identity, int) and isinstance(identities, int):
        return np.arange(per_identity * identities, dtype=np.int64) // per_identity
    samples = getattr(dataset, "samples", None)
    if isinstance(samples, list) and samples and isinstance(samples[0], tuple):
        return np.asarray([label for _, label in samples], dtype=np.int64)
    inner = getattr(dataset, "dataset", None)
    if isinstance(inner, Dataset):
        return identity_labels(inner)
    return np.asarray([int(dataset[i]["label"]) for i in range(len(dataset))], dtype=np.int64)  # type: ignore[arg-type]
