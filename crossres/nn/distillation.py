"""Block-wise views of recognition backbones for RIM's residual knowledge distillation (001, §3.2).

RIM divides the teacher, student and assistant networks into ``K`` blocks ("according to ResNet structure, 4 blocks is
divided for each network", §4) and compares their block outputs, which "must have the same size, especially channel
dimension". :class:`BlockwiseBackbone` exposes the ``K = 4`` stage outputs of a backbone made by
:func:`crossres.nn.build_backbone` and, for the teacher, its embedding head; :class:`BlockAdapters` maps a network's
block outputs to the teacher's channels with 1x1 convolutions where they differ.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from crossres.nn.backbones import IResNet
from crossres.nn.dlib_resnet import DlibResNet

__all__ = ["AdaptedBlocks", "BlockAdapters", "BlockwiseBackbone", "check_block_shapes"]

NUM_BLOCKS = 4


def _normalise(x: Tensor) -> Tensor:
    # insightface's input normalisation, which build_backbone applies in forward(); the block view bypasses forward().
    return (x - 0.5) / 0.5


class BlockwiseBackbone(nn.Module):
    """A backbone split into its ``K = 4`` residual stages, with the embedding head kept apart.

    For an :class:`~crossres.nn.backbones.IResNet`, block 1 is the stem and ``layer1``, blocks 2-4 are ``layer2`` ..
    ``layer4``; the head is ``bn2 -> flatten -> dropout -> fc -> features``. For ``dlib_resnet``, the blocks and
    head are :meth:`~crossres.nn.dlib_resnet.DlibResNet.forward_blocks` and ``head``. For a timm model, the blocks
    are the four last feature levels of ``forward_intermediates`` and the head is ``forward_head``. The backbone
    itself is kept under ``net`` (state-dict keys ``net.<backbone keys>``), so pretrained weights load into
    ``self.net``.

    Args:
        backbone: a module made by :func:`crossres.nn.build_backbone` (IResNet, DlibResNet or timm with
            ``forward_intermediates``), with an ``image_size`` attribute.
        keep_head: keep the embedding head (the teacher); ``False`` drops it (students and assistants use the
            teacher's head on their summed maps), so no parameter is left without a gradient.

    Raises:
        ValueError: if the backbone cannot be split into four blocks.
    """

    def __init__(self, backbone: nn.Module, keep_head: bool = True) -> None:
        super().__init__()
        self.is_iresnet = isinstance(backbone, IResNet)
        self.is_dlib = isinstance(backbone, DlibResNet)
        if not self.is_iresnet and not self.is_dlib and not hasattr(backbone, "forward_intermediates"):
            raise ValueError(
                f"cannot split {type(backbone).__name__} into {NUM_BLOCKS} blocks: use an iresnet or a timm model "
                "with forward_intermediates (e.g. resnet18), or dlib_resnet"
            )
        self.net = backbone
        self.has_head = keep_head
        if not keep_head:
            if self.is_dlib:
                backbone.fc = nn.Identity()
            elif self.is_iresnet:
                for name in ("bn2", "dropout", "fc", "features"):
                    setattr(backbone, name, nn.Identity())
            else:
                backbone.reset_classifier(0)  # type: ignore[operator]
        image_size = tuple(getattr(backbone, "image_size", (112, 112)))
        was_training = backbone.training
        backbone.eval()
        with torch.no_grad():
            shapes = [tuple(f.shape[1:]) for f in self.forward(torch.zeros(1, 3, *image_size))]
        backbone.train(was_training)
        if len(shapes) != NUM_BLOCKS:
            raise ValueError(f"{type(backbone).__name__} gave {len(shapes)} feature levels, expected {NUM_BLOCKS}")
        self.shapes: list[tuple[int, ...]] = shapes
        self.channels: list[int] = [s[0] for s in shapes]

    def forward(self, images: Tensor) -> list[Tensor]:
        """Block outputs ``[f^1, ..., f^K]`` of images in ``[0, 1]``.

        Args:
            images: ``(B, 3, H, W)`` faces in ``[0, 1]`` of the backbone's input size.

        Returns:
            ``K`` feature maps ``(B, C_k, H_k, W_k)``.
        """
        net = self.net
        if isinstance(net, DlibResNet):
            return net.forward_blocks(images)  # normalises its input as dlib does
        x = _normalise(images)
        if not self.is_iresnet:
            return list(net.forward_intermediates(x, indices=NUM_BLOCKS, intermediates_only=True))  # type: ignore[operator]
        assert isinstance(net, IResNet)
        x = net.prelu(net.bn1(net.conv1(x)))
        outputs = []
        for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
            x = layer(x)
            outputs.append(x)
        return outputs

    def head(self, feature_map: Tensor) -> Tensor:
        """Embedding from a last-block map (the teacher's ``f_T^K`` or a student's ``f_S^K + f_A^K``).

        Args:
            feature_map: ``(B, C_K, H_K, W_K)``.

        Returns:
            ``(B, embedding_size)`` embeddings, not normalised.

        Raises:
            RuntimeError: if the head was dropped (``keep_head=False``).
        """
        if not self.has_head:
            raise RuntimeError("this BlockwiseBackbone was built with keep_head=False and has no embedding head")
        net = self.net
        if isinstance(net, DlibResNet):
            return net.head(feature_map)
        if not self.is_iresnet:
            return net.forward_head(feature_map)  # type: ignore[operator]
        assert isinstance(net, IResNet)
        x = torch.flatten(net.bn2(feature_map), 1)
        return net.features(net.fc(net.dropout(x)))

    def embed(self, images: Tensor) -> Tensor:
        """The backbone's own embedding of ``images`` (``head(forward(images)[-1])``).

        Args:
            images: ``(B, 3, H, W)`` faces in ``[0, 1]``.

        Returns:
            ``(B, embedding_size)`` embeddings.
        """
        return self.head(self.forward(images)[-1])


class BlockAdapters(nn.Module):
    """1x1 convolutions that map block outputs to the reference (teacher) channels, identity where they agree.

    Args:
        in_channels: channels of the network's ``K`` block outputs.
        out_channels: channels of the reference network's block outputs.

    Raises:
        ValueError: if the numbers of blocks differ.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: Sequence[int]) -> None:
        super().__init__()
        if len(in_channels) != len(out_channels):
            raise ValueError(f"{len(in_channels)} block outputs cannot be matched to {len(out_channels)} blocks")
        self.adapters = nn.ModuleList(
            nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, kernel_size=1)
            for c_in, c_out in zip(in_channels, out_channels, strict=True)
        )

    def forward(self, maps: Sequence[Tensor]) -> list[Tensor]:
        """Adapt each block output.

        Args:
            maps: ``K`` feature maps.

        Returns:
            ``K`` feature maps with the reference channels.
        """
        return [adapter(f) for adapter, f in zip(self.adapters, maps, strict=True)]


