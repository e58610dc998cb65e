"""How well CLIP Surgery's text maps find each task's target, with and without the redundancy removal.

    .venv/bin/python benchmarks/clip_maps.py [--n 50] [--seed 1] [--clip URI]

For held-out world images of each task (dataset seed 1 by default; tiny-clip trains on seed-0 items) it
computes the map of the task's prompt (the class name for semantic, the paper's prompt otherwise) on
CLIP's patch grid and scores it against the target, pooled to that grid (a cell is foreground when the
target covers at least half of it), as the area under the ROC curve: 1 ranks every target cell above
every other, 0.5 is chance. Images whose target fills no cell or every cell are skipped.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F

from maskfactory.models.clip import normalize_images, square_resize
from maskfactory.models.clip_surgery import ClipSurgery
from maskfactory.models.registry import load_clip_model
from maskfactory.simulators.world import TASKS
from maskfactory.tasks.zoo import training_samples


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` (N,) for the bool labels ``positive`` (N,), by ranks."""
    ranks = np.empty(len(score))
    ranks[np.argsort(score, kind="stable")] = np.arange(1, len(score) + 1)
    pos, neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - pos * (pos + 1) / 2) / (pos * neg))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=50, help="images per task")
    parser.add_argument("--seed", type=int, default=1, help="dataset seed (tiny-clip trained on seed 0)")
    parser.add_argument("--clip", default=None, help="tiny-clip checkpoint (default: the shipped one)")
    args = parser.parse_args()
    loaded = load_clip_model("tiny-clip", args.clip)
    surgery = ClipSurgery(loaded)
    result: dict[str, dict[str, float]] = {}
    for task in TASKS:
        samples = list(training_samples(args.n, args.seed, tasks=(task,)))
        x = normalize_images(
            np.stack([square_resize(s.image, loaded.image_size) for s in samples]), loaded.mean, loaded.std
        )
        prompts = sorted({s.prompt for s in samples})
        row = {}
        for remove in (True, False):
            maps = surgery.maps(x, prompts, remove_redundancy=remove)
            scores = []
            for i, s in enumerate(samples):
                m = maps[i, prompts.index(s.prompt)]
                cover = F.adaptive_avg_pool2d(torch.from_numpy(s.target).float()[None], m.shape[-1])[0]
                target = (cover >= 0.5).numpy().ravel()
                if 0 < target.sum() < target.size:
                    scores.append(auroc(m.numpy().ravel(), target))
            row["with removal" if remove else "without removal"] = round(float(np.mean(scores)), 3)
        row["images"] = len(scores)
        result[task] = row
        print(f"{task}: {row}", flush=True)
    print(json.dumps({"clip_version": loaded.version, "seed": args.seed, "auroc": result}))


if __name__ == "__main__":
    main()
