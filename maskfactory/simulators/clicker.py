"""The RITM click simulator and the NoC (number of clicks) evaluation of interactive segmenters.

The protocol follows RITM (Sofiiuk et al., "Reviving Iterative Training with Mask Guidance for Interactive
Segmentation", ``isegm/inference/clicker.py``): the next click goes to the point deepest inside the
largest error region, where depth is the Euclidean distance to the nearest pixel outside that error map
and the image border counts as outside. Conventions, each chosen to match RITM so that NoC figures are
comparable with published ones:

- Positive or negative: positive only if the deepest miss is strictly deeper than the deepest false alarm;
  on a tie the click is negative (RITM's ``is_positive = fn_max_dist > fp_max_dist``).
- Among pixels of equal maximal depth, the first in row-major order (smallest row, then smallest column).
- A pixel already clicked is never clicked again (RITM's ``not_clicked_map``), so a segmenter that ignores
  a click gets the next-deepest error pixel instead of the same click over and over.
- NoC@t is the 1-based index of the first click after which IoU >= t, or ``max_clicks`` if never reached.

Coordinates: ``x`` is the column and ``y`` the row of a pixel centre, in pixels.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy.ndimage import distance_transform_edt

from maskfactory.models.metrics import mask_iou


@dataclass(frozen=True)
class Click:
    """One simulated click: pixel centre ``(x, y)`` = (column, row) in pixels; ``positive`` = foreground."""

    x: float
    y: float
    positive: bool


class InteractiveSegmenter(Protocol):
    """What the simulators need from a click-driven segmenter (SAM, RAIS, a test double, ...)."""

    def start(self, image: np.ndarray) -> None:
        """Begin a new image, (H, W, 3) uint8; may cache an embedding and reset per-image state."""
        ...

    def predict(self, clicks: Sequence[Click]) -> np.ndarray:
        """All clicks so far on the current image -> (H, W) bool mask (may reuse its previous logits)."""
        ...


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.ndim != 2 or pred.shape != gt.shape:
        raise ValueError(f"pred and gt must be 2-D masks of one shape, got {pred.shape} and {gt.shape}")
    return pred, gt


def _depth(error: np.ndarray) -> np.ndarray:
    """(H, W) float distance of each error pixel to the nearest non-error pixel or the image border."""
    # A 1-pixel zero frame makes the border an edge: a region touching it is shallow there, as in RITM.
    return distance_transform_edt(np.pad(error, 1))[1:-1, 1:-1]


def next_click(pred: np.ndarray, gt: np.ndarray, *, exclude: Iterable[Click] = ()) -> Click | None:
    """The RITM click for prediction ``pred`` against ground truth ``gt``, both (H, W) bool.

    ``exclude``: clicks already made; their pixels are not clicked again. Returns None when no error pixel
    is left to click: the prediction is perfect, or every error pixel has already been clicked.
    """
    pred, gt = _check_pair(pred, gt)
    fn_depth = _depth(gt & ~pred)
    fp_depth = _depth(~gt & pred)
    h, w = gt.shape
    for c in exclude:
        row, col = round(c.y), round(c.x)
        if 0 <= row < h and 0 <= col < w:
            fn_depth[row, col] = fp_depth[row, col] = 0.0
    fn_max, fp_max = fn_depth.max(), fp_depth.max()
    if fn_max == 0.0 and fp_max == 0.0:
        return None
    positive = bool(fn_max > fp_max)
    # argmax on the flattened array returns the first maximum in row-major order.
    row, col = divmod(int(np.argmax(fn_depth if positive else fp_depth)), w)
    return Click(x=float(col), y=float(row), positive=positive)


@dataclass(frozen=True)
class ClickStep:
    """One round of a click session: the click made, the segmenter's (H, W) bool answer, and its IoU."""

    click: Click
    mask: np.ndarray
    iou: float