def check_block_shapes(name: str, shapes: Sequence[tuple[int, ...]], reference: Sequence[tuple[int, ...]]) -> None:
    """Check that block outputs match the teacher's spatial sizes (channels are adapted, sizes cannot be).

    Args:
        name: the network, for the message.
        shapes: its block output shapes ``(C, H, W)``.
        reference: the teacher's.

    Raises:
        ValueError: if the spatial sizes differ.
    """
    for k, (own, ref) in enumerate(zip(shapes, reference, strict=True)):
        if own[1:] != ref[1:]:
            raise ValueError(
                f"{name} block {k + 1} outputs {own[1:]} maps but the teacher's are {ref[1:]}: the K = 4 blocks of "
                "teacher, student and assistant must have the same spatial sizes (use backbones of one family, e.g. "
                "iresnets)"
            )


class AdaptedBlocks(nn.Module):
    """A student or assistant network: its ``K`` block outputs mapped to the teacher's block shapes.

    Args:
        blocks: the network split into blocks (normally built with ``keep_head=False``).
        reference_shapes: the teacher's block output shapes ``(C, H, W)``.
        name: the network's role, for error messages.

    Raises:
        ValueError: if the block outputs' spatial sizes differ from the teacher's.
    """

    def __init__(self, blocks: BlockwiseBackbone, reference_shapes: Sequence[tuple[int, ...]], name: str) -> None:
        super().__init__()
        if len(blocks.shapes) != len(reference_shapes):
            raise ValueError(f"{name} has {len(blocks.shapes)} blocks, the teacher {len(reference_shapes)}")
        check_block_shapes(name, blocks.shapes, reference_shapes)
        self.blocks = blocks
        self.adapters = BlockAdapters(blocks.channels, [s[0] for s in reference_shapes])

    def forward(self, images: Tensor, detach_inner: bool = False) -> list[Tensor]:
        """Adapted block outputs ``[f^1, ..., f^K]`` in the teacher's shapes.

        Args:
            images: ``(B, 3, H, W)`` faces in ``[0, 1]``.
            detach_inner: feed the adapters of blocks ``1 .. K-1`` with detached block outputs, so that a loss on
                those adapted maps trains the adapters only, not the network.

        Returns:
            ``K`` feature maps.
        """
        maps = self.blocks(images)
        if detach_inner:
            maps = [f.detach() for f in maps[:-1]] + maps[-1:]
        return self.adapters(maps)

    def adapted_blocks(self) -> list[int]:
        """Indices ``k`` (0-based) of the blocks whose outputs pass through a 1x1 adapter."""
        return [k for k, adapter in enumerate(self.adapters.adapters) if not isinstance(adapter, nn.Identity)]
