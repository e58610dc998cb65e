"""The benchmark metrics on hand-made masks, including empty targets."""

from __future__ import annotations

import numpy as np
import pytest

from maskfactory.models.metrics import ber, e_measure, f_beta, foreground_rate, label_accuracy, mae, mask_iou


def masks() -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((4, 5), bool)
    gt[:2, :2] = True  # 4 foreground pixels of 20
    pred = np.zeros((4, 5), bool)
    pred[:2, 1:3] = True  # 2 of them right, 2 false alarms
    return pred, gt


def test_overlap_metrics_on_a_hand_made_pair() -> None:
    pred, gt = masks()
    assert mask_iou(pred, gt) == pytest.approx(2 / 6)
    assert mae(pred, gt) == pytest.approx(4 / 20)
    # TPR 2/4, TNR 14/16: BER = 100 * (1 - (0.5 + 0.875) / 2)
    assert ber(pred, gt) == pytest.approx(100 * (1 - (0.5 + 0.875) / 2))
    p = r = 0.5
    assert f_beta(pred, gt) == pytest.approx(1.3 * p * r / (0.3 * p + r))


def test_perfect_and_empty_cases() -> None:
    pred, gt = masks()
    assert mask_iou(gt, gt) == 1.0 and mae(gt, gt) == 0.0 and ber(gt, gt) == 0.0
    assert f_beta(gt, gt) == pytest.approx(1.0) and e_measure(gt, gt) == pytest.approx(1.0)
    empty = np.zeros_like(gt)
    assert mask_iou(empty, empty) == 1.0 and f_beta(empty, empty) == 1.0 and e_measure(empty, empty) == 1.0
    assert f_beta(pred, empty) == 0.0 and e_measure(pred, empty) == pytest.approx(1 - 4 / 20)
    assert ber(empty, gt) == pytest.approx(50.0)  # misses every foreground pixel, right on the rest


def test_e_measure_rewards_alignment() -> None:
    pred, gt = masks()
    assert e_measure(gt, gt) > e_measure(pred, gt) > e_measure(~gt, gt)
    assert e_measure(~gt, gt) == pytest.approx(0.0)  # centred maps of opposite sign everywhere


def test_foreground_rate_counts_points_on_the_target() -> None:
    _, gt = masks()
    points = np.array([[0.5, 0.5], [1.5, 1.5], [4.5, 3.5], [9.0, 9.0]])  # x/y; the last is clipped
    assert foreground_rate(points, gt) == pytest.approx(2 / 4)
    with pytest.raises(ValueError):
        foreground_rate(np.zeros((0, 2)), gt)


def test_label_accuracy_compares_labels_with_the_ground_truth_under_each_point() -> None:
    _, gt = masks()
    points = np.array([[0.5, 0.5], [1.5, 1.5], [4.5, 3.5]])  # on, on, off the target
    assert label_accuracy(points, np.array([1, 0, 0]), gt) == pytest.approx(2 / 3)
    assert label_accuracy(points, np.array([1, 1, 1]), gt) == pytest.approx(foreground_rate(points, gt))
