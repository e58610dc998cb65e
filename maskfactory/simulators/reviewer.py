"""A simulated data-ops reviewer: accepts a good proposal, corrects a poor one with RITM clicks, or rejects.

Simulated time is a cost model, not wall time: ``look_seconds`` to judge the proposal, plus
``seconds_per_click`` for each correction. The defaults are assumptions of the order of magnitude that
click-annotation studies report (a few seconds per click, e.g. Bearman et al., "What's the Point", ECCV
2016; Benenson et al., "Large-scale interactive object segmentation with human annotators", CVPR 2019),
not figures measured here or taken from one table; calibrate them from the timings in the ``reviews``
table once real reviewers have used the product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from maskfactory.simulators.clicker import Click, InteractiveSegmenter, click_session, mask_iou

# Assumed: a glance to judge one mask against its image (an accept/reject decision with no edits).
LOOK_SECONDS = 3.0
# Assumed: placing one corrective click and looking at the updated mask before the next.
SECONDS_PER_CLICK = 2.5


@dataclass
class ReviewOutcome:
    """One review: ``decision`` is "accepted" (no clicks), "corrected" (clicks reached the target) or
    "rejected" (budget spent below it); ``mask`` (H, W) bool is the proposal, the corrected mask, or the
    best-IoU mask seen (the proposal included); ``iou`` its IoU with gt; ``seconds`` simulated time."""

    decision: str
    mask: np.ndarray
    clicks: list[Click]
    iou: float
    seconds: float


class SimulatedReviewer:
    """Reviews proposals against ground truth with a click budget; deterministic given its inputs."""

    def __init__(
        self,
        target_iou: float = 0.9,
        click_budget: int = 10,
        accept_iou: float | None = None,
        look_seconds: float = LOOK_SECONDS,
        seconds_per_click: float = SECONDS_PER_CLICK,
    ) -> None:
        """``accept_iou`` (default ``target_iou``): proposals at or above it are accepted untouched."""
        if click_budget < 0:
            raise ValueError(f"click_budget must be >= 0, got {click_budget}")
        self.target_iou = target_iou
        self.click_budget = click_budget
        self.accept_iou = target_iou if accept_iou is None else accept_iou
        self.look_seconds = look_seconds
        self.seconds_per_click = seconds_per_click

    def review(
        self, image: np.ndarray, proposal: np.ndarray, gt: np.ndarray, segmenter: InteractiveSegmenter
    ) -> ReviewOutcome:
        """Review ``proposal`` (H, W) bool for ``image`` (H, W, 3) uint8 against ``gt`` (H, W) bool.

        Corrections start from the proposal: the first click is computed against it, then ``segmenter``
        (started on ``image``) answers the growing click list until IoU >= ``target_iou`` or the budget
        is spent.
        """
        proposal = np.asarray(proposal, dtype=bool)
        best_mask, best_iou = proposal, mask_iou(proposal, gt)
        if best_iou >= self.accept_iou:
            return ReviewOutcome("accepted", proposal, [], best_iou, self.look_seconds)
        clicks: list[Click] = []
        decision = "rejected"
        mask, iou = proposal, best_iou
        for step in click_session(segmenter, image, gt, initial_mask=proposal, max_clicks=self.click_budget):
            clicks.append(step.click)
            mask, iou = step.mask, step.iou
            if iou > best_iou:
                best_mask, best_iou = mask, iou
            if iou >= self.target_iou:
                decision = "corrected"
                break
        if decision == "rejected":
            mask, iou = best_mask, best_iou
        seconds = self.look_seconds + self.seconds_per_click * len(clicks)
        return ReviewOutcome(decision, mask, clicks, iou, seconds)
