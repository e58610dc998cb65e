"""A convolutional patch embedding for the zoo's small ViTs (tiny-clip, tiny-sam).

A ViT embeds each p x p patch with one linear projection and must learn everything about shape and
edges from attention. Xiao et al. (2021, "Early convolutions help transformers see better") replace
that projection with a few strided convolutions and find ViTs then train faster and less sensitively
to their optimiser. For models trained from scratch in a CPU budget that is what we need.

Our choice of layout: a non-overlapping s x s "patchify" convolution first (as in ConvNeXt's stem),
then 3x3 stride-2 convolutions. Xiao et al. use 3x3 stride-2 convolutions throughout; at 256 px the
first of those, on a full-resolution map, took two thirds of the stem's time here (GroupNorm and GELU
over 128 x 128 maps), for detail finer than a 4 px cell that the 16 px tokens do not keep anyway.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn


class ResidualConv(nn.Module):
    """(B, C, H, W) -> (B, C, H, W): x + conv3x3(GELU(GroupNorm(x))), a pre-norm residual block."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(8, channels)
        self.act = nn.GELU()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(self.act(self.norm(x)))


class ConvStem(nn.Sequential):
    """(B, 3, S, S) -> (B, width, S / patch, S / patch), the shape a ViT's patch projection returns
    (open_clip's ``conv1``, segment_anything's ``patch_embed.proj``), so the rest of the model is
    unchanged.

    ``hidden`` lists the channels after the patchify conv and after each stride-2 conv but the last,
    which maps to ``width``: k entries give a patchify stride of patch / 2^k. Every conv but the last
    is followed by GroupNorm and GELU. ``blocks`` residual 3x3 convolutions (:class:`ResidualConv`) run
    at the last hidden stage, before the final stride-2 conv (for tiny-clip at 256 px: on a 32 x 32 x 64
    map), so that each token sees more of its object's outline than three small convolutions show it.

    ``patchify`` sets the first conv's size in px (default: patch / 2^k, so every later conv has stride
    2). A larger one keeps stride 2 for the first convs after it and gives the last ones stride 1. That
    is how a trained stem is rebuilt for patches half as large (:func:`maskfactory.models.sam.finer_grid`):
    its last conv, at stride 1, computes the same features at twice the density, and its output at even
    rows and columns is the old stem's output.
    """

    def __init__(
        self, hidden: Sequence[int], width: int, patch_size: int, blocks: int = 0, patchify: int | None = None
    ) -> None:
        first = patchify or patch_size // 2 ** len(hidden)
        halvings = (patch_size // first).bit_length() - 1  # stride-2 convs after the patchify conv
        if not hidden or first < 2 or not 0 <= halvings <= len(hidden) or first * 2**halvings != patch_size:
            raise ValueError(
                f"{len(hidden)} convs after a {first} px patchify conv cannot make {patch_size} px patches"
            )
        layers: list[nn.Module] = [nn.Conv2d(3, hidden[0], first, first, bias=False)]
        pairs = list(itertools.pairwise([*hidden, width]))
        for i, (c_in, c_out) in enumerate(pairs):
            if i == len(pairs) - 1:
                layers += [ResidualConv(c_in) for _ in range(blocks)]
            conv = nn.Conv2d(c_in, c_out, 3, 2 if i < halvings else 1, 1, bias=c_out == width)
            layers += [nn.GroupNorm(8, c_in), nn.GELU(), conv]
        super().__init__(*layers)

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, S, S) -> the output of every conv but the residual ones, finest first: with k hidden
        entries and the default ``patchify``, k + 1 maps of strides patch / 2^k, ..., patch / 2, patch
        and channels ``*hidden, width``. The last is what ``forward`` returns; the finer ones are the
        high-resolution features a SAM decoder may add while upscaling (``SamConfig.high_res_features``)."""
        out = []
        for layer in self:
            x = layer(x)
            if isinstance(layer, nn.Conv2d):  # the patchify conv and the 3x3s; not the residual blocks'
                out.append(x)
        return out
