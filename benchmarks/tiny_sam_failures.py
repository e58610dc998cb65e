"""Where tiny-sam's NoC@85 is lost: click sessions grouped by the object's area.

    .venv/bin/python benchmarks/tiny_sam_failures.py [--tasks semantic saliency shadow] [--n 10]

For every instance mask of ``--n`` held-out natural images per task (dataset seed 1, as
``benchmarks/zoo_quality.py``) it runs the RITM click session with at most 20 clicks and reports, per
area bin: instances, the best IoU any click reached, NoC@85, the instances that never reached 0.85,
and the IoU of the best yes/no answer on the decoder's grid (64x64 for tiny-sam: the object's 4x4-cell
means thresholded at one half, upsampled bilinearly as SAM upsamples its logits). That is not a hard
ceiling (SAM's logits can put an edge inside a cell), but it shows what an error of one cell costs an
object of that size.

The last three columns are about the first click alone, which asks SAM for three masks: the mean IoU of
the one its IoU head rates best (what every session and mIoU@1 use), of the best of the three (an
oracle no user has), and of each of the three multimask outputs in turn. The difference of the first two
is what the IoU head's choice costs; the last shows which outputs the model uses at all.

``--zoom-in PX`` runs the sessions with Zoom-In (``models/interactive.py``), crops at least PX on a
side. The columns on the first click's three masks still come from the whole image; "IoU@1 rated best"
is the session's first answer, which with ``--zoom-skip 0`` (``ZoomIn``'s default) is given again in a
crop.

``--pool`` scores the first ``--n`` images per task of the zoo's own training pool instead (seed 0, as
``maskfactory zoo train tiny-sam`` draws them): how well the model fits what it was trained on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from maskfactory.models.interactive import SamClickSegmenter, ZoomIn
from maskfactory.models.metrics import mask_iou
from maskfactory.models.predictor import BatchedSamPredictor, ImageEmbeddings
from maskfactory.simulators import datasets
from maskfactory.simulators.clicker import evaluate_noc, next_click
from maskfactory.simulators.datasets import write_dataset
from maskfactory.simulators.world import TASKS
from maskfactory.tasks.zoo import tiny_sam_or_candidate, training_samples

AREA_BINS = [(0, 500), (500, 2000), (2000, 8000), (8000, 256 * 256 + 1)]  # px at 256 x 256


def grid_answer_iou(mask: np.ndarray, cell: int = 4) -> float:
    """IoU with ``mask`` (H, W) bool of its best yes/no answer on a grid of ``cell`` px cells."""
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    low = (F.avg_pool2d(t, cell) > 0.5).float()
    up = F.interpolate(low, mask.shape, mode="bilinear", align_corners=False)[0, 0].numpy() > 0.5
    return mask_iou(up, mask)


def first_click_ious(
    predictor: BatchedSamPredictor, embeddings: ImageEmbeddings, mask: np.ndarray
) -> np.ndarray:
    """IoU with ``mask`` (H, W) bool of each of SAM's three masks for the clicker's first click: (3,)."""
    click = next_click(np.zeros_like(mask), mask)
    coords, labels = torch.tensor([[[float(click.x), float(click.y)]]]), torch.tensor([[1.0]])
    pred = predictor.decode(embeddings, [0], coords, labels, multimask_output=True)
    masks = (predictor.upscale(pred, embeddings)[0] > predictor.sam.mask_threshold).numpy()
    return np.array([mask_iou(m, mask) for m in masks])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", default=["semantic", "saliency", "shadow"], choices=TASKS)
    parser.add_argument("--n", type=int, default=10, help="images per task")
    parser.add_argument("--out", default="/tmp/zoo-eval10", help="where the held-out datasets are (or go)")
    parser.add_argument("--sam", default=None, help="tiny-sam checkpoint (default: the shipped one)")
    parser.add_argument(
        "--pool", action="store_true", help="score the zoo's training images instead: how well it fits them"
    )
    parser.add_argument(
        "--zoom-in",
        type=int,
        metavar="PX",
        default=None,
        help="answer clicks in a crop around the object, PX or more on a side (Zoom-In)",
    )
    parser.add_argument(
        "--zoom-skip",
        type=int,
        default=ZoomIn.skip_clicks,
        help="with --zoom-in: clicks answered on the whole image alone (default: ZoomIn's)",
    )
    args = parser.parse_args()
    # The zoo's pool cycles through the five tasks, so its first 5n samples hold n of each.
    pool = list(training_samples(5 * args.n, seed=0)) if args.pool else []
    sam, _ = tiny_sam_or_candidate(args.sam)
    predictor = BatchedSamPredictor(sam)
    segmenter = SamClickSegmenter(
        predictor, None if args.zoom_in is None else ZoomIn(skip_clicks=args.zoom_skip, min_crop=args.zoom_in)
    )
    low = 4 * sam.prompt_encoder.image_embedding_size[0]  # side of the decoder's masks
    cell = sam.image_encoder.img_size // low

    print(
        f"| task | area (px) | instances | best IoU in 20 clicks | NoC@85 | never 0.85 | {low}x{low} answer "
        "| IoU@1 rated best | IoU@1 best of 3 | IoU@1 of mask 1 / 2 / 3 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for task in args.tasks:
        if pool:
            images = [(s.image, s.objects) for s in pool[TASKS.index(task) :: len(TASKS)]]
        else:
            data = Path(args.out) / f"natural-{task}"
            if not (data / "manifest.parquet").exists():
                write_dataset(str(data), task, "natural", n=args.n, seed=1)
            images = [(item.image, item.instances) for item in datasets.iter_items(str(data), None, args.n)]
        # (area, best IoU, NoC@85, grid answer IoU, IoU@1 rated best, IoU@1 best of 3, masks 1-3)
        rows = []
        for image, instances in images:
            embeddings = predictor.encode([image])
            for mask in instances:
                r = evaluate_noc(segmenter, image, mask, max_clicks=20)
                first = first_click_ious(predictor, embeddings, mask)
                session = (mask.sum(), max(r.ious), r.noc[0.85], grid_answer_iou(mask, cell), r.ious[0])
                rows.append((*session, first.max(), *first))
        a = np.array(rows, dtype=float)
        for lo, hi in [*AREA_BINS, (0, 256 * 256 + 1)]:
            s = (a[:, 0] >= lo) & (a[:, 0] < hi)
            area = "all" if (lo, hi) not in AREA_BINS else f"{lo}-{hi if hi < 256 * 256 else ''}"
            if s.any():
                print(
                    f"| {task} | {area} | {s.sum()} | {a[s, 1].mean():.3f} | "
                    f"{a[s, 2].mean():.2f} | {(a[s, 1] < 0.85).sum()} | {a[s, 3].mean():.3f} | "
                    f"{a[s, 4].mean():.3f} | {a[s, 5].mean():.3f} | "
                    f"{' / '.join(f'{v:.3f}' for v in a[s, 6:].mean(axis=0))} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
