"""Parameter-light loss modules, each tested against a naive, paper-literal reference."""

from crossres.losses.center import CenterLoss
from crossres.losses.coupled import CoupledMappingLoss
from crossres.losses.distance import CosineDistanceLoss
from crossres.losses.distillation import ResidualDistillationLoss, StudentDistillationLoss
from crossres.losses.guidance import FeatureGuidanceLoss
from crossres.losses.hallucination import LandmarkHeatmapLoss, ParsingLoss, PixelLoss
from crossres.losses.identity import IdentityPreservingLoss
from crossres.losses.mmd import MKMMD
from crossres.losses.octuplet import OctupletLoss
from crossres.losses.retention import RetentionLoss

__all__ = [
    "MKMMD",
    "CenterLoss",
    "CosineDistanceLoss",
    "CoupledMappingLoss",
    "FeatureGuidanceLoss",
    "IdentityPreservingLoss",
    "LandmarkHeatmapLoss",
    "OctupletLoss",
    "ParsingLoss",
    "PixelLoss",
    "ResidualDistillationLoss",
    "RetentionLoss",
    "StudentDistillationLoss",
]
