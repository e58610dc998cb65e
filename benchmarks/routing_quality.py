"""Routing quality of ``label-dataset`` (issue 5): does the confidence send the bad masks to review?

Per task, on a held-out world dataset (``maskfactory world make --seed 1``; the zoo agents were
trained on seed 0 and their confidence fitted on seed 5, seed 2 before tiny-sam run 9, which trained on
seed 2's items), the pipeline's own ``AutoLabeler`` labels
every item; each mask is then scored against the truth. Printed per task:

- the curve of auto-accepted mIoU against review rate: the lowest-confidence share r of items goes
  to review, the rest is auto-accepted (r = 0 is "accept everything", the mIoU of all items);
- the expected calibration error (10 bins) of the confidence against "IoU >= 0.85";
- at r = 20%: auto-accepted mIoU against the mIoU of all items (the issue's bar: higher);
- the same over all tasks' items pooled in one queue.

    python benchmarks/routing_quality.py --data /tmp/held-{task} --log benchmarks/logs/routing-quality.jsonl
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pyarrow as pa
import torch

from maskfactory.infra import masks
from maskfactory.models import metrics
from maskfactory.models.confidence import GOOD_IOU
from maskfactory.simulators import datasets
from maskfactory.simulators.world import TASKS
from maskfactory.tasks.discover import item_id
from maskfactory.tasks.labelling import AutoLabeler
from maskfactory.tasks.policy import zoo_policy_path

RATES = [0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8]
BATCH = 16


def score_task(task: str, data: str, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Label ``task``'s items of ``data`` with the zoo agent: (confidence, true IoU), (N,) each."""
    rows = datasets.read_manifest(data).to_pylist()[:limit]
    labeler = AutoLabeler(task, zoo_policy_path(task), run_id="routing-benchmark")
    confidence, ious = [], []
    for start in range(0, len(rows), BATCH):
        batch = rows[start : start + BATCH]
        items = [
            {"item_id": item_id(r["image_uri"], None), "uri": r["image_uri"], "prompt": r["prompt"]}
            for r in batch
        ]
        for row, label in zip(batch, labeler(pa.Table.from_pylist(items)).to_pylist(), strict=True):
            mask = masks.decode(masks.RLE(label["mask_rle_size"], label["mask_rle_counts"]))
            ious.append(metrics.mask_iou(mask, datasets.read_mask(row["mask_uri"])))
            confidence.append(label["confidence"])
    return np.asarray(confidence), np.asarray(ious)


def summarise(task: str, data: str, c: np.ndarray, iou: np.ndarray) -> dict[str, object]:
    """The routing figures of confidences ``c`` and true IoUs ``iou`` (N,) each."""
    order = np.argsort(c, kind="stable")  # lowest confidence first: those go to review
    curve = []
    for rate in RATES:
        accepted = order[round(rate * len(c)) :]
        curve.append(
            {
                "review_rate": rate,
                "auto_accepted_mIoU": float(iou[accepted].mean()),
                "accepted": len(accepted),
            }
        )
    at20 = next(p for p in curve if p["review_rate"] == 0.2)
    return {
        "task": task,
        "data": data,
        "items": len(c),
        "mIoU_all": float(iou.mean()),
        "good_share": float((iou >= GOOD_IOU).mean()),
        "calibration_error": metrics.expected_calibration_error(c, iou >= GOOD_IOU),
        "mean_confidence": float(c.mean()),
        "auto_accepted_mIoU_at_20pct": at20["auto_accepted_mIoU"],
        "beats_all_at_20pct": at20["auto_accepted_mIoU"] > float(iou.mean()),
        "curve": curve,
        "date": time.strftime("%Y-%m-%d"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="Dataset folder pattern with {task}.")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--log", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    scored = {task: score_task(task, args.data.format(task=task), args.limit) for task in args.tasks}
    results = [summarise(task, args.data.format(task=task), *scored[task]) for task in args.tasks]
    if len(scored) > 1:
        # One queue for every task's items: how routing does on the whole held-out set.
        pooled = (np.concatenate([scored[t][k] for t in args.tasks]) for k in (0, 1))
        results.append(summarise("pooled", args.data, *pooled))
    for result in results:
        print(json.dumps({k: v for k, v in result.items() if k != "curve"}))
        print(
            "  "
            + "  ".join(f"r={p['review_rate']:.2f}:{p['auto_accepted_mIoU']:.3f}" for p in result["curve"])
        )
        if args.log:
            with open(args.log, "a") as f:
                f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
