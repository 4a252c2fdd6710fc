"""The contract between methods and the data module: `DataNeeds`, declared by a method, checked by the data module."""

from __future__ import annotations

import warnings
from types import SimpleNamespace
from typing import Any

import pytest

from crossres.data.datamodule import FaceDataModule
from crossres.data.needs import DataNeeds
from crossres.data.options import DegradationOptions, SyntheticOptions
from crossres.errors import InputError
from crossres.methods.base import CrossResMethod
from crossres.methods.baseline import Baseline
from crossres.methods.batch_cr import BatchCR
from crossres.methods.dcr import DCRTwoStage
from crossres.methods.guided_cnn import GuidedCNN
from crossres.methods.octuplet import Octuplet
from crossres.methods.rim import RIM
from crossres.methods.siamese_cr import SiameseCR

from .conftest import TINY_RIM

RECOGNISER: dict[str, Any] = {"backbone_kwargs": {"width": 8}, "embedding_size": 16, "image_size": (32, 32)}
RIM_SMALL: dict[str, Any] = {**TINY_RIM, "teacher_embedding_size": 16, "teacher_weights": None}


def _dm(**kwargs: Any) -> FaceDataModule:
    degradation = kwargs.pop("degradation", {})
    options: dict[str, Any] = {
        "image_size": (32, 32),
        "synthetic": SyntheticOptions(num_identities=4, images_per_identity=4, pairs=20),
        "degradation": DegradationOptions(**({"lr_policy": "fixed", "lr_sizes": [8]} | degradation)),
        "batch_size": 8,
        "num_workers": 0,
    }
    return FaceDataModule(**(options | kwargs))


def _refused(needs: DataNeeds, dm: FaceDataModule, *keys: str) -> str:
    with pytest.raises(InputError) as error:
        dm.check_needs(needs, "Method")
    message = str(error.value)
    assert "Method" in message and all(key in message for key in keys), message
    return message


def _passes(needs: DataNeeds, dm: FaceDataModule) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dm.check_needs(needs, "Method")


# --------------------------------------------------------------------------------------------- the declarations
@pytest.mark.parametrize(
    "method, needs",
    [
        (lambda: Baseline(num_classes=4, **RECOGNISER), DataNeeds()),
        (lambda: BatchCR(num_classes=4, **RECOGNISER), DataNeeds(mixed_batches=True, lr_prob=0.5)),
        (lambda: SiameseCR(mode="st", num_classes=4, **RECOGNISER), DataNeeds(lr_prob=1.0, several_lr_sizes=False)),
        (lambda: SiameseCR(mode="st_m1", num_classes=4, **RECOGNISER), DataNeeds(lr_prob=1.0, several_lr_sizes=True)),
        (lambda: SiameseCR(mode="st_m2", num_classes=4, **RECOGNISER), DataNeeds(any_lr_views=True)),
        (
            lambda: Octuplet(num_classes=4, recognizer_weights=None, **RECOGNISER),
            DataNeeds(images_per_identity=2, lr_prob=1.0),
        ),
        (
            lambda: DCRTwoStage(num_classes=4, image_size=(48, 48), trunk_kwargs={"width": 2}, embedding_size=16),
            DataNeeds(lr_views=("40x40", "6x6"), lr_views_key="model.trunk_resolutions"),
        ),
        (
            lambda: DCRTwoStage(
                num_classes=4, image_size=(48, 48), stage=2, trunk_kwargs={"width": 2}, embedding_size=16,
                branch_features=8, branch_sizes=[4, 8], trunk_weights=None,
            ),
            DataNeeds(lr_views=("4", "8"), lr_views_key="model.branch_sizes"),
        ),  # fmt: skip
        (lambda: GuidedCNN(num_classes=4, guide_weights=None, **RECOGNISER), DataNeeds()),
        (
            lambda: GuidedCNN(num_classes=4, guide_weights=None, learner_sizes=[4, 8], **RECOGNISER),
            DataNeeds(lr_views=("4", "8"), lr_views_key="model.learner_sizes"),
        ),
        (lambda: RIM(num_classes=4, image_size=(32, 32), **RIM_SMALL), DataNeeds(landmarks=True)),
        (lambda: RIM(num_classes=4, image_size=(32, 32), use_priors=False, **RIM_SMALL), DataNeeds()),
    ],
    ids=[
        "baseline", "batch_cr", "siamese_st", "siamese_st_m1", "siamese_st_m2", "octuplet", "dcr_stage1",
        "dcr_stage2", "guided_one", "guided_two", "rim", "rim_no_priors",
    ],
)  # fmt: skip
def test_each_method_declares_what_it_checks(method: Any, needs: DataNeeds) -> None:
    assert method().data_needs() == needs


def test_needs_nothing_by_default() -> None:
    assert DataNeeds().empty and DataNeeds().describe() == "nothing"
    assert not DataNeeds(landmarks=True).empty
    assert DataNeeds(lr_views=(4, "16x12")).lr_views == ("4", "16x12")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="images_per_identity"):
        DataNeeds(images_per_identity=0)
    _passes(DataNeeds(), _dm())


