"""Network parts: backbones, classification heads and weight loading (pure torch, no Lightning)."""

from crossres.nn.backbones import BACKBONES, IBasicBlock, IResNet, build_backbone, embedding_dim
from crossres.nn.heads import HEADS, ArcFaceHead, CosFaceHead, MarginHead, SoftmaxHead, build_head
from crossres.nn.weights import extract_state_dict, load_backbone_weights

__all__ = [
    "BACKBONES",
    "HEADS",
    "ArcFaceHead",
    "CosFaceHead",
    "IBasicBlock",
    "IResNet",
    "MarginHead",
    "SoftmaxHead",
    "build_backbone",
    "build_head",
    "embedding_dim",
    "extract_state_dict",
    "load_backbone_weights",
]
