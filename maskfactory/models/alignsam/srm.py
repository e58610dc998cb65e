"""The semantic recalibration module (SRM, paper section 3.3): which chosen points are foreground.

The RL agent picks *where* to prompt; the SRM says *with which label*. It predicts a foreground map on
SAM's embedding grid from two recalibrated states (equation 11):

- spatial state  = image embedding x previous mask probability (the agent's state, equation 4);
- semantic state = image embedding x CLIP Surgery text map (for the task's text prompt).

A semantic switch picks one of two branches per task (equation 12):

- **implicit** (abstract targets: saliency, blur, glass): two conv blocks on the spatial state;
- **explicit** (nameable targets: classes, shadow): three convs fusing both states, self-attention
  across the spatial positions of each image (never across the batch), then two convs.

Trained with Dice + BCE against the ground truth pooled to the grid (equation 13). At inference the
label of a point is whether the SRM's probability there is above one half.

Choices the paper leaves open, made here:
- Hidden width 64 (tiny-sam's embedding has 128 channels, vit_b's 256): enough for a g x g map.
- Conv blocks are 3x3 conv + GroupNorm + ReLU (``layers.conv_block``).
- Self-attention has 4 heads with a learned positional embedding per grid cell, and a residual
  connection around it so that the branch starts close to a plain conv net.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from maskfactory.models.alignsam.environment import Frame, patch_centres, state_of
from maskfactory.models.alignsam.layers import conv_block
from maskfactory.models.losses import soft_dice

HIDDEN = 64


class ImplicitBranch(nn.Module):
    """Two conv blocks on the spatial state (B, C, g, g) -> features (B, HIDDEN, g, g)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(conv_block(channels, HIDDEN), conv_block(HIDDEN, HIDDEN))

    def forward(self, spatial: torch.Tensor) -> torch.Tensor:
        return self.blocks(spatial)


class ExplicitBranch(nn.Module):
    """Fuse semantic and spatial states (each (B, C, g, g)) -> features (B, HIDDEN, g, g)."""

    def __init__(self, channels: int, grid: int, heads: int = 4) -> None:
        super().__init__()
        self.fuse = nn.Sequential(
            conv_block(2 * channels, HIDDEN), conv_block(HIDDEN, HIDDEN), conv_block(HIDDEN, HIDDEN)
        )
        self.position = nn.Parameter(torch.zeros(1, grid * grid, HIDDEN))
        self.norm = nn.LayerNorm(HIDDEN)
        self.attention = nn.MultiheadAttention(HIDDEN, heads, batch_first=True)
        self.decode = nn.Sequential(conv_block(HIDDEN, HIDDEN), conv_block(HIDDEN, HIDDEN))

    def forward(self, semantic: torch.Tensor, spatial: torch.Tensor) -> torch.Tensor:
        x = self.fuse(torch.cat([semantic, spatial], dim=1))
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2) + self.position  # (B, g*g, HIDDEN): one sequence per image
        q = self.norm(tokens)
        tokens = tokens + self.attention(q, q, q, need_weights=False)[0]
        return self.decode(tokens.transpose(1, 2).reshape(b, c, h, w))


class SemanticRecalibration(nn.Module):
    """SRM with its semantic switch: ``explicit=True`` uses the text map, ``False`` ignores it.

    forward(features (B, C, g, g), previous low-res logits (B, 1, 4g, 4g), text map (B, g', g') or
    None) -> foreground logits (B, 1, g, g) on the embedding grid.
    """

    def __init__(self, channels: int, grid: int, explicit: bool) -> None:
        super().__init__()
        self.explicit = explicit
        self.branch = ExplicitBranch(channels, grid) if explicit else ImplicitBranch(channels)
        self.head = nn.Conv2d(HIDDEN, 1, 1)  # the classification head h of equation 12

    def forward(
        self, features: torch.Tensor, previous_logits: torch.Tensor, text_map: torch.Tensor | None = None
    ) -> torch.Tensor:
        spatial = state_of(features, previous_logits)  # the agent's state, equation 4
        if not self.explicit:
            return self.head(self.branch(spatial))
        if text_map is None:
            raise ValueError("the explicit SRM branch needs the CLIP Surgery text map")
        text = F.interpolate(text_map[:, None], features.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(self.branch(features * text, spatial))


def srm_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Equation 13, Dice + BCE: logits (B, 1, g, g), target (B, 1, g, g) foreground fractions."""
    return F.binary_cross_entropy_with_logits(logits, target) + soft_dice(logits, target).mean()


def point_labels(logits: torch.Tensor, points: torch.Tensor, frame_size: int) -> torch.Tensor:
    """Label of each point (B, 2) x/y in a square frame of ``frame_size`` px: 1 where the SRM's
    foreground probability in its grid cell is above 1/2, else 0; (B,) long."""
    g = logits.shape[-1]
    cells = (points / frame_size * g).long().clamp(0, g - 1)
    return (logits[torch.arange(len(points)), 0, cells[:, 1], cells[:, 0]] > 0).long()


def extreme_points(
    logits: torch.Tensor, frame_size: int, frames: Sequence[Frame] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first two prompts at inference: the centres of the grid cells with the highest (positive)
    and lowest (negative) SRM score, among cells whose centre lies on the image (``frames``: each
    image's (height, width) inside SAM's square input frame of ``frame_size`` px, where the rest is
    padding; default: all of it). Returns coords (B, 2, 2) x/y in px and labels (B, 2) = (1, 0)."""
    b, g = logits.shape[0], logits.shape[-1]
    centres = patch_centres(g, frame_size, frame_size)  # (g*g, 2) x/y, row-major like the flat logits
    sizes = torch.tensor(frames or [(frame_size, frame_size)] * b, dtype=torch.float32)  # (B, 2) h, w
    on_image = (centres[None, :, 0] < sizes[:, 1:]) & (centres[None, :, 1] < sizes[:, :1])  # (B, g*g)
    flat = logits.reshape(b, -1)
    best = flat.masked_fill(~on_image, float("-inf")).argmax(1)
    worst = flat.masked_fill(~on_image, float("inf")).argmin(1)
    return centres[torch.stack([best, worst], dim=1)], torch.tensor([[1, 0]]).expand(b, -1)
