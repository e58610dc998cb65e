"""The routing confidence: its signals, its fit, and the calibration error that checks it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from maskfactory.models.confidence import GOOD_IOU, ConfidenceModel, srm_agreement
from maskfactory.models.metrics import expected_calibration_error


def test_agreement_is_soft_iou_over_the_image_part_of_the_grid() -> None:
    g, frame = 4, 64
    srm = torch.zeros(2, g, g)
    srm[:, :2, :2] = 1.0  # the SRM says: top-left quarter
    logits = torch.full((2, 1, 4 * g, 4 * g), -20.0)
    logits[0, :, :8, :8] = 20.0  # image 0: SAM agrees exactly
    logits[1, :, 8:, 8:] = 20.0  # image 1: SAM picks the opposite quarter
    out = srm_agreement(srm, logits, [(64, 64), (64, 64)], frame)
    assert out.tolist() == pytest.approx([1.0, 0.0], abs=1e-6)
    # Padding is ignored: with the image only in the left half, SAM's mask in the right half is off-image.
    logits[0, :, :, 8:] = 20.0
    assert srm_agreement(srm, logits, [(64, 32), (64, 64)], frame)[0] == pytest.approx(1.0, abs=1e-6)
    assert srm_agreement(srm, logits, [(64, 64), (64, 64)], frame)[0] == pytest.approx(4 / 12, abs=1e-6)


def test_fit_learns_which_signal_predicts_a_good_mask() -> None:
    rng = np.random.default_rng(0)
    n = 400
    signals = rng.uniform(0, 1, (n, 4))
    ious = np.clip(0.5 + 0.5 * signals[:, 2] + rng.normal(0, 0.05, n), 0, 1)  # only agreement matters
    model = ConfidenceModel.fit(signals, ious)
    assert np.argmax(np.abs(model.weights)) == 2 and model.weights[2] > 0
    p = model.predict(signals)
    good = ious >= GOOD_IOU
    assert p[good].mean() > 0.8 and p[~good].mean() < 0.2
    assert expected_calibration_error(p, good) < 0.05
    assert ConfidenceModel.from_dict(model.to_dict()).predict(signals) == pytest.approx(p)


def test_with_no_good_mask_the_fit_says_rare_but_still_ranks_by_the_signals() -> None:
    signals = np.random.default_rng(1).uniform(0, 1, (100, 4))
    model = ConfidenceModel.fit(signals, np.full(100, 0.3))
    p = model.predict(signals)
    assert np.all(np.isfinite(p)) and np.all(p > 0) and p.mean() < 0.02
    assert model.positives == 0 and model.fitted_on == 100
    # The prior keeps every signal's weight positive: higher signals, higher confidence.
    assert min(model.weights) > 0
    assert spearmanr(p, signals.sum(1)).statistic > 0.9  # the ranking is what routing uses
    # Without the prior (weight 0) the data alone leaves nothing to rank by.
    flat = ConfidenceModel.fit(signals, np.full(100, 0.3), prior_weight=0.0).predict(signals)
    assert np.ptp(flat) < 1e-6


def test_fit_refuses_the_wrong_shape() -> None:
    with pytest.raises(ValueError, match="features"):
        ConfidenceModel.fit(np.zeros((5, 3)), np.zeros(5))


def test_calibration_error_by_hand() -> None:
    # Bin [0.2, 0.3): says 0.2, observed 1/2 -> 0.3 off; bin [0.9, 1]: says 0.9, observed 1 -> 0.1 off.
    p = np.array([0.2, 0.2, 0.9, 0.9])
    y = np.array([0, 1, 1, 1])
    assert expected_calibration_error(p, y) == pytest.approx((2 * 0.3 + 2 * 0.1) / 4)
    assert expected_calibration_error(np.array([1.0]), np.array([1])) == 0.0
