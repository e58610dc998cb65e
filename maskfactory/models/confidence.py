"""Confidence of an auto-label: a calibrated probability that the mask's IoU with the truth is >= 0.85.

The pipeline routes on it: below the review threshold an item goes to a human. Four signals from one
prompting run feed it (DESIGN.md, "Score and route"):

- ``predicted_iou``: SAM's own IoU estimate of the final mask;
- ``stability``: SAM's stability score (IoU of the mask thresholded at logit -1 and +1);
- ``srm_agreement``: soft IoU between the SRM's foreground map and SAM's mask on the SRM grid, i.e.
  whether the task model and SAM agree on what the target is;
- ``value``: the critic's value of the last state, its estimate of the reward still to come.

``ConfidenceModel`` is a logistic regression on the standardised signals, fitted on a policy's
validation items (labels: IoU >= 0.85) and stored in the policy checkpoint. Logistic regression is our
choice: four inputs and a few dozen validation items support no more, and its output is a probability
that can be checked for calibration (``metrics.expected_calibration_error``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import expit

from maskfactory.models.alignsam.prompter import PromptResult

FEATURES = ("predicted_iou", "stability", "srm_agreement", "value")
GOOD_IOU = 0.85  # the IoU a mask must reach to count as good (the target)
# Prior weight of each standardised signal (see ConfidenceModel.fit). 1 with l2 = 1 was chosen by
# 5-fold cross-validation on the zoo agents' calibration sets of then (world seed 2), scoring the gain in
# auto-accepted mIoU at a 20% review rate, among weights 0, 0.5, 1, 2 and l2 1, 3
# (benchmarks/confidence_prior_cv.py); the held-out routing figures were not used to choose.
PRIOR_WEIGHT = 1.0


def srm_agreement(
    srm_map: torch.Tensor, low_res_logits: torch.Tensor, frames: list[tuple[int, int]], frame_size: int
) -> torch.Tensor:
    """Soft IoU of the SRM map and SAM's mask probability on the image's part of the SRM grid.

    srm_map: (B, g, g) foreground probability; low_res_logits: (B, 1, 4g, 4g) SAM's mask logits on the
    padded input frame; frames: each image's (h, w) inside that ``frame_size`` px frame. Returns (B,)
    in [0, 1]; 1 when both say "nothing" everywhere.
    """
    g = srm_map.shape[-1]
    sam = F.adaptive_avg_pool2d(low_res_logits.sigmoid(), g)[:, 0]  # (B, g, g)
    centres = (torch.arange(g, dtype=torch.float32) + 0.5) * frame_size / g
    sizes = torch.tensor(frames, dtype=torch.float32)  # (B, 2) h, w
    on_image = (centres[None, :, None] < sizes[:, 0, None, None]) & (
        centres[None, None, :] < sizes[:, 1, None, None]
    )  # (B, g, g): rows within h, columns within w
    srm, sam = srm_map * on_image, sam * on_image
    inter = torch.minimum(srm, sam).flatten(1).sum(1)
    union = torch.maximum(srm, sam).flatten(1).sum(1)
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.ones_like(union))


@dataclass
class ConfidenceModel:
    """P(IoU >= 0.85 | signals) = sigmoid(w . (x - mean) / std + b), x ordered as ``FEATURES``."""

    mean: list[float]
    std: list[float]
    weights: list[float]
    bias: float
    fitted_on: int = 0  # items behind the fit
    positives: int = 0  # of which reached GOOD_IOU

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(N, 4) signals -> (N,) probabilities."""
        z = (np.asarray(features, dtype=np.float64) - self.mean) / self.std
        return expit(z @ np.asarray(self.weights) + self.bias)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConfidenceModel:
        return cls(**d)

    @classmethod
    def fit(
        cls,
        features: np.ndarray,
        ious: np.ndarray,
        l2: float = 1.0,
        prior_weight: float = PRIOR_WEIGHT,
        iterations: int = 50,
    ) -> ConfidenceModel:
        """Fit on (N, 4) signals and (N,) true IoUs by Newton's method on the penalised log loss.

        The penalty ``l2 / 2 * |w - prior_weight|^2`` is a Gaussian prior on the weights of the
        standardised signals: each signal is a higher-is-better quality score, so it starts at
        ``prior_weight`` and the data moves it from there. This matters when few fit items reach
        0.85 (hard tasks: none among 100 for shadow and glass with the zoo's agents): a zero-mean
        prior would leave a constant, while this one keeps ranking items by their signals and the
        bias says how rare good masks are. The bias has no prior.

        Targets are Laplace-smoothed, (y N + 1/2) / (N + 1), so the fit stays finite when every item
        is on one side of 0.85: the model then says "rarely good" instead of "never".
        """
        x = np.asarray(features, dtype=np.float64)
        good = np.asarray(ious, dtype=np.float64) >= GOOD_IOU
        n = len(x)
        if n == 0 or x.ndim != 2 or x.shape[1] != len(FEATURES):
            raise ValueError(f"need (N, {len(FEATURES)}) features with N >= 1, got shape {x.shape}")
        mean, std = x.mean(0), x.std(0)
        std[std < 1e-6] = 1.0  # a constant signal carries no information; keep it from dividing by 0
        a = np.hstack([(x - mean) / std, np.ones((n, 1))])  # last column: the bias
        target = (good * n + 0.5) / (n + 1)
        penalty = np.diag([l2] * len(FEATURES) + [0.0])
        prior = np.array([prior_weight] * len(FEATURES) + [0.0])
        theta = prior.copy()
        theta[-1] = np.log(target.mean() / (1 - target.mean()))  # start at the base rate

        def objective(t: np.ndarray) -> float:
            z = a @ t  # log loss, written to stay finite for any z
            return float(np.sum(np.logaddexp(0, z) - target * z) + 0.5 * (t - prior) @ penalty @ (t - prior))

        for _ in range(iterations):
            p = expit(a @ theta)
            gradient = a.T @ (p - target) + penalty @ (theta - prior)
            hessian = (a * (p * (1 - p))[:, None]).T @ a + penalty + 1e-9 * np.eye(len(theta))
            step = np.linalg.solve(hessian, gradient)
            # Newton's step can overshoot where the loss is flat (a near-empty class); halve it until
            # the objective goes down.
            while objective(theta - step) > objective(theta) and np.abs(step).max() > 1e-10:
                step /= 2
            theta -= step
            if np.abs(step).max() < 1e-8:
                break
        return cls(
            mean=mean.tolist(),
            std=std.tolist(),
            weights=theta[:-1].tolist(),
            bias=float(theta[-1]),
            fitted_on=n,
            positives=int(good.sum()),
        )


def signals(result: PromptResult, frames: list[tuple[int, int]], frame_size: int) -> np.ndarray:
    """The four signals of each image of a prompting result, (B, 4) float64 in ``FEATURES`` order.

    frames: each image's (h, w) inside SAM's padded ``frame_size`` px input frame.
    """
    agreement = srm_agreement(result.srm_map, result.low_res_logits, frames, frame_size)
    stacked = torch.stack([result.iou_prediction, result.stability, agreement, result.value], dim=1)
    return stacked.double().cpu().numpy()
