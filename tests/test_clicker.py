"""maskfactory.simulators.clicker: the RITM click protocol on hand-made masks, NoC and its summary."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from toy_segmenters import EmptySegmenter, FixSegmenter

from maskfactory.simulators.clicker import (
    Click,
    NocResult,
    click_session,
    evaluate_noc,
    mask_iou,
    next_click,
    summarize_noc,
)

IMAGE = np.zeros((16, 16, 3), dtype=np.uint8)


def blank(h: int = 16, w: int = 16) -> np.ndarray:
    return np.zeros((h, w), dtype=bool)


def test_perfect_prediction_gets_no_click() -> None:
    gt = blank()
    gt[3:9, 2:7] = True
    assert next_click(gt.copy(), gt) is None
    assert next_click(blank(), blank()) is None


def test_empty_prediction_clicks_the_centre_of_a_square() -> None:
    gt = blank(12, 12)
    gt[3:8, 4:9] = True  # 5x5, rows 3..7, columns 4..8: centre row 5, column 6
    assert next_click(blank(12, 12), gt) == Click(x=6.0, y=5.0, positive=True)


def test_deeper_false_alarm_wins_over_a_shallow_miss() -> None:
    gt = blank()
    gt[1:4, 1:4] = True  # missed 3x3: depth 2
    pred = blank()
    pred[6:13, 6:13] = True  # false-alarm 7x7: depth 4 at its centre (9, 9)
    assert next_click(pred, gt) == Click(x=9.0, y=9.0, positive=False)


def test_image_border_counts_as_an_edge() -> None:
    gt = blank(10, 10)
    gt[0:3, 2:5] = True  # 3x3 miss touching the top border
    # Without the border as an edge, row 0 looks as deep as row 1 and row-major order picks (0, 3);
    # this is what makes the case discriminate.
    plain = ndimage.distance_transform_edt(gt)
    assert np.unravel_index(np.argmax(plain), plain.shape) == (0, 3)
    assert next_click(blank(10, 10), gt) == Click(x=3.0, y=1.0, positive=True)


def test_equal_depths_give_a_negative_click() -> None:
    gt = blank()
    gt[1:4, 1:4] = True  # missed 3x3, depth 2
    pred = blank()
    pred[6:9, 6:9] = True  # false-alarm 3x3, depth 2: RITM's strict ">" makes the tie negative
    assert next_click(pred, gt) == Click(x=7.0, y=7.0, positive=False)


def test_equal_depth_pixels_resolve_to_the_first_in_row_major_order() -> None:
    gt = blank()
    gt[5:8, 1:4] = True  # centre (6, 2)
    gt[1:4, 6:9] = True  # centre (2, 7): the earlier row wins although its column is larger
    assert next_click(blank(), gt) == Click(x=7.0, y=2.0, positive=True)
    even = blank()
    even[2:6, 2:6] = True  # 4x4: its four centre pixels tie; (3, 3) comes first
    assert next_click(blank(), even) == Click(x=3.0, y=3.0, positive=True)


def test_clicked_pixels_are_not_clicked_again() -> None:
    gt = blank(12, 12)
    gt[3:8, 4:9] = True
    first = next_click(blank(12, 12), gt)
    assert first == Click(x=6.0, y=5.0, positive=True)
    # Next deepest (depth 2) pixels surround the centre; the first in row-major order is (4, 5).
    assert next_click(blank(12, 12), gt, exclude=[first]) == Click(x=5.0, y=4.0, positive=True)
    speck = blank(12, 12)
    speck[6, 6] = True
    assert next_click(blank(12, 12), speck, exclude=[Click(6.0, 6.0, True)]) is None


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="one shape"):
        next_click(blank(4, 4), blank(4, 5))


def test_mask_iou() -> None:
    a, b = blank(4, 4), blank(4, 4)
    assert mask_iou(a, b) == 1.0  # two empty masks agree everywhere
    a[0, :] = True
    assert mask_iou(a, b) == 0.0
    b[0, :2] = True
    b[1, 0] = True
    assert mask_iou(a, b) == pytest.approx(2 / 5)


# --- NoC ------------------------------------------------------------------------------------------


def three_squares() -> np.ndarray:
    gt = blank()
    gt[1:8, 1:8] = True  # 49 px, depth 4
    gt[10:15, 1:6] = True  # 25 px, depth 3
    gt[1:4, 11:14] = True  # 9 px, depth 2
    return gt


def test_noc_with_a_component_fixing_segmenter() -> None:
    gt = three_squares()
    seg = FixSegmenter(gt)
    result = evaluate_noc(seg, IMAGE, gt, thresholds=(0.85, 0.90), max_clicks=20)
    # Clicks fix the squares deepest first: IoU 49/83, then 74/83 (>= 0.85, < 0.90), then 83/83.
    assert result.clicks == [Click(4.0, 4.0, True), Click(3.0, 12.0, True), Click(12.0, 2.0, True)]
    assert result.ious == pytest.approx([49 / 83, 74 / 83, 1.0])
    assert result.noc == {0.85: 2, 0.90: 3}
    assert result.initial_iou == 0.0
    assert seg.started == 1
    assert seg.seen == [1, 2, 3]  # the whole click list every time


def test_noc_stops_once_every_threshold_is_reached() -> None:
    gt = three_squares()
    result = evaluate_noc(FixSegmenter(gt), IMAGE, gt, thresholds=(0.5,), max_clicks=20)
    assert result.noc == {0.5: 1}
    assert len(result.ious) == 1


def test_noc_is_max_clicks_when_a_threshold_is_never_reached() -> None:
    gt = three_squares()
    seg = EmptySegmenter()
    result = evaluate_noc(seg, IMAGE, gt, thresholds=(0.85, 0.90), max_clicks=5)
    assert result.noc == {0.85: 5, 0.90: 5}
    assert result.ious == [0.0] * 5
    assert seg.seen == [1, 2, 3, 4, 5]
    assert len(set(result.clicks)) == 5  # ignored clicks move on to new pixels


def test_noc_from_an_initial_mask() -> None:
    gt = blank()
    gt[4:11, 4:11] = True  # 49 px
    initial = gt.copy()
    initial[1:3, 1:4] = True  # 2x3 false alarm, depth 1 everywhere: IoU 49/55 = 0.89
    seg = FixSegmenter(gt, base=initial)
    result = evaluate_noc(seg, IMAGE, gt, thresholds=(0.85, 0.90), initial_mask=initial)
    assert result.initial_iou == pytest.approx(49 / 55)
    assert result.noc == {0.85: 0, 0.90: 1}  # 0.85 needed no click; one negative click removes the blob
    assert result.clicks == [Click(1.0, 1.0, False)]
    assert result.ious == [1.0]


def test_perfect_initial_mask_needs_zero_clicks() -> None:
    gt = three_squares()
    seg = FixSegmenter(gt)
    result = evaluate_noc(seg, IMAGE, gt, initial_mask=gt.copy())
    assert result.noc == {0.85: 0, 0.90: 0}
    assert (result.ious, result.clicks, result.initial_iou) == ([], [], 1.0)
    assert seg.seen == []


def test_click_session_stops_when_nothing_is_left_to_click() -> None:
    gt = blank()
    gt[5, 5] = True
    seg = EmptySegmenter()
    steps = list(click_session(seg, IMAGE, gt, max_clicks=10))
    # The only error pixel gets clicked once; after that no unclicked error pixel is left.
    assert [s.click for s in steps] == [Click(5.0, 5.0, True)]
    assert steps[0].iou == 0.0


# --- summary --------------------------------------------------------------------------------------


def test_summarize_noc() -> None:
    c = Click(0.0, 0.0, True)
    results = [
        NocResult(ious=[0.5, 0.88, 0.95], clicks=[c] * 3, noc={0.85: 2, 0.90: 3}),
        NocResult(ious=[0.2] * 20, clicks=[c] * 20, noc={0.85: 20, 0.90: 20}),
        NocResult(ious=[], clicks=[], noc={0.85: 0, 0.90: 0}, initial_iou=0.97),
        # Reached 0.85 (not 0.90) exactly at the last click: NoC 20 but not a failure at 0.85.
        NocResult(ious=[0.1] * 19 + [0.86], clicks=[c] * 20, noc={0.85: 20, 0.90: 20}),
    ]
    summary = summarize_noc(results)
    assert summary == pytest.approx(
        {
            "n": 4,
            "NoC@85": (2 + 20 + 0 + 20) / 4,
            "NoC@90": (3 + 20 + 0 + 20) / 4,
            "failures@85": 1,
            "failures@90": 2,
            "mIoU@1": (0.5 + 0.2 + 0.97 + 0.1) / 4,
        }
    )


def test_summarize_noc_refuses_bad_input() -> None:
    with pytest.raises(ValueError):
        summarize_noc([])
    with pytest.raises(KeyError, match=r"0\.95"):
        summarize_noc([NocResult(ious=[1.0], clicks=[], noc={0.85: 1})], thresholds=(0.85, 0.95))
