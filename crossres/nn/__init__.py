"""Network parts: backbones, classification heads and weight loading (pure torch, no Lightning)."""

from crossres.nn.backbones import BACKBONES, DLIB_RESNET, IBasicBlock, IResNet, build_backbone, embedding_dim
from crossres.nn.dlib_format import DlibFormatError
from crossres.nn.dlib_resnet import DlibResNet, load_dlib_resnet_weights
from crossres.nn.heads import HEADS, ArcFaceHead, CosFaceHead, MarginHead, SoftmaxHead, build_head
from crossres.nn.weights import extract_state_dict, load_backbone_weights

__all__ = [
    "BACKBONES",
    "DLIB_RESNET",
    "HEADS",
    "ArcFaceHead",
    "CosFaceHead",
    "DlibFormatError",
    "DlibResNet",
    "IBasicBlock",
    "IResNet",
    "MarginHead",
    "SoftmaxHead",
    "build_backbone",
    "build_head",
    "embedding_dim",
    "extract_state_dict",
    "load_dlib_resnet_weights",
    "load_backbone_weights",
]
