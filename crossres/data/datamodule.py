"""`FaceDataModule`: one training set, N named verification pair sets, GPU-side degradation."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import albumentations as A
import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset

from crossres.data.needs import DataNeeds
from crossres.data.options import AugmentationOptions, DegradationOptions, SyntheticOptions, options
from crossres.data.pairs import PairDataset, PairSet
from crossres.data.samplers import EpochSampler, IdentityBalancedSampler, ShuffledSampler, identity_labels
from crossres.errors import InputError
from crossres.transforms.degradation import BatchDegradation, CameraDegradation, DegradedViews, ResolutionSampler
from crossres.transforms.functional import degrade, to_float

__all__ = ["FaceDataModule"]

# btm-stm protocol folders are named after the datasets, the insightface `.bin` files after their files.
_BTM_STM_FOLDERS = {"lfw": "LFW", "agedb_30": "AgeDB", "agedb": "AgeDB", "cfp_fp": "CFP-FP", "calfw": "CALFW"}
_BTM_STM_FOLDERS["cplfw"] = "CPLFW"

# iBUG 68-point order after a horizontal flip (the subject's left becomes right).
_IBUG_FLIP = (
    list(range(16, -1, -1))
    + list(range(26, 16, -1))
    + [27, 28, 29, 30, 35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]
)
# Helen classes swapped by a flip: left/right brow (2, 3) and eye (4, 5).
_PARSING_FLIP = torch.tensor([0, 1, 3, 2, 5, 4, 6, 7, 8, 9, 10])


class _Augmented(Dataset):
    """CPU-side albumentations (Knoche et al. §3.1: flip, brightness/saturation, random crop).

    Landmarks and parsing maps follow the image: a horizontal flip also re-orders the 68 iBUG points and
    swaps the left/right parsing classes, which albumentations alone does not do.

    An index may come as ``(index, seed)`` (:class:`~crossres.data.samplers.EpochSampler` with ``item_seeds``): the
    augmentation of that item is then drawn from ``seed`` alone, so a resumed run replays it exactly, whichever
    worker reads the item.
    """

    def __init__(self, dataset: Dataset, transform: A.Compose | None) -> None:
        self.dataset = dataset
        self.transform = transform
        self._np_rng = np.random.Generator(np.random.PCG64(0))
        self._py_rng = random.Random(0)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def _seed_transform(self, seed: int) -> None:
        assert self.transform is not None
        # Reseeding in place costs ~40 us; albumentations' set_random_seed builds new generators (~600 us).
        self._np_rng.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": seed, "inc": _PCG64_INCREMENT},
            "has_uint32": 0,
            "uinteger": 0,
        }
        self._py_rng.seed(seed)
        if self.transform.random_generator is not self._np_rng or self.transform.py_random is not self._py_rng:
            self.transform.set_random_state(self._np_rng, self._py_rng)

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        seed = None
        if isinstance(index, tuple):
            index, seed = index
        item = dict(self.dataset[index])
        if self.transform is None:
            return item
        if seed is not None:
            self._seed_transform(seed)
        image = item["image"].permute(1, 2, 0).numpy()
        kwargs: dict[str, Any] = {"image": image}
        if "landmarks" in item:
            kwargs["keypoints"] = item["landmarks"].numpy()
        if "parsing" in item:
            kwargs["mask"] = item["parsing"].numpy()
        out = self.transform(**kwargs)
        item["image"] = torch.from_numpy(np.ascontiguousarray(out["image"])).permute(2, 0, 1)
        flipped = any(name == "HorizontalFlip" for name, _ in out["applied_transforms"])
        if "landmarks" in item:
            landmarks = torch.as_tensor(np.asarray(out["keypoints"], dtype=np.float32)).reshape(-1, 2)
            item["landmarks"] = landmarks[_IBUG_FLIP] if flipped else landmarks
        if "parsing" in item:
            parsing = torch.as_tensor(np.asarray(out["mask"]), dtype=torch.long)
            item["parsing"] = _PARSING_FLIP[parsing] if flipped else parsing
        return item


_PCG64_INCREMENT = 0xDA3E39CB94B95BDB  # any odd number: the PCG64 stream of per-item reseeding


def _seed_worker(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    dataset = info.dataset if info is not None else None
    transform = getattr(dataset, "transform", None)
    if transform is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(torch.initial_seed() % 2**32)


# The option groups' defaults (frozen dataclasses: one instance serves every data module).
_SYNTHETIC, _DEGRADATION, _AUGMENTATION = SyntheticOptions(), DegradationOptions(), AugmentationOptions()


class FaceDataModule(pl.LightningDataModule):
    """Training faces + named verification pair sets, degraded on the device.

    The degradation (Knoche et al. 2021 §3.3, Eq. (1)) runs in :meth:`on_after_batch_transfer` for every
    split, sanity checking included: training batches gain ``lr`` and ``lr_size``; evaluation batches gain
    one LR view of both images per protocol.

    ``synthetic``, ``degradation`` and ``augmentation`` are option groups (:mod:`crossres.data.options`): each
    takes its dataclass or a mapping of its fields; ``hparams`` holds it as a dict (``hparams["degradation"]``).

    Args:
        train_format: ``"synthetic"`` (:class:`~crossres.data.synthetic.SyntheticFaces`, no files),
            ``"recordio"`` (insightface ``train.rec``/``train.idx``/``property`` under ``train_root``) or
            ``"folder"`` (``train_root/<identity>/*.jpg``).
        train_root: directory of the training data for ``recordio`` and ``folder``.
        train_people: for ``folder``: an LFW people file (``peopleDevTrain.txt``, or ``people.txt`` for all of its
            folds; :func:`crossres.data.lfw.load_lfw_people`) restricting ``train_root`` to the people it lists, so
            that training and test people stay disjoint. Listed people without images under ``train_root`` (e.g.
            not found by the aligner) are counted in a warning.
        train_landmarks: for ``folder``: a file of 68 iBUG landmarks per image (the ``landmarks.json`` that
            ``crossres align`` writes, or any JSON/CSV in iBUG order, paths relative to ``train_root``); the
            items then carry ``"landmarks"``, from which RIM derives its heatmap and parsing priors.
        skip_corrupt: for ``recordio`` and ``folder``: skip unreadable records or images (undecodable, or not of
            ``image_size``; each is logged once, the number skipped per epoch as ``train_corrupt_skipped``) instead
            of failing with the file (and record index).
        train_classes: training identities, when the training data is not read: ``validate``, ``test`` and
            ``predict`` of a checkpoint take it from the checkpoint (the CLI sets it), so scoring needs no training
            set. ``None`` (training): counted in the training data.
        image_size: HR size ``(h, w)`` of every face, e.g. ``[112, 112]`` or ``[112, 96]``.
        val_sets: evaluation pair sets: ``"synthetic"``, a path to an insightface ``.bin`` (``lfw.bin`` …),
            a path to an LFW pairs file whose images lie beside it under ``lfw/``, ``PAIRS_FILE@IMAGE_DIR`` for an
            LFW pairs file over another (aligned) folder ``IMAGE_DIR/<name>/<name>_0001.png|jpg``
            (``data/lfw/pairsDevTest.txt@data/lfw_dlib150``), or an identity folder ``DIR/<identity>/*.png``
            (every same-identity pair and as many different-identity pairs drawn with ``seed``,
            :func:`crossres.data.lfw.identity_folder_pairs`). The set's name in metric keys is the file stem
            (``lfw`` for a file named ``pairs.txt``) or the folder's name; names must differ.
        test_sets: pair sets for ``test``; ``None`` uses ``val_sets``.
        protocols: LR sizes at which every pair set is evaluated: ints (``14`` -> 14 px), ``"16x12"``, or
            Knoche protocol names (``low_res_focus``, ``mid_res_focus``, ``high_res_focus``, ``avg_sizes``).
        protocol_dir: root of the Knoche protocol CSVs (``<protocol_dir>/LFW/low_res_focus.csv``); without
            it, the Knoche ranges are drawn with ``seed``.
        knoche_scale: factor from the Knoche sizes (sides of 112 px ArcFace crops) to this data's faces (``None``:
            ``image_size[0] / 112``); dlib's 150 px chips frame the face wider, see ``docs/real_faces.md``.
        synthetic: the synthetic faces (:class:`~crossres.data.options.SyntheticOptions`).
        degradation: the device-side degradation of training faces and the resampling of evaluation probes
            (:class:`~crossres.data.options.DegradationOptions`).
        augmentation: the CPU-side augmentation of training faces (:class:`~crossres.data.options.AugmentationOptions`).
        train_sampler: order of the training faces: ``"random"`` (a new permutation every epoch) or
            ``"identity_balanced"`` (batches of ``batch_size / images_per_class`` identities x ``images_per_class``
            images). Both are rank-aware (disjoint indices per rank; Lightning does not replace them under DDP),
            follow ``seed`` and the epoch, and resume mid-epoch from a checkpoint.
        images_per_class: images of one identity in an identity-balanced batch (K of P x K).
        batch_size: training batch size (per device).
        eval_batch_size: evaluation batch size (pairs per batch, per device).
        num_workers: DataLoader workers.
        pin_memory: pin host memory for faster transfer to the GPU.
        seed: seed of the training order, the CPU augmentations, the device-side degradation and of generated
            protocols. Every random draw of the training data is a function of ``(seed, epoch, batch, rank)``, so
            a run resumed from a mid-epoch checkpoint (``--ckpt_path last``) sees exactly the batches it would
            have seen (the position in the epoch is saved in the checkpoint, :meth:`state_dict`).
    """

    def __init__(
        self,
        train_format: Literal["synthetic", "recordio", "folder"] = "synthetic",
        train_root: str | None = None,
        train_people: str | None = None,
        train_landmarks: str | None = None,
        skip_corrupt: bool = False,
        train_classes: int | None = None,
        image_size: tuple[int, int] = (112, 112),
        val_sets: list[str] | None = None,
        test_sets: list[str] | None = None,
        protocols: list[int | str] | None = None,
        protocol_dir: str | None = None,
        knoche_scale: float | None = None,
        synthetic: SyntheticOptions = _SYNTHETIC,
        degradation: DegradationOptions = _DEGRADATION,
        augmentation: AugmentationOptions = _AUGMENTATION,
        train_sampler: Literal["random", "identity_balanced"] = "random",
        images_per_class: int = 4,
        batch_size: int = 64,
        eval_batch_size: int = 128,
        num_workers: int = 2,
        pin_memory: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.synthetic = options(SyntheticOptions, synthetic, "data.synthetic")
        self.degradation = options(DegradationOptions, degradation, "data.degradation")
        self.augmentation = options(AugmentationOptions, augmentation, "data.augmentation")
        self.save_hyperparameters()  # LightningCLI's values: the groups as dicts, as in config.yaml
        # Given as dataclasses (in Python), the groups are saved as dicts too: checkpoints hold these hyper-parameters
        # and load with weights_only.
        groups = {
            "synthetic": dataclasses.asdict(self.synthetic),
            "degradation": dataclasses.asdict(self.degradation),
            "augmentation": dataclasses.asdict(self.augmentation),
        }
        self.save_hyperparameters(dict(self.hparams) | groups)
        self.image_size = _size_pair(image_size, "image_size")
        self.val_sets = list(val_sets) if val_sets is not None else ["synthetic"]
        self.test_sets = list(test_sets) if test_sets is not None else self.val_sets
        self.protocols = list(protocols) if protocols is not None else [7, 14, 28, 56]
        deg = self.degradation
        try:
            self.sampler = ResolutionSampler(
                policy=deg.lr_policy,
                sizes=deg.lr_sizes if deg.lr_sizes is not None else [7, 14, 28, 56],
                per=deg.lr_per,
                lr_prob=deg.lr_prob,
                hr_size=self.image_size,
            )
        except ValueError as err:
            raise InputError(
                f"data.degradation.lr_sizes={deg.lr_sizes} (data.degradation.lr_policy={deg.lr_policy!r}, "
                f"data.degradation.lr_prob={deg.lr_prob}): {err}"
            ) from None
        try:
            camera = CameraDegradation(
                blur_prob=deg.blur_prob,
                motion_prob=deg.motion_blur_prob,
                noise_prob=deg.noise_prob,
                jpeg_prob=deg.jpeg_prob,
            )
        except ValueError as err:
            raise InputError(
                f"data.degradation (blur_prob={deg.blur_prob}, motion_blur_prob={deg.motion_blur_prob}, "
                f"noise_prob={deg.noise_prob}, jpeg_prob={deg.jpeg_prob}): {err}"
            ) from None
        self.train_degradation = BatchDegradation(sampler=self.sampler, backend=deg.backend, camera=camera, seed=seed)
        self.lr_views = {_protocol_name(v): _lr_view_size(v, "degradation.lr_views") for v in deg.lr_views or []}
        self._train_set: Dataset | None = None
        self._pair_sets: dict[str, PairDataset] = {}
        # Position of the training data in its epoch (batches consumed), saved in checkpoints.
        self._train_sampler: EpochSampler | None = None
        self._epoch = 0
        self._batch_in_epoch = 0
        self._resume: dict[str, int] | None = None
        self.num_classes = self._count_classes()
        if self.num_classes < 2:
            if train_format == "synthetic":
                identities = self.synthetic.num_identities
                raise InputError(f"data.synthetic.num_identities={identities}: training needs at least 2 identities")
            layout = " (one folder per identity: <train_root>/<identity>/*.jpg)" if train_format == "folder" else ""
            raise InputError(
                f"data.train_root {train_root} holds {self.num_classes} identity; training needs at least 2{layout}"
            )

    # ----------------------------------------------------------------------------------------------- sets
    def _count_classes(self) -> int:
        if self.hparams["train_classes"] is not None:
            return int(self.hparams["train_classes"])
        if self.hparams["train_format"] == "synthetic":
            return int(self.synthetic.num_identities)
        return int(self._build_train_set().num_classes)  # type: ignore[attr-defined]

    def _build_train_set(self) -> Dataset:
        if self._train_set is not None:
            return self._train_set
        fmt, root = self.hparams["train_format"], self.hparams["train_root"]
        dataset: Dataset
        if fmt == "synthetic":
            from crossres.data.synthetic import SyntheticFaces

            synthetic = self.synthetic
            dataset = SyntheticFaces(
                num_identities=synthetic.num_identities,
                images_per_identity=synthetic.images_per_identity,
                image_size=self.image_size,
                seed=synthetic.seed,
                cache=synthetic.cache,
                **_nuisance(synthetic.difficulty, synthetic.diversity),
            )
        else:
            if root is None:
                raise InputError(f"data.train_root is required when data.train_format is {fmt!r}")
            from crossres.data.recordio import RecordIOFaces

            landmarks = self.hparams["train_landmarks"]
            if landmarks is not None and fmt != "folder":
                raise InputError(f"data.train_landmarks needs data.train_format 'folder', got {fmt!r}")
            if self.hparams.get("train_people") is not None and fmt != "folder":
                raise InputError(f"data.train_people needs data.train_format 'folder', got {fmt!r}")
            if fmt == "recordio":
                dataset = RecordIOFaces(root, skip_corrupt=self.hparams["skip_corrupt"])
            else:
                dataset = self._folder_train_set(root, landmarks)
        self._train_set = dataset
        return dataset

    def _folder_train_set(self, root: str, landmarks: str | None) -> Dataset:
        """``train_root/<identity>/*``, restricted to the people of ``train_people`` when given."""
        from crossres.data.folder import ImageFolderFaces
        from crossres.data.lfw import lfw_people_names

        people_file = self.hparams.get("train_people")
        image_size, skip_corrupt = self.image_size, self.hparams["skip_corrupt"]
        if people_file is None:
            return ImageFolderFaces(root, landmarks=landmarks, image_size=image_size, skip_corrupt=skip_corrupt)
        people = set(lfw_people_names(people_file))
        if Path(root).is_dir() and not any((Path(root) / name).is_dir() for name in people):
            raise InputError(
                f"data.train_people {people_file}: none of its {len(people)} people ({', '.join(sorted(people)[:3])}, "
                f"...) has a folder under data.train_root {root}; the people file must list folder names of "
                f"{root}/<person>/ (LFW's peopleDevTrain.txt for an aligned LFW folder)"
            )
        dataset = ImageFolderFaces(
            root, identities=people, landmarks=landmarks, image_size=image_size, skip_corrupt=skip_corrupt
        )
        missing = dataset.missing_identities
        if missing:
            rank_zero_warn(
                f"data.train_people {people_file}: {len(missing)} of the {len(people)} listed people have no images "
                f"under {root} (e.g. {', '.join(missing[:3])}); training on the other {len(people) - len(missing)}"
            )
        return dataset

    def _cpu_transform(self) -> A.Compose | None:
        aug = self.augmentation
        steps: list[Any] = []
        if aug.hflip > 0:
            steps.append(A.HorizontalFlip(p=aug.hflip))
        if aug.brightness > 0 or aug.saturation > 0:
            steps.append(A.ColorJitter(brightness=aug.brightness, contrast=0.0, saturation=aug.saturation, hue=0.0))
        if aug.crop_scale < 1.0:
            h, w = self.image_size
            steps.append(A.RandomResizedCrop(size=(h, w), scale=(aug.crop_scale, 1.0), ratio=(w / h, w / h)))
        if not steps:
            return None
        keypoints = A.KeypointParams(format="xy", remove_invisible=False)
        return A.Compose(steps, keypoint_params=keypoints, seed=self.hparams["seed"], save_applied_params=True)

    def pair_set(self, spec: str) -> PairDataset:
        """Return the evaluation pair set named by ``spec``, with every configured protocol, built once."""
        if spec in self._pair_sets:
            return self._pair_sets[spec]
        pairs = self._load_pair_set(spec)
        csv_dir = None
        if self.hparams["protocol_dir"] is not None:
            csv_dir = Path(self.hparams["protocol_dir"]) / _BTM_STM_FOLDERS.get(pairs.name, pairs.name)
        from crossres.data.protocols import build_protocols

        try:
            protocols = build_protocols(
                self.protocols,
                num_pairs=len(pairs),
                hr_size=self.image_size,
                seed=self.hparams["seed"],
                csv_dir=csv_dir,
                knoche_scale=self.hparams.get("knoche_scale"),
            )
        except ValueError as err:
            raise InputError(f"data.protocols={self.protocols} (pair set {spec}): {err}") from None
        self._pair_sets[spec] = PairDataset(pairs, protocols)
        return self._pair_sets[spec]

    def _load_pair_set(self, spec: str) -> PairSet:
        if spec == "synthetic":
            from crossres.data.synthetic import synthetic_pair_set

            synthetic = self.synthetic
            return synthetic_pair_set(
                name="synthetic",
                num_pairs=synthetic.pairs,
                num_identities=synthetic.pair_identities,
                image_size=self.image_size,
                seed=synthetic.seed + 1,
                **_nuisance(synthetic.difficulty, synthetic.diversity),
            )
        path = Path(spec)
        from crossres.data.bin import load_bin
        from crossres.data.lfw import identity_folder_pairs, load_lfw_pairs

        if not path.exists() and "@" in spec:
            pairs = _pairs_over_folder(spec)
        elif path.is_dir():
            pairs = identity_folder_pairs(path, seed=self.hparams["seed"])
        elif not path.exists():
            raise FileNotFoundError(
                f"evaluation pair set {spec!r} (data.val_sets/test_sets) not found: expected 'synthetic', an "
                "insightface .bin file (lfw.bin, agedb_30.bin, ...), an LFW pairs file (images in <its dir>/lfw/), "
                "PAIRS_FILE@IMAGE_DIR or an identity folder DIR/<identity>/*.png"
            )
        elif path.suffix == ".bin":
            pairs = load_bin(path)
        else:
            pairs = load_lfw_pairs(path, path.parent / "lfw", name=_pairs_file_name(path))
        if len(pairs.images):
            size = tuple(pairs.images[0].shape[-2:])
            if size != self.image_size:
                raise InputError(
                    f"evaluation pair set {spec} holds {size[0]}x{size[1]} px faces but data.image_size is "
                    f"{list(self.image_size)}: set data.image_size to [{size[0]}, {size[1]}] or use a pair set of "
                    "that size"
                )
        return pairs

    def pair_set_names(self, split: Literal["val", "test"]) -> list[str]:
        """Names (as used in metric keys) of the pair sets evaluated in ``split``."""
        specs = self.val_sets if split == "val" else self.test_sets
        names = [self.pair_set(spec).pair_set.name for spec in specs]
        for k, name in enumerate(names):
            if name in names[:k]:
                raise InputError(
                    f"data.{split}_sets: {specs[names.index(name)]!r} and {specs[k]!r} are both named {name!r} in "
                    "metric keys; give the pairs files different names"
                )
        return names

    # ---------------------------------------------------------------------------------------- method needs
    def check_needs(self, needs: DataNeeds, method: str) -> None:
        """Check a method's needs against this data module's options, before any batch is read.

        The one place where a method's demands on the training data meet the data module (``CrossResMethod`` calls
        it at ``setup("fit")``).

        Args:
            needs: what the method needs (:meth:`CrossResMethod.data_needs
                <crossres.methods.base.CrossResMethod.data_needs>`).
            method: the method's name in messages, e.g. ``"BatchCR"``.

        Raises:
            InputError: for a need these options do not meet; the message names the method and the ``data.*`` key
                to set. The paper's settings (``needs.lr_prob``, ``needs.several_lr_sizes``) only warn.
        """
        deg, sampler = self.degradation, self.sampler
        if needs.lr_views:
            missing = [v for v in needs.lr_views if _protocol_name(v) not in self.lr_views]
            if missing:
                wanted, lacking = (f"[{', '.join(views)}]" for views in (needs.lr_views, missing))
                source = f"{needs.lr_views_key}={wanted}" if needs.lr_views_key else wanted
                raise InputError(
                    f"{method} trains on batch['lr_views'] at {source}, but data.degradation.lr_views lacks {lacking}: "
                    f"set data.degradation.lr_views: {wanted}"
                )
        if needs.any_lr_views and not self.lr_views:
            raise InputError(
                f"{method} has one branch per LR view, but data.degradation.lr_views is empty; set "
                "data.degradation.lr_views, e.g. [7, 14, 28, 56]"
            )
        if needs.landmarks:
            fmt = self.hparams["train_format"]
            if fmt == "recordio" or (fmt == "folder" and self.hparams["train_landmarks"] is None):
                raise InputError(
                    f"{method} needs 68 landmarks per training face (batch['landmarks']), but data.train_format="
                    f"{fmt!r} without data.train_landmarks has none: set data.train_landmarks (the landmarks.json of "
                    "crossres align; data.train_format: folder) or train on data.train_format: synthetic"
                )
        per_class_needed = needs.images_per_identity
        if per_class_needed > 1:
            train_sampler, per_class = self.hparams["train_sampler"], int(self.hparams["images_per_class"])
            if train_sampler != "identity_balanced" or per_class < per_class_needed:
                raise InputError(
                    f"{method} needs at least {per_class_needed} images per identity in every batch, but "
                    f"data.train_sampler={train_sampler!r}, data.images_per_class={per_class}; set "
                    f"data.train_sampler: identity_balanced and data.images_per_class: {per_class_needed} or more "
                    "(data.batch_size a multiple of it)"
                )
        if needs.mixed_batches:
            if sampler.lr_prob in (0.0, 1.0):
                what = "no face" if sampler.lr_prob == 0.0 else "every face"
                raise InputError(
                    f"{method} trains on batches that mix HR and LR faces, but data.degradation.lr_prob="
                    f"{sampler.lr_prob} degrades {what}; set data.degradation.lr_prob between 0 and 1 (e.g. 0.5)"
                )
            if sampler.per != "sample":
                raise InputError(
                    f"{method} needs HR and LR faces within each batch, but data.degradation.lr_per={sampler.per!r} "
                    "degrades whole batches; set data.degradation.lr_per: sample"
                )
            if all(tuple(size) == tuple(sampler.hr_size) for size in sampler.sizes) and sampler.policy != "range":
                raise InputError(
                    f"{method}: every training LR size in data.degradation.lr_sizes equals the HR size "
                    f"{sampler.hr_size}, so no face is degraded; set data.degradation.lr_sizes to LR sizes below it"
                )
        if needs.lr_prob is not None and sampler.lr_prob != needs.lr_prob:
            rank_zero_warn(
                f"{method}: data.degradation.lr_prob={sampler.lr_prob}, but the paper degrades a share of "
                f"{needs.lr_prob} of the training faces (data.degradation.lr_prob: {needs.lr_prob})"
            )
        if needs.several_lr_sizes is not None:
            several = sampler.policy == "range" or len(sampler.sizes) > 1
            if several and not needs.several_lr_sizes:
                rank_zero_warn(
                    f"{method} trains at one LR size, but data.degradation.lr_sizes={deg.lr_sizes} "
                    f"(data.degradation.lr_policy={deg.lr_policy!r}) draws several; set data.degradation.lr_policy: "
                    "fixed with one size"
                )
            if not several and needs.several_lr_sizes:
                rank_zero_warn(
                    f"{method} draws each face's LR size from several, but the training LR sizes {sampler.sizes} are "
                    "one; set data.degradation.lr_policy: choice, data.degradation.lr_sizes: [7, 14, 28, 56]"
                )

    # ------------------------------------------------------------------------------------------- loaders
    def setup(self, stage: str) -> None:
        if stage == "fit":
            self._build_train_set()
        specs = self.test_sets if stage in ("test", "predict") else self.val_sets
        for spec in specs:
            self.pair_set(spec)

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        workers = self.hparams["num_workers"]
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=shuffle,
            num_workers=workers,
            pin_memory=self.hparams["pin_memory"] and torch.cuda.is_available(),
            persistent_workers=workers > 0,
            worker_init_fn=_seed_worker,
        )

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (int(trainer.world_size), int(trainer.global_rank)) if trainer is not None else (1, 0)

    def plain_train_dataloader(self, batch_size: int | None = None) -> DataLoader:
        """The training faces once, in order, without augmentation or degradation (``{"image", "label"}``
        batches): for statistics of the training set, e.g. a classifier's weights imprinted from a pretrained
        recogniser.

        Args:
            batch_size: faces per batch (``None``: ``eval_batch_size``).
        """
        hp = self.hparams
        return DataLoader(
            self._build_train_set(),
            batch_size=batch_size or hp["eval_batch_size"],
            shuffle=False,
            num_workers=hp["num_workers"],
            collate_fn=_image_and_label,
        )

    def train_dataloader(self) -> DataLoader:
        dataset = _Augmented(self._build_train_set(), self._cpu_transform())
        hp = self.hparams
        world_size, rank = self._world()
        sampler: EpochSampler
        if hp["train_sampler"] == "identity_balanced":
            sampler = IdentityBalancedSampler(
                identity_labels(dataset.dataset),
                batch_size=hp["batch_size"],
                images_per_class=hp["images_per_class"],
                num_replicas=world_size,
                rank=rank,
                seed=hp["seed"],
                item_seeds=True,
            )
        elif hp["train_sampler"] == "random":
            sampler = ShuffledSampler(dataset, num_replicas=world_size, rank=rank, seed=hp["seed"], item_seeds=True)
        else:
            raise ValueError(f"data.train_sampler must be 'random' or 'identity_balanced', got {hp['train_sampler']!r}")
        # The epoch is set here too: Lightning's set_epoch comes after the loader has started prefetching.
        epoch = int(self.trainer.current_epoch) if self.trainer is not None else 0
        skip = 0
        if self._resume is not None:
            epoch, skip = self._resume["train_epoch"], self._resume["train_batches"]
            if (self._resume.get("world_size"), self._resume.get("batch_size")) != (world_size, hp["batch_size"]):
                rank_zero_warn(
                    "resuming with another world size or batch size than the checkpoint's: the rest of this epoch "
                    "is not the one the interrupted run would have seen"
                )
            self._resume = None
        sampler.set_epoch(epoch)
        sampler.fast_forward(skip * hp["batch_size"])
        self._train_sampler, self._epoch, self._batch_in_epoch = sampler, epoch, skip
        workers = hp["num_workers"]
        return DataLoader(
            dataset,
            batch_size=hp["batch_size"],
            sampler=sampler,
            drop_last=True,
            num_workers=workers,
            pin_memory=hp["pin_memory"] and torch.cuda.is_available(),
            persistent_workers=workers > 0,
            worker_init_fn=_seed_worker,
            generator=torch.Generator().manual_seed(hp["seed"]),  # worker seeds without touching the global RNG
        )

    # ------------------------------------------------------------------------------------------- resuming
    def state_dict(self) -> dict[str, Any]:
        """Where the training data stands: epoch and batches consumed in it (saved in every checkpoint).

        Returns:
            ``{"train_epoch", "train_batches", "world_size", "batch_size"}``, or ``{}`` before training.
        """
        if self._train_sampler is None:
            return {}
        epoch, batches = self._epoch, self._batch_in_epoch
        trainer = self.trainer
        per_epoch = getattr(trainer, "num_training_batches", math.inf) if trainer is not None else math.inf
        if batches >= per_epoch:  # saved at the end of an epoch: resume at the start of the next one
            epoch, batches = epoch + 1, 0
        world_size, _ = self._world()
        return {
            "train_epoch": epoch,
            "train_batches": batches,
            "world_size": world_size,
            "batch_size": int(self.hparams["batch_size"]),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the training data where :meth:`state_dict` left it (applied by the next ``train_dataloader``)."""
        if "train_epoch" in state_dict:
            self._resume = {k: int(v) for k, v in state_dict.items()}

    def _train_batch_seed(self) -> int:
        _, rank = self._world()
        words = [self.hparams["seed"], rank, self._epoch, self._batch_in_epoch]
        return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> np.uint64(1))

    def _eval_loaders(self, specs: Sequence[str]) -> list[DataLoader]:
        return [self._loader(self.pair_set(s), self.hparams["eval_batch_size"], shuffle=False) for s in specs]

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders(self.val_sets)

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders(self.test_sets)

    def predict_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders(self.test_sets)

    # ------------------------------------------------------------------------------------- degradation
    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Degrade on the device: every split, sanity checking included (Knoche et al. §3.3, Eq. (1))."""
        if "image1" in batch:
            return self._eval_batch(batch, dataloader_idx)
        out = dict(batch)
        sampler = self._train_sampler
        epoch = int(sampler.epoch) if sampler is not None else self._epoch
        if epoch != self._epoch:
            self._epoch, self._batch_in_epoch = epoch, 0
        # The degradation's draws of this batch are a function of (seed, rank, epoch, batch): a resumed run
        # replays them, and every rank draws its own.
        self.train_degradation.reseed(self._train_batch_seed())
        self._batch_in_epoch += 1
        out.update(self.train_degradation(to_float(out.pop("image"))))
        if self.lr_views:
            backend = self.degradation.backend
            out["lr_views"] = {name: degrade(out["hr"], size, backend=backend) for name, size in self.lr_views.items()}
        return out

    def _eval_batch(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        trainer = self.trainer
        testing = trainer is not None and (trainer.testing or trainer.predicting)
        specs = self.test_sets if testing else self.val_sets
        hr1, hr2 = to_float(batch["image1"]), to_float(batch["image2"])
        backend = self.degradation.backend
        return {
            "hr1": hr1,
            "hr2": hr2,
            "lr1": DegradedViews(hr1, batch["lr_size"], backend=backend),
            "lr2": DegradedViews(hr2, batch["lr_size"], backend=backend),
            "lr_size": batch["lr_size"],
            "issame": batch["issame"],
            "pair_id": batch["pair_id"],
            "pair_set": self.pair_set(specs[dataloader_idx]).pair_set.name,
        }


def _image_and_label(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {
        "image": torch.stack([torch.as_tensor(item["image"]) for item in items]),
        "label": torch.tensor([int(item["label"]) for item in items]),
    }


def _pairs_file_name(path: Path) -> str:
    """A pairs file's name in metric keys: ``lfw`` for LFW's ``pairs.txt`` (btm-stm's folder), else its stem."""
    return "lfw" if path.name == "pairs.txt" else path.stem


def _pairs_over_folder(spec: str) -> PairSet:
    """``PAIRS_FILE@IMAGE_DIR``: an LFW pairs file over the images of another (aligned) folder."""
    from crossres.data.lfw import load_lfw_pairs

    pairs_file, image_dir = (Path(part) for part in spec.rsplit("@", 1))
    if not pairs_file.is_file():
        raise FileNotFoundError(
            f"evaluation pair set {spec!r}: pairs file {pairs_file} not found (PAIRS_FILE@IMAGE_DIR: an LFW pairs "
            "file, then the folder of its images)"
        )
    if pairs_file.suffix == ".bin":
        raise InputError(f"evaluation pair set {spec!r}: a .bin file holds its images; drop '@{image_dir}'")
    if not image_dir.is_dir():
        raise FileNotFoundError(
            f"evaluation pair set {spec!r}: image folder {image_dir} not found (PAIRS_FILE@IMAGE_DIR: the images are "
            "IMAGE_DIR/<name>/<name>_0001.png or .jpg, e.g. the output of crossres align)"
        )
    return load_lfw_pairs(pairs_file, image_dir, name=_pairs_file_name(pairs_file))


def _size_pair(size: int | Sequence[int], key: str) -> tuple[int, int]:
    pair = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(pair) != 2 or min(pair) < 1:
        raise InputError(f"data.{key} must be (height, width) with positive sides, got {size!r}")
    return pair  # type: ignore[return-value]


def _protocol_name(size: int | str) -> str:
    return f"{size}px"


def _lr_view_size(size: int | str, key: str) -> int | tuple[int, int]:
    text = str(size)
    try:
        if "x" in text:
            h, w = (int(v) for v in text.split("x"))
            return (h, w)
        return int(text)
    except ValueError:
        raise InputError(f"data.{key}: {size!r} is not a size; expected an int (14) or 'HxW' ('16x12')") from None


def _nuisance(difficulty: float, diversity: float) -> dict[str, Any]:
    knobs: dict[str, Any] = {k: difficulty for k in ("pose", "illumination", "expression", "clutter", "noise")}
    return knobs | {"diversity": diversity}