def click_session(
    segmenter: InteractiveSegmenter,
    image: np.ndarray,
    gt: np.ndarray,
    *,
    initial_mask: np.ndarray | None = None,
    max_clicks: int = 20,
) -> Iterator[ClickStep]:
    """Simulate a user correcting ``segmenter`` on ``image`` (H, W, 3) towards ``gt`` (H, W) bool.

    The first click is computed against ``initial_mask`` (all-False if None, as in RITM); each later one
    against the segmenter's last answer, which gets the whole click list. The segmenter is started on
    ``image`` just before the first click. Yields one step per click and stops after ``max_clicks`` or
    when no error pixel is left to click; callers stop it early by breaking.
    """
    gt = np.asarray(gt, dtype=bool)
    pred = np.zeros_like(gt) if initial_mask is None else np.asarray(initial_mask, dtype=bool)
    _check_pair(pred, gt)
    clicks: list[Click] = []
    for _ in range(max_clicks):
        click = next_click(pred, gt, exclude=clicks)
        if click is None:
            return
        if not clicks:
            segmenter.start(image)  # not before a click needs an answer: no encoder pass for nothing
        clicks.append(click)
        # A copy, so a segmenter that keeps the list it is given never sees it grow behind its back.
        pred = np.asarray(segmenter.predict(list(clicks)), dtype=bool)
        yield ClickStep(click, pred, mask_iou(pred, gt))


@dataclass
class NocResult:
    """One image's click session.

    ``ious[k]``: IoU after click k+1 (len <= max_clicks); ``noc[t]``: clicks needed to reach IoU >= t, 0
    if the initial mask already did, ``max_clicks`` if never reached; ``initial_iou``: IoU before any
    click (0.0 for RITM's empty start on a non-empty object).
    """

    ious: list[float]
    clicks: list[Click]
    noc: dict[float, int]
    initial_iou: float = 0.0


def evaluate_noc(
    segmenter: InteractiveSegmenter,
    image: np.ndarray,
    gt: np.ndarray,
    thresholds: Sequence[float] = (0.85, 0.90),
    max_clicks: int = 20,
    initial_mask: np.ndarray | None = None,
) -> NocResult:
    """NoC of ``segmenter`` on one image (H, W, 3) with ground truth ``gt`` (H, W) bool.

    Clicks until every threshold is reached or ``max_clicks`` are used. Without ``initial_mask`` the start
    is the empty mask, so NoC >= 1 for a non-empty object (RITM); with one that already reaches a
    threshold, that threshold's NoC is 0: no click was needed.
    """
    gt = np.asarray(gt, dtype=bool)
    start = np.zeros_like(gt) if initial_mask is None else np.asarray(initial_mask, dtype=bool)
    initial_iou = mask_iou(start, gt)
    noc = {t: 0 for t in thresholds if initial_iou >= t}
    ious: list[float] = []
    clicks: list[Click] = []
    if len(noc) < len(thresholds):
        for step in click_session(segmenter, image, gt, initial_mask=start, max_clicks=max_clicks):
            clicks.append(step.click)
            ious.append(step.iou)
            for t in thresholds:
                if t not in noc and step.iou >= t:
                    noc[t] = len(ious)
            if len(noc) == len(thresholds):
                break
    noc = {t: noc.get(t, max_clicks) for t in thresholds}
    return NocResult(ious=ious, clicks=clicks, noc=noc, initial_iou=initial_iou)


def _reached(result: NocResult, threshold: float) -> bool:
    return result.initial_iou >= threshold or any(v >= threshold for v in result.ious)


def _pct(threshold: float) -> str:
    return f"{threshold * 100:g}"


def summarize_noc(
    results: Sequence[NocResult], thresholds: Sequence[float] = (0.85, 0.90)
) -> dict[str, float]:
    """Dataset figures over per-image results.

    ``NoC@85``: mean NoC; ``failures@85``: images that never reached IoU 0.85 (RITM's ">=20@85" counts
    NoC >= max_clicks instead, which also counts an image that got there exactly at the last click);
    ``mIoU@1``: mean IoU after the first click (an image that needed no click keeps its initial IoU);
    ``n``: number of images.
    """
    if not results:
        raise ValueError("summarize_noc needs at least one result")
    summary: dict[str, float] = {"n": len(results)}
    for t in thresholds:
        missing = [i for i, r in enumerate(results) if t not in r.noc]
        if missing:
            raise KeyError(f"threshold {t} was not evaluated for results {missing}")
        summary[f"NoC@{_pct(t)}"] = float(np.mean([r.noc[t] for r in results]))
        summary[f"failures@{_pct(t)}"] = sum(not _reached(r, t) for r in results)
    summary["mIoU@1"] = float(np.mean([r.ious[0] if r.ious else r.initial_iou for r in results]))
    return summary
