"""One LightningModule per published cross-resolution method."""

from crossres.methods.base import CrossResMethod, NonFiniteLossError, load_method
from crossres.methods.baseline import Baseline
from crossres.methods.batch_cr import BatchCR
from crossres.methods.dcr import DCRTwoStage
from crossres.methods.guided_cnn import GuidedCNN
from crossres.methods.ipunet import IPUNet
from crossres.methods.octuplet import Octuplet
from crossres.methods.rim import RIM
from crossres.methods.siamese_cr import SiameseCR

__all__ = [
    "RIM",
    "Baseline",
    "BatchCR",
    "CrossResMethod",
    "DCRTwoStage",
    "GuidedCNN",
    "IPUNet",
    "NonFiniteLossError",
    "Octuplet",
    "SiameseCR",
    "load_method",
]
