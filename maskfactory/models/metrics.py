"""Segmentation metrics of the AlignSAM benchmarks (paper section 4.1, appendix D), on binary masks.

Every function takes a predicted mask and a ground-truth mask, both (H, W) bool, and returns a float
for that one image; a dataset's figure is the mean over its images. Conventions where an image has
no foreground (or no background) are stated per function, so empty targets never divide by zero.

Choices made here: the predictions are AlignSAM's binary masks, so F-beta and E-measure are computed
at that one threshold (the saliency literature's "adaptive" variants threshold a probability map).
"""

from __future__ import annotations

import numpy as np

BETA2 = 0.3  # F-beta's beta squared, the saliency literature's convention (Achanta et al. 2009)


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union; two empty masks agree everywhere, so their IoU is 1.0."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"pred and gt must be 2-D masks of one shape, got {pred.shape} and {gt.shape}")
    union = np.count_nonzero(pred | gt)
    return np.count_nonzero(pred & gt) / union if union else 1.0


def mae(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean absolute error per pixel, in [0, 1]."""
    return float(np.mean(pred != gt))


def ber(pred: np.ndarray, gt: np.ndarray) -> float:
    """Balance error rate in percent (shadow detection): 100 * (1 - (TPR + TNR) / 2).

    A class the image lacks counts as perfectly recognised (its rate is 1)."""
    pos, neg = gt.sum(), (~gt).sum()
    tpr = np.logical_and(pred, gt).sum() / pos if pos else 1.0
    tnr = np.logical_and(~pred, ~gt).sum() / neg if neg else 1.0
    return float(100.0 * (1.0 - 0.5 * (tpr + tnr)))


def f_beta(pred: np.ndarray, gt: np.ndarray, beta2: float = BETA2) -> float:
    """F-measure (1 + b2) P R / (b2 P + R); 1.0 when both masks are empty, 0.0 when only one is."""
    tp = np.logical_and(pred, gt).sum()
    if not pred.any() and not gt.any():
        return 1.0
    if tp == 0:
        return 0.0
    precision, recall = tp / pred.sum(), tp / gt.sum()
    return float((1 + beta2) * precision * recall / (beta2 * precision + recall))


def e_measure(pred: np.ndarray, gt: np.ndarray) -> float:
    """Enhanced-alignment measure (Fan et al. 2018): the mean of ((1 + xi) / 2)^2 with
    xi = 2 a b / (a^2 + b^2), a and b the mean-centred prediction and ground truth.

    With no foreground (or all foreground) in the ground truth the centred map is zero, and the
    measure falls back to the share of pixels the prediction gets right, as in the authors' code."""
    p, g = pred.astype(np.float64), gt.astype(np.float64)
    if not gt.any():
        return float(1.0 - p.mean())
    if gt.all():
        return float(p.mean())
    a, b = p - p.mean(), g - g.mean()
    xi = 2 * a * b / (a * a + b * b + 1e-12)
    return float(np.mean(((1 + xi) / 2) ** 2))


def _on_target(points: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(N,) bool: whether each point (N, 2) x/y in pixels falls on foreground (clipped to the image)."""
    if len(points) == 0:
        raise ValueError("at least one point is needed")
    h, w = gt.shape
    cols = np.clip(points[:, 0].astype(int), 0, w - 1)
    rows = np.clip(points[:, 1].astype(int), 0, h - 1)
    return gt[rows, cols]


def foreground_rate(points: np.ndarray, gt: np.ndarray) -> float:
    """Appendix D's FR: the share of chosen points (N, 2) x/y in pixels that fall on foreground."""
    return float(_on_target(points, gt).mean())


def label_accuracy(points: np.ndarray, labels: np.ndarray, gt: np.ndarray) -> float:
    """Share of points (N, 2) whose label (N,) 1/0 matches the ground truth under them: how well the
    SRM (or "every point positive") labels what the agent chose. Ours, not the paper's."""
    return float((_on_target(points, gt) == (labels > 0)).mean())


SCORES = {"mIoU": mask_iou, "MAE": mae, "BER": ber, "F-beta": f_beta, "E-measure": e_measure}


def expected_calibration_error(probabilities: np.ndarray, outcomes: np.ndarray, bins: int = 10) -> float:
    """ECE of predicted probabilities (N,) against 0/1 outcomes (N,): over ``bins`` equal-width
    probability bins, the item-weighted mean |mean probability - observed frequency|. Not a per-image
    metric: it scores a whole set of confidences (the pipeline's routing)."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(outcomes, dtype=np.float64)
    if p.shape != y.shape or p.ndim != 1 or len(p) == 0:
        raise ValueError(f"need two equal 1-D non-empty arrays, got {p.shape} and {y.shape}")
    which = np.minimum((p * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.sum() * abs(p[members].mean() - y[members].mean())
    return float(error / len(p))
