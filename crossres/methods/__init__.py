"""One LightningModule per published cross-resolution method."""

from crossres.methods.base import CrossResMethod, NonFiniteLossError
from crossres.methods.baseline import Baseline

__all__ = ["Baseline", "CrossResMethod", "NonFiniteLossError"]
