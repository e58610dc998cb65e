"""maskfactory.simulators.scribbles: the DAVIS scribble robot and stroke rasterisation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.draw import ellipse

from maskfactory.simulators.scribbles import Stroke, scribble, strokes_to_mask

SQUARE_3X3 = np.ones((3, 3), dtype=bool)


def blank(h: int = 64, w: int = 128) -> np.ndarray:
    return np.zeros((h, w), dtype=bool)


def bar() -> np.ndarray:
    """An 11 x 108 px horizontal bar: rows 20..30 (medial row 25), columns 10..117."""
    gt = blank()
    gt[20:31, 10:118] = True
    return gt


def crescents() -> tuple[np.ndarray, np.ndarray]:
    """A prediction shifted and shrunk against its ground truth: curved misses and false alarms."""
    gt, pred = blank(96, 96), blank(96, 96)
    gt[ellipse(48, 44, 30, 22, shape=gt.shape, rotation=0.4)] = True
    pred[ellipse(52, 56, 26, 20, shape=pred.shape, rotation=0.2)] = True
    return pred, gt


def test_perfect_prediction_gets_no_stroke() -> None:
    gt = bar()
    assert scribble(gt.copy(), gt, np.random.default_rng(0)) == []
    assert scribble(blank(), blank(), np.random.default_rng(0)) == []


def test_same_seed_same_strokes() -> None:
    pred, gt = crescents()
    a = scribble(pred, gt, np.random.default_rng(7))
    b = scribble(pred, gt, np.random.default_rng(7))
    assert len(a) == len(b) > 0
    for sa, sb in zip(a, b, strict=True):
        assert sa.positive == sb.positive
        np.testing.assert_array_equal(sa.points, sb.points)


def test_strokes_lie_in_their_error_regions() -> None:
    pred, gt = crescents()
    strokes = scribble(pred, gt, np.random.default_rng(0), nb_points=200)
    assert {s.positive for s in strokes} == {True, False}
    assert all(s.points.shape == (200, 2) for s in strokes)
    pos, neg = strokes_to_mask(strokes, gt.shape, radius=0)
    # The documented tolerance is 1 px (smoothing); these regions are thick, so the strokes stay inside.
    assert not (pos & ~(gt & ~pred)).any()
    assert not (neg & ~(pred & ~gt)).any()


def test_thin_regions_stay_within_one_pixel() -> None:
    gt = blank(40, 40)
    rows, cols = np.arange(5, 35), np.arange(5, 35)
    gt[rows, cols] = True  # a 1-px diagonal: no opening (small area), skeleton = the line itself
    gt[5, 5:20] = True  # plus a horizontal arm: the path bends at (5, 5)
    strokes = scribble(blank(40, 40), gt, np.random.default_rng(0))
    assert len(strokes) == 1 and strokes[0].positive
    pos, _ = strokes_to_mask(strokes, gt.shape, radius=0)
    assert not (pos & ~ndimage.binary_dilation(gt, SQUARE_3X3)).any()


def test_a_long_bar_gets_one_stroke_along_its_medial_axis() -> None:
    gt = bar()
    strokes = scribble(blank(), gt, np.random.default_rng(0))
    assert len(strokes) == 1
    (stroke,) = strokes
    assert stroke.positive and stroke.points.shape == (1000, 2)
    x, y = stroke.points.T
    assert x.max() - x.min() >= 0.85 * 108  # spans most of the bar's length
    # Away from the ends (where the medial axis forks to the corners) it runs along row 25.
    middle = (x > 30) & (x < 97)
    assert np.abs(y[middle] - 25).max() < 0.5
    # Ordered along the stroke: evenly spaced by arc length (a chord across a bend is a bit shorter).
    steps = np.hypot(np.diff(x), np.diff(y))
    assert steps.max() < 0.2 and steps.min() > 0.9 * steps.max()


def test_tiny_error_regions_are_filtered_out() -> None:
    gt = bar()
    gt[50:52, 60:62] = True  # a 2x2 speck: the opening (radius ~2.6 px here) removes it
    strokes = scribble(blank(), gt, np.random.default_rng(0))
    assert len(strokes) == 1
    assert strokes[0].points[:, 1].max() < 31
    lone = blank()
    lone[10, 10:13] = True  # 3 skeleton pixels < min_nb_nodes=4
    assert scribble(blank(), lone, np.random.default_rng(0)) == []


def test_min_nb_nodes_counts_skeleton_pixels() -> None:
    line = blank()
    line[10, 10:16] = True  # 6 px: small enough for no opening; its skeleton is itself
    assert len(scribble(blank(), line, np.random.default_rng(0), min_nb_nodes=6)) == 1
    assert scribble(blank(), line, np.random.default_rng(0), min_nb_nodes=7) == []


def test_negative_strokes_on_false_alarms() -> None:
    gt = bar()
    pred = gt.copy()
    pred[40:55, 20:100] = True  # a false-alarm band under the bar
    strokes = scribble(pred, gt, np.random.default_rng(0))
    assert [s.positive for s in strokes] == [False]
    assert (strokes[0].points[:, 1] >= 40).all() and (strokes[0].points[:, 1] <= 54).all()


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="kernel_size"):
        scribble(blank(), bar(), np.random.default_rng(0), kernel_size=1.0)
    with pytest.raises(ValueError, match="one shape"):
        scribble(blank(8, 8), blank(8, 9), np.random.default_rng(0))


def test_strokes_to_mask() -> None:
    pos_stroke = Stroke(points=np.array([[2.0, 5.0], [12.0, 5.0]]), positive=True)
    neg_stroke = Stroke(points=np.array([[15.0, 1.0], [15.0, 3.0], [25.0, 3.0]]), positive=False)
    pos, neg = strokes_to_mask([pos_stroke, neg_stroke], (10, 20), radius=0)
    expected_pos = np.zeros((10, 20), dtype=bool)
    expected_pos[5, 2:13] = True
    np.testing.assert_array_equal(pos, expected_pos)
    expected_neg = np.zeros((10, 20), dtype=bool)
    expected_neg[1:4, 15] = True
    expected_neg[3, 15:20] = True  # the part past column 19 is outside the image and dropped
    np.testing.assert_array_equal(neg, expected_neg)

    thick, _ = strokes_to_mask([pos_stroke], (10, 20), radius=2)
    assert thick[3, 7] and thick[7, 7] and thick[4, 1] and thick[5, 0]  # within 2 px of the line
    assert not thick[2, 7] and not thick[8, 7] and not thick[3, 0]  # 3 px, or sqrt(8) px, away
    assert not strokes_to_mask([], (4, 4))[0].any()
