"""Building blocks shared by AlignSAM's networks."""

from __future__ import annotations

from torch import nn


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """3x3 conv, GroupNorm, ReLU: (B, cin, g, g) -> (B, cout, g, g).

    GroupNorm rather than BatchNorm: batches here are a handful of images, too few for batch statistics.
    """
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.ReLU())
