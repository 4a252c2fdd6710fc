"""The degradation layer: Eq. (1) of Knoche et al. (004) and Guided-CNN's occlusions, plus their batch samplers."""

from crossres.transforms.degradation import BatchDegradation, CameraDegradation, DegradedViews, ResolutionSampler
from crossres.transforms.functional import (
    Backend,
    OcclusionMode,
    degrade,
    downsample,
    occlude,
    occlusion_mask,
    resolve_size,
    to_float,
    to_uint8,
    upsample,
)

__all__ = [
    "Backend",
    "BatchDegradation",
    "CameraDegradation",
    "DegradedViews",
    "OcclusionMode",
    "ResolutionSampler",
    "degrade",
    "downsample",
    "occlude",
    "occlusion_mask",
    "resolve_size",
    "to_float",
    "to_uint8",
    "upsample",
]
