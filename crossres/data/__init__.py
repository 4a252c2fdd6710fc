"""Datasets, formats, protocols and the data module (no Lightning below `datamodule`)."""

from crossres.data.needs import DataNeeds
from crossres.data.pairs import PairDataset, PairSet

__all__ = [
    "AugmentationOptions",
    "DataNeeds",
    "DegradationOptions",
    "FaceDataModule",
    "PairDataset",
    "PairSet",
    "SyntheticFaces",
    "SyntheticOptions",
]
_OPTIONS = ("AugmentationOptions", "DegradationOptions", "SyntheticOptions")


def __getattr__(name: str):  # noqa: ANN202 - lazy: `crossres.data` stays importable without Lightning
    if name == "FaceDataModule":
        from crossres.data.datamodule import FaceDataModule

        return FaceDataModule
    if name in _OPTIONS:
        from crossres.data import options

        return getattr(options, name)
    if name == "SyntheticFaces":
        from crossres.data.synthetic import SyntheticFaces

        return SyntheticFaces
    raise AttributeError(name)
