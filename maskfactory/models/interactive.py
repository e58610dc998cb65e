"""Point-prompted SAM as an interactive segmenter: every click so far plus the previous mask.

This is how SAM is used for click-based correction and how its NoC is measured (as in SAM's and
RITM's evaluations): the first click asks for three masks and keeps the one SAM rates highest;
later clicks ask for one mask and also pass the previous low-res logits as the mask prompt.
Clicks are any objects with ``x`` (column), ``y`` (row) in pixels and ``positive``; this module does
not import the simulators that produce them.

With a :class:`ZoomIn`, clicks are answered in a crop around the object instead of the whole image
(Zoom-In, as in RITM's evaluation), so a small object is seen at the encoder's full input size. With a
:class:`~maskfactory.models.refine.GuidedRefinement`, each answer's edge is refined along the image's
colour edges before it is shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from maskfactory.models.predictor import BatchedSamPredictor, ImageEmbeddings, Prediction
from maskfactory.models.refine import GuidedRefinement

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, ends exclusive


class ClickLike(Protocol):
    x: float
    y: float
    positive: bool


@dataclass(frozen=True)
class ZoomIn:
    """Zoom-In (f-BRS, Sofiiuk et al. 2020, ``isegm/inference/transforms/zoom_in.py``; RITM uses it too):
    from click ``skip_clicks + 1`` on, segment a crop around the object, resized to the encoder's input,
    so a small object gets more of its tokens and mask cells. With ``skip_clicks=0`` the first click is
    answered twice: on the whole image, to place the crop, and then in the crop (f-BRS's code has such
    a recalculation for ``skip_clicks=0`` too, when the crop covers under half the image).

    The crop is the box around the last answer and every click so far, grown ``expansion`` times about
    its centre, at least ``min_crop`` px on a side and moved inside the image. Our choices where f-BRS
    differs: the box holds negative clicks too (f-BRS: positive ones), so no click falls outside the
    crop; it is square unless the image is too small for that (f-BRS keeps the box's shape), so it fills
    SAM's square input with no padding; and an empty answer still gets a crop, around the clicks (f-BRS
    then stays on the whole image). The crop is kept, and its encoder pass reused, while it holds every
    click and the new box overlaps it by IoU >= ``keep_iou`` (f-BRS's recompute threshold).
    ``expansion`` and ``keep_iou`` default to f-BRS's values; ``skip_clicks`` (f-BRS: 1) and
    ``min_crop`` (f-BRS: 200 px on photos) to ours, measured on held-out world data
    (benchmarks/RESULTS.md, "Zoom-In"): skipping no click raised tiny-sam's one-click mIoU by 0.02 to
    0.03 at about the same NoC@85; at least 128 px (for 256 px world images: magnified at most twice)
    took fewer clicks than 64 (more magnified, less context) or 160 and 192, and as few as 96.
    """

    skip_clicks: int = 0
    expansion: float = 1.4
    min_crop: int = 128
    keep_iou: float = 0.5

    def box(self, mask: np.ndarray, clicks: Sequence[ClickLike]) -> Box:
        """The crop for the last answer ``mask`` (H, W) bool and ``clicks``; either may be empty, not both
        (training's zoom crops frame a ground-truth instance with no click)."""
        h, w = mask.shape
        ys, xs = np.nonzero(mask)
        ys = np.concatenate([ys, [round(c.y) for c in clicks]])
        xs = np.concatenate([xs, [round(c.x) for c in clicks]])
        side = max(round((max(np.ptp(ys), np.ptp(xs)) + 1) * self.expansion), self.min_crop)
        sh, sw = min(side, h), min(side, w)
        y0 = int(np.clip(round((ys.min() + ys.max() + 1 - sh) / 2), 0, h - sh))
        x0 = int(np.clip(round((xs.min() + xs.max() + 1 - sw) / 2), 0, w - sw))
        return x0, y0, x0 + sw, y0 + sh


def box_iou(a: Box, b: Box) -> float:
    """IoU of two boxes (x0, y0, x1, y1), ends exclusive."""
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area


def _holds(box: Box, clicks: Sequence[ClickLike]) -> bool:
    return all(box[0] <= round(c.x) < box[2] and box[1] <= round(c.y) < box[3] for c in clicks)


class SamClickSegmenter:
    """Implements the simulators' ``InteractiveSegmenter`` protocol (``start``, ``predict``) with SAM.

    ``zoom_in``: segment later clicks in a crop around the object (:class:`ZoomIn`); None: the whole
    image for every click, as SAM's own evaluation does. ``refine``: the mask returned is the answer
    refined by the guided filter; SAM's own answer stays the next click's mask prompt and places the crop,
    so the refinement changes what the user sees (and so where the next click goes), not what SAM is fed.
    """

    def __init__(
        self,
        predictor: BatchedSamPredictor,
        zoom_in: ZoomIn | None = None,
        refine: GuidedRefinement | None = None,
    ) -> None:
        self.predictor = predictor
        self.zoom_in = zoom_in
        self.refine = refine
        self._image: np.ndarray | None = None
        self._embeddings: ImageEmbeddings | None = None  # of the whole image
        self._previous: torch.Tensor | None = None  # (1, 1, 4g, 4g) low-res logits of the last answer
        self._answer: torch.Tensor | None = None  # (H, W) logits of the last answer, whole image
        self._crop: tuple[Box, ImageEmbeddings] | None = None  # the zoomed-in frame, once there is one

    def start(self, image: np.ndarray) -> None:
        """A new interaction on ``image`` (H, W, 3) uint8. Re-encodes only if it is another image
        object, so several objects of one image share one encoder pass."""
        if image is not self._image:
            self._embeddings = self.predictor.encode([image])
            self._image = image
        self._previous = self._answer = self._crop = None

    def predict(self, clicks: Sequence[ClickLike]) -> np.ndarray:
        """All clicks so far -> (H, W) bool mask at the image's resolution."""
        if self._embeddings is None or self._image is None:
            raise RuntimeError("call start(image) first")
        if not clicks:
            raise ValueError("predict() needs at least one click")
        threshold = self.predictor.sam.mask_threshold
        zoom = self.zoom_in if self.zoom_in and len(clicks) > self.zoom_in.skip_clicks else None
        if zoom is None or self._answer is None:
            # The whole image answers every click without zoom, the clicks zoom skips, and, with
            # skip_clicks=0, the first click once before the crop around that answer answers it again.
            self._answer = self._decode(self._embeddings, clicks, (0, 0))
            if zoom is None:
                return self._shown(max(self._answer.shape))
        box = zoom.box((self._answer > threshold).cpu().numpy(), clicks)
        if (
            self._crop is None
            or not _holds(self._crop[0], clicks)
            or box_iou(box, self._crop[0]) < zoom.keep_iou
        ):
            x0, y0, x1, y1 = box
            h, w = self._answer.shape
            whole = box == (0, 0, w, h)  # then the whole image's encoder pass serves
            embeddings = self._embeddings if whole else self.predictor.encode([self._image[y0:y1, x0:x1]])
            self._crop = (box, embeddings)
            # The last answer, seen through the new crop, is the mask prompt of this click.
            self._previous = self._mask_prompt(self._answer[y0:y1, x0:x1], embeddings)
        (x0, y0, x1, y1), embeddings = self._crop
        inside = self._decode(embeddings, clicks, (x0, y0))
        # Outside the crop the answer is background: the crop holds the last answer and every click.
        self._answer = torch.full_like(self._answer, float(inside.min()))
        self._answer[y0:y1, x0:x1] = inside
        return self._shown(max(x1 - x0, y1 - y0))

    def _shown(self, frame_side: int) -> np.ndarray:
        """The last answer as the (H, W) bool mask returned; ``frame_side``: the longest side in image px
        of the frame it was answered on (SAM resizes that side to its input size)."""
        if self.refine is None:
            return (self._answer > self.predictor.sam.mask_threshold).cpu().numpy()
        assert self._image is not None
        scale = frame_side / self.predictor.image_size
        return self.refine.mask(self._image, self._answer, scale)

    def _decode(
        self, embeddings: ImageEmbeddings, clicks: Sequence[ClickLike], origin: tuple[int, int]
    ) -> torch.Tensor:
        """(h, w) logits of the frame ``embeddings`` encode, whose top-left pixel is ``origin`` (x, y)."""
        coords = torch.tensor([[[float(c.x) - origin[0], float(c.y) - origin[1]] for c in clicks]])
        labels = torch.tensor([[1.0 if c.positive else 0.0 for c in clicks]])
        first = self._previous is None
        pred = self.predictor.decode(
            embeddings, [0], coords, labels, mask_input=self._previous, multimask_output=first
        )
        best = int(pred.iou_predictions[0].argmax()) if first else 0
        keep = slice(best, best + 1)
        chosen = Prediction(pred.low_res_logits[:, keep], pred.iou_predictions[:, keep], pred.image_index)
        self._previous = chosen.low_res_logits
        return self.predictor.upscale(chosen, embeddings)[0][0]

    def _mask_prompt(self, logits: torch.Tensor, embeddings: ImageEmbeddings) -> torch.Tensor:
        """(h, w) logits of a frame -> (1, 1, 4g, 4g) low-res logits on its padded input frame."""
        (ih, iw), size = embeddings.input_sizes[0], self.predictor.image_size
        low = 4 * embeddings.features.shape[-1]
        x = F.interpolate(logits[None, None], (ih, iw), mode="bilinear", align_corners=False)
        # The padding is background, as sure as the surest background pixel of the frame.
        x = F.pad(x, (0, size - iw, 0, size - ih), value=float(x.min()))
        # Sampled at the cell centres, not averaged over the cells: when the frame is the one the logits
        # came from, this gives back SAM's own low-res logits up to a second difference / 16.
        return F.interpolate(x, (low, low), mode="bilinear", align_corners=False)
