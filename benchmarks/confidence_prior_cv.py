"""How the confidence model's prior was chosen (``models/confidence.py``: PRIOR_WEIGHT and l2).

For each task, the zoo agent prompts the calibration set (``maskfactory world make --n 100 --seed 2``,
the data ``policy calibrate`` fitted on when the prior was chosen; since tiny-sam run 9, which trained
on seed 2's items, the zoo's agents are calibrated on seed 5); then, for each (prior weight, l2)
candidate, 5-fold cross-validation on that set scores the gain in auto-accepted mIoU at a 20% review
rate over accepting everything. Held-out data (seed 1) plays no part.

    python benchmarks/confidence_prior_cv.py --data '/tmp/cal-{task}' \
        --log benchmarks/logs/confidence-prior-cv.jsonl
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from maskfactory.models.alignsam.agent import load_agent
from maskfactory.models.confidence import ConfidenceModel
from maskfactory.models.predictor import BatchedSamPredictor
from maskfactory.models.registry import load_sam_model
from maskfactory.simulators.world import TASKS
from maskfactory.tasks.policy import Encoded, Prompter, score, task_items, zoo_policy_path

CANDIDATES = [(w, l2) for w in (0.0, 0.5, 1.0, 2.0) for l2 in (1.0, 3.0)]
FOLDS = 5


def gain_at_20(confidence: np.ndarray, ious: np.ndarray) -> float:
    """Auto-accepted mIoU minus the mIoU of all items, when the lowest-confidence 20% go to review."""
    accepted = np.argsort(confidence, kind="stable")[round(0.2 * len(ious)) :]
    return float(ious[accepted].mean() - ious.mean())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="Calibration dataset folder pattern with {task}.")
    parser.add_argument("--log", default=None)
    args = parser.parse_args()
    predictor = BatchedSamPredictor(load_sam_model("tiny-sam")[0])
    rng = np.random.default_rng(0)
    gains: dict[tuple[float, float], list[float]] = {c: [] for c in CANDIDATES}
    for task in TASKS:
        agent, _, _ = load_agent(zoo_policy_path(task))
        scored = score(
            Prompter(predictor, agent),
            Encoded(task_items(args.data.format(task=task), task), predictor, None),
        )
        x, y = scored.signals, scored.ious
        folds = np.array_split(rng.permutation(len(y)), FOLDS)
        for weight, l2 in CANDIDATES:
            per_fold = []
            for held in folds:
                fit = np.setdiff1d(np.arange(len(y)), held)
                model = ConfidenceModel.fit(x[fit], y[fit], l2=l2, prior_weight=weight)
                per_fold.append(gain_at_20(model.predict(x[held]), y[held]))
            gains[(weight, l2)].append(float(np.mean(per_fold)))
    rows = [
        {
            "prior_weight": w,
            "l2": l2,
            "tasks": list(TASKS),
            "gain_per_task": g,
            "mean_gain": float(np.mean(g)),
        }
        for (w, l2), g in gains.items()
    ]
    for row in sorted(rows, key=lambda r: -r["mean_gain"]):
        print(json.dumps(row))
        if args.log:
            with open(args.log, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