# ------------------------------------------------------------------------------------------------ each need
def test_lr_views() -> None:
    needs = DataNeeds(lr_views=("4", "16x12"), lr_views_key="model.learner_sizes")
    _passes(needs, _dm(degradation={"lr_views": [4, "16x12", 8]}))
    message = _refused(needs, _dm(degradation={"lr_views": [4]}), "data.degradation.lr_views", "model.learner_sizes")
    assert "lacks [16x12]" in message and "set data.degradation.lr_views: [4, 16x12]" in message
    _refused(needs, _dm(), "data.degradation.lr_views")


def test_any_lr_views() -> None:
    _passes(DataNeeds(any_lr_views=True), _dm(degradation={"lr_views": [7]}))
    _refused(DataNeeds(any_lr_views=True), _dm(), "data.degradation.lr_views", "empty")


def test_landmarks() -> None:
    needs = DataNeeds(landmarks=True)
    _passes(needs, _dm())  # synthetic faces carry exact ones
    folder = {"train_format": "folder", "train_root": "faces", "train_classes": 4}  # no data is read
    _passes(needs, _dm(**folder, train_landmarks="faces/landmarks.json"))
    _refused(needs, _dm(**folder), "data.train_landmarks", "'folder'")
    _refused(needs, _dm(train_format="recordio", train_root="rec", train_classes=4), "data.train_landmarks")


def test_images_per_identity() -> None:
    needs = DataNeeds(images_per_identity=2)
    _passes(needs, _dm(train_sampler="identity_balanced", images_per_class=2))
    _refused(needs, _dm(train_sampler="random"), "data.train_sampler", "identity_balanced")
    _refused(needs, _dm(train_sampler="identity_balanced", images_per_class=1), "data.images_per_class: 2")


def test_mixed_batches() -> None:
    needs = DataNeeds(mixed_batches=True)
    _passes(needs, _dm(degradation={"lr_prob": 0.5}))
    _passes(needs, _dm(degradation={"lr_prob": 0.5, "lr_policy": "range", "lr_sizes": [4, 32]}))
    for prob in (0.0, 1.0):
        _refused(needs, _dm(degradation={"lr_prob": prob}), f"data.degradation.lr_prob={prob}")
    _refused(needs, _dm(degradation={"lr_prob": 0.5, "lr_per": "batch"}), "data.degradation.lr_per: sample")
    _refused(needs, _dm(degradation={"lr_prob": 0.5, "lr_sizes": [32]}), "data.degradation.lr_sizes", "(32, 32)")


def test_paper_settings_only_warn() -> None:
    _passes(DataNeeds(lr_prob=0.5), _dm(degradation={"lr_prob": 0.5}))
    with pytest.warns(UserWarning, match=r"Method: data.degradation.lr_prob=0.7.*lr_prob: 0.5"):
        _dm(degradation={"lr_prob": 0.7}).check_needs(DataNeeds(lr_prob=0.5), "Method")
    several = {"lr_policy": "choice", "lr_sizes": [4, 8]}
    _passes(DataNeeds(several_lr_sizes=True), _dm(degradation=several))
    _passes(DataNeeds(several_lr_sizes=False), _dm())
    with pytest.warns(UserWarning, match="draws several; set data.degradation.lr_policy: fixed"):
        _dm(degradation=several).check_needs(DataNeeds(several_lr_sizes=False), "Method")
    with pytest.warns(UserWarning, match="data.degradation.lr_policy: choice"):
        _dm().check_needs(DataNeeds(several_lr_sizes=True), "Method")


# ---------------------------------------------------------------------------------------- the method's side
def _attached(method: CrossResMethod, datamodule: Any) -> CrossResMethod:
    method.trainer = SimpleNamespace(datamodule=datamodule)  # type: ignore[assignment]
    return method


def test_setup_fit_checks_the_needs_with_the_method_named() -> None:
    octuplet = Octuplet(num_classes=4, recognizer_weights=None, **RECOGNISER)
    with pytest.raises(InputError, match=r"Octuplet .* data.train_sampler='random'"):
        _attached(octuplet, _dm()).check_data_needs()
    batch_cr = _attached(BatchCR(num_classes=4, **RECOGNISER), _dm(degradation={"lr_prob": 0.5}))
    batch_cr.setup("validate")  # only fit checks
    batch_cr.setup("fit")
    with pytest.raises(InputError, match="BatchCR .*data.degradation.lr_prob=1.0"):
        _attached(batch_cr, _dm()).setup("fit")


def test_other_data_modules_warn_that_needs_are_unchecked() -> None:
    batch_cr = _attached(BatchCR(num_classes=4, **RECOGNISER), object())
    with pytest.warns(UserWarning, match=r"BatchCR cannot check .*HR and LR faces within every batch"):
        batch_cr.check_data_needs()
    baseline = _attached(Baseline(num_classes=4, **RECOGNISER), None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        baseline.check_data_needs()  # needs nothing: nothing to say
