"""The encoder-decoder of IPU-Net (002 §3.1, Fig. 1): a U-Net with 7 down and 7 up blocks and skip concatenation.

Down block ``i``: 4x4 convolution with stride 2, BatchNorm (not in the first block), LeakyReLU(0.2). Up block: 4x4
transposed convolution with stride 2, BatchNorm, dropout (first three up blocks), ReLU; its output is concatenated
with the mirror down block's output (002: "layer i in the encoder and layer n - i + 1 in the decoder"). The last up
block is the output layer: a transposed convolution to 3 channels and a tanh, mapped to ``[0, 1]``. Kernel size,
slope, dropout rate and the output layer follow pix2pix's U-Net generator, which 002's Fig. 1 mirrors.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["UNet"]


class _Down(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, norm: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1, bias=not norm)
        self.norm = nn.BatchNorm2d(out_channels) if norm else nn.Identity()
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


class _Up(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.dropout(self.norm(self.conv(x))))


class UNet(nn.Module):
    """IPU-Net's U-Net generator: bicubic-upsampled LR face in, super-resolved face out, both in ``[0, 1]``.

    With ``depth=7`` and a 128x128 input the bottleneck is 1x1 (002's setting); a 256x256 input gives 2x2. The
    channels of down block ``i`` are ``width * min(2**i, 8)`` (64, 128, 256, 512, 512, ... at ``width=64``).
    Every down block but the first has BatchNorm (002 §3.1), the innermost too (pix2pix leaves it out), so a
    training batch needs at least two faces when the bottleneck is 1x1.

    Args:
        depth: number of down blocks = number of up blocks (7 in 002); the input sides must be multiples of
            ``2**depth``.
        width: channels of the first down block (64 in pix2pix).
        dropout: dropout probability in the first three up blocks (0.5 in pix2pix).
        in_channels: input channels.
        out_channels: output channels.

    Raises:
        ValueError: if ``depth < 2`` or ``width < 1`` or ``dropout`` is outside ``[0, 1)``.
    """

    def __init__(
        self, depth: int = 7, width: int = 64, dropout: float = 0.5, in_channels: int = 3, out_channels: int = 3
    ) -> None:
        super().__init__()
        if depth < 2 or width < 1:
            raise ValueError(f"depth must be >= 2 and width >= 1, got depth={depth}, width={width}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.depth = depth
        channels = [width * min(2**i, 8) for i in range(depth)]
        self.down = nn.ModuleList(
            _Down(in_channels if i == 0 else channels[i - 1], channels[i], norm=i > 0) for i in range(depth)
        )
        # Up block j (j = 0 .. depth - 2) produces channels[depth - 2 - j] and is concatenated with that down output.
        ups = []
        for j in range(depth - 1):
            source = channels[depth - 1] if j == 0 else 2 * channels[depth - 1 - j]
            ups.append(_Up(source, channels[depth - 2 - j], dropout if j < 3 else 0.0))
        self.up = nn.ModuleList(ups)
        self.output = nn.Sequential(
            nn.ConvTranspose2d(2 * channels[0], out_channels, kernel_size=4, stride=2, padding=1), nn.Tanh()
        )

    def forward(self, x: Tensor) -> Tensor:
        """Super-resolve a batch.

        Args:
            x: ``(B, in_channels, H, W)`` in ``[0, 1]`` with ``H`` and ``W`` multiples of ``2**depth``.

        Returns:
            ``(B, out_channels, H, W)`` in ``[0, 1]``.

        Raises:
            ValueError: if the input sides are not multiples of ``2**depth``.
        """
        factor = 2**self.depth
        if x.ndim != 4 or x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(
                f"UNet(depth={self.depth}) needs (B, C, H, W) input with H and W multiples of {factor}, "
                f"got {tuple(x.shape)}"
            )
        skips = []
        h = (x - 0.5) / 0.5
        for block in self.down:
            h = block(h)
            skips.append(h)
        skips.pop()  # the bottleneck feeds the first up block directly
        for block in self.up:
            # 002 §3.1: concatenate all channels of encoder layer i with decoder layer n - i + 1.
            h = torch.cat([block(h), skips.pop()], dim=1)
        return (self.output(h) + 1.0) / 2.0
