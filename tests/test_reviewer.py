"""maskfactory.simulators.reviewer: accept, correct or reject, with simulated time."""

from __future__ import annotations

import numpy as np
import pytest
from toy_segmenters import EmptySegmenter, FixSegmenter

from maskfactory.simulators.clicker import Click
from maskfactory.simulators.reviewer import SimulatedReviewer

IMAGE = np.zeros((16, 16, 3), dtype=np.uint8)


def squares() -> np.ndarray:
    gt = np.zeros((16, 16), dtype=bool)
    gt[1:8, 1:8] = True  # 49 px
    gt[10:15, 1:6] = True  # 25 px
    gt[1:4, 11:14] = True  # 9 px
    return gt


def test_a_good_proposal_is_accepted_without_clicks() -> None:
    gt = squares()
    proposal = gt.copy()
    proposal[1, 1:6] = False  # IoU 78/83 = 0.94
    seg = FixSegmenter(gt, proposal)
    out = SimulatedReviewer(target_iou=0.9, look_seconds=3.0, seconds_per_click=2.5).review(
        IMAGE, proposal, gt, seg
    )
    assert out.decision == "accepted"
    assert out.clicks == []
    assert out.iou == pytest.approx(78 / 83)
    np.testing.assert_array_equal(out.mask, proposal)
    assert out.seconds == 3.0
    assert seg.started == 0  # nothing to correct, no embedding needed


def test_accept_threshold_can_sit_below_the_target() -> None:
    gt = squares()
    proposal = gt.copy()
    proposal[1:4, 11:14] = False  # IoU 74/83 = 0.89
    reviewer = SimulatedReviewer(target_iou=0.95, accept_iou=0.85)
    assert reviewer.review(IMAGE, proposal, gt, FixSegmenter(gt, proposal)).decision == "accepted"


def test_a_poor_proposal_is_corrected() -> None:
    gt = squares()
    proposal = np.zeros_like(gt)
    proposal[1:8, 1:8] = True  # only the big square: IoU 49/83
    seg = FixSegmenter(gt, proposal)
    out = SimulatedReviewer(target_iou=0.9, look_seconds=3.0, seconds_per_click=2.5).review(
        IMAGE, proposal, gt, seg
    )
    # The first click is computed against the proposal: the 5x5 miss (then 74/83 < 0.9), then the 3x3.
    assert out.decision == "corrected"
    assert out.clicks == [Click(3.0, 12.0, True), Click(12.0, 2.0, True)]
    assert out.iou == 1.0
    np.testing.assert_array_equal(out.mask, gt)
    assert out.seconds == 3.0 + 2 * 2.5
    assert seg.started == 1


def test_budget_exhausted_below_target_is_rejected_with_the_best_mask_seen() -> None:
    gt = squares()
    proposal = np.zeros_like(gt)
    proposal[10:15, 1:6] = True  # IoU 25/83
    # One click fixes the 7x7 square (IoU 74/83 < 0.95), then the budget is spent.
    out = SimulatedReviewer(target_iou=0.95, click_budget=1).review(
        IMAGE, proposal, gt, FixSegmenter(gt, proposal)
    )
    assert out.decision == "rejected"
    assert out.clicks == [Click(4.0, 4.0, True)]
    assert out.iou == pytest.approx(74 / 83)
    assert out.mask.sum() == 74
    # A segmenter that only makes things worse: the proposal itself is the best mask seen.
    out = SimulatedReviewer(target_iou=0.9, click_budget=4).review(IMAGE, proposal, gt, EmptySegmenter())
    assert out.decision == "rejected"
    assert len(out.clicks) == 4
    assert out.iou == pytest.approx(25 / 83)
    np.testing.assert_array_equal(out.mask, proposal)
    assert out.seconds == pytest.approx(3.0 + 4 * 2.5)  # the defaults


def test_reviews_are_deterministic() -> None:
    gt = squares()
    proposal = np.zeros_like(gt)
    proposal[0:9, 0:9] = True  # the big square plus a 1-px false-alarm frame around it
    reviewer = SimulatedReviewer(target_iou=0.9, click_budget=5)
    a = reviewer.review(IMAGE, proposal, gt, FixSegmenter(gt, proposal))
    b = reviewer.review(IMAGE, proposal, gt, FixSegmenter(gt, proposal))
    assert (a.decision, a.clicks, a.iou, a.seconds) == (b.decision, b.clicks, b.iou, b.seconds)
    np.testing.assert_array_equal(a.mask, b.mask)


def test_negative_budget_is_refused() -> None:
    with pytest.raises(ValueError):
        SimulatedReviewer(click_budget=-1)
