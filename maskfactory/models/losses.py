"""Mask losses shared by the models' training code."""

from __future__ import annotations

import torch


def soft_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice loss of each mask over its last two dims: logits and target (..., H, W) -> (...)."""
    p = logits.sigmoid()
    inter = (p * target).sum((-2, -1))
    return 1 - (2 * inter + 1) / (p.sum((-2, -1)) + target.sum((-2, -1)) + 1)
