"""Point-prompted SAM as an interactive segmenter: every click so far plus the previous mask.

This is how SAM is used for click-based correction and how its NoC is measured (as in SAM's and
RITM's evaluations): the first click asks for three masks and keeps the one SAM rates highest;
later clicks ask for one mask and also pass the previous low-res logits as the mask prompt.
Clicks are any objects with ``x`` (column), ``y`` (row) in pixels and ``positive``; this module does
not import the simulators that produce them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from maskfactory.models.predictor import BatchedSamPredictor, ImageEmbeddings, Prediction


class ClickLike(Protocol):
    x: float
    y: float
    positive: bool


class SamClickSegmenter:
    """Implements the simulators' ``InteractiveSegmenter`` protocol (``start``, ``predict``) with SAM."""

    def __init__(self, predictor: BatchedSamPredictor) -> None:
        self.predictor = predictor
        self._image: np.ndarray | None = None
        self._embeddings: ImageEmbeddings | None = None
        self._previous: torch.Tensor | None = None  # (1, 1, 4g, 4g) low-res logits of the last answer

    def start(self, image: np.ndarray) -> None:
        """A new interaction on ``image`` (H, W, 3) uint8. Re-encodes only if it is another image
        object, so several objects of one image share one encoder pass."""
        if image is not self._image:
            self._embeddings = self.predictor.encode([image])
            self._image = image
        self._previous = None

    def predict(self, clicks: Sequence[ClickLike]) -> np.ndarray:
        """All clicks so far -> (H, W) bool mask at the image's resolution."""
        if self._embeddings is None:
            raise RuntimeError("call start(image) first")
        if not clicks:
            raise ValueError("predict() needs at least one click")
        coords = torch.tensor([[[float(c.x), float(c.y)] for c in clicks]])
        labels = torch.tensor([[1.0 if c.positive else 0.0 for c in clicks]])
        first = self._previous is None
        pred = self.predictor.decode(
            self._embeddings, [0], coords, labels, mask_input=self._previous, multimask_output=first
        )
        best = int(pred.iou_predictions[0].argmax()) if first else 0
        keep = slice(best, best + 1)
        chosen = Prediction(pred.low_res_logits[:, keep], pred.iou_predictions[:, keep], pred.image_index)
        self._previous = chosen.low_res_logits
        logits = self.predictor.upscale(chosen, self._embeddings)[0][0]
        return (logits > self.predictor.sam.mask_threshold).numpy()
