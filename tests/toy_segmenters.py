"""Toy interactive segmenters whose answers can be worked out by hand (for clicker and reviewer tests)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from maskfactory.simulators.clicker import Click


class FixSegmenter:
    """Each click turns the connected error region under it (errors of the mask built so far from
    ``base``) into ground truth, so the expected NoC follows by hand."""

    def __init__(self, gt: np.ndarray, base: np.ndarray | None = None) -> None:
        self.gt = gt
        self.base = np.zeros_like(gt) if base is None else base
        self.started = 0
        self.seen: list[int] = []  # how many clicks each predict call received

    def start(self, image: np.ndarray) -> None:
        self.started += 1

    def predict(self, clicks: Sequence[Click]) -> np.ndarray:
        self.seen.append(len(clicks))
        mask = self.base.copy()
        for c in clicks:
            labels, _ = ndimage.label(mask ^ self.gt)
            label = labels[int(c.y), int(c.x)]
            if label:
                mask[labels == label] = self.gt[labels == label]
        return mask


class EmptySegmenter:
    """Ignores every click and answers an empty mask: it can never reach a target."""

    def __init__(self, shape: tuple[int, int] = (16, 16)) -> None:
        self.shape = shape
        self.seen: list[int] = []

    def start(self, image: np.ndarray) -> None:
        pass

    def predict(self, clicks: Sequence[Click]) -> np.ndarray:
        self.seen.append(len(clicks))
        return np.zeros(self.shape, dtype=bool)
