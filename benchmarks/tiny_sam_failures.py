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

``--refine R`` refines every answer with the guided filter (``models/refine.py``), radius R input px
(``--refine-eps``: its regulariser; ``--refine-guide-sigma``: the guide's smoothing, image px); the
columns on the first click's three masks stay SAM's own.

``--pool`` scores the first ``--n`` images per task of the model's own training pool instead (the seed its
header records, as ``maskfactory zoo train tiny-sam`` draws them): how well the model fits what it was
trained on. A checkpoint of ``tiny_sam_stem.py`` trained with another ``--seed`` records that seed, but its
pool is seed 0's, so ``--pool`` is only right for those made with the default seed.

``--gallery PNG`` draws the objects under 2000 px that never reach 0.85, the first ``GALLERY_PER_TASK`` of
each task (a row of pairs per task): a ``WINDOW`` px window around the object, then the same window
with the ground truth's edge in green, the edge of the session's best mask in magenta, and white where
they agree, magnified twice.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.ndimage import binary_erosion

from maskfactory.infra.checkpoints import read_header
from maskfactory.models.interactive import SamClickSegmenter, ZoomIn
from maskfactory.models.metrics import mask_iou
from maskfactory.models.predictor import BatchedSamPredictor, ImageEmbeddings
from maskfactory.models.refine import GuidedRefinement
from maskfactory.models.zoo import zoo_path
from maskfactory.simulators import datasets
from maskfactory.simulators.clicker import click_session, evaluate_noc, next_click
from maskfactory.simulators.datasets import write_dataset
from maskfactory.simulators.world import TASKS
from maskfactory.tasks.zoo import tiny_sam_or_candidate, training_samples

AREA_BINS = [(0, 500), (500, 2000), (2000, 8000), (8000, 256 * 256 + 1)]  # px at 256 x 256
GALLERY_PER_TASK = 6
WINDOW = 56  # px of the image around a drawn object: a disc of 2000 px is 50 px across


def failure_panel(image: np.ndarray, gt: np.ndarray, best: np.ndarray) -> np.ndarray:
    """(2 WINDOW, 4 WINDOW, 3) uint8: the image around ``gt`` (H, W) bool, and again with the edges of
    ``gt`` (green) and of the session's ``best`` mask (magenta; white where both are), magnified twice."""
    h, w = gt.shape
    ys, xs = np.nonzero(gt)
    y0 = int(np.clip(round(ys.mean()) - WINDOW // 2, 0, h - WINDOW))
    x0 = int(np.clip(round(xs.mean()) - WINDOW // 2, 0, w - WINDOW))
    window = (slice(y0, y0 + WINDOW), slice(x0, x0 + WINDOW))
    crop = image[window]
    edges = crop.copy()
    gt_edge, best_edge = (m[window] & ~binary_erosion(m[window]) for m in (gt, best))
    edges[gt_edge] = (0, 255, 0)
    edges[best_edge] = (255, 0, 255)
    edges[gt_edge & best_edge] = (255, 255, 255)
    return np.kron(np.concatenate([crop, edges], axis=1), np.ones((2, 2, 1), dtype=np.uint8))


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
    parser.add_argument(
        "--refine",
        type=float,
        metavar="R",
        default=None,
        help="refine every answer with the guided filter, radius R input px",
    )
    parser.add_argument("--refine-eps", type=float, default=GuidedRefinement.eps, help="with --refine")
    parser.add_argument(
        "--refine-guide-sigma", type=float, default=GuidedRefinement.guide_sigma, help="with --refine"
    )
    parser.add_argument("--gallery", metavar="PNG", help="draw the small objects that never reach 0.85")
    args = parser.parse_args()
    # The zoo's pool cycles through the five tasks, so its first 5n samples hold n of each.
    pool = []
    if args.pool:
        trained_on = read_header(args.sam or str(zoo_path("tiny-sam.pt")))["extra"]["training"]["seed"]
        pool = list(training_samples(5 * args.n, seed=trained_on))
    sam, _ = tiny_sam_or_candidate(args.sam)
    predictor = BatchedSamPredictor(sam)
    segmenter = SamClickSegmenter(
        predictor,
        None if args.zoom_in is None else ZoomIn(skip_clicks=args.zoom_skip, min_crop=args.zoom_in),
        None
        if args.refine is None
        else GuidedRefinement(args.refine, args.refine_eps, args.refine_guide_sigma),
    )
    low = 4 * sam.prompt_encoder.image_embedding_size[0]  # side of the decoder's masks
    cell = sam.image_encoder.img_size // low

    print(
        f"| task | area (px) | instances | best IoU in 20 clicks | NoC@85 | never 0.85 | {low}x{low} answer "
        "| IoU@1 rated best | IoU@1 best of 3 | IoU@1 of mask 1 / 2 / 3 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    gallery, drawn = [], []  # a row of failure panels per task that has any, and those tasks
    for task in args.tasks:
        if pool:
            images = [(s.image, s.objects) for s in pool[TASKS.index(task) :: len(TASKS)]]
        else:
            data = Path(args.out) / f"natural-{task}"
            if not (data / "manifest.parquet").exists():
                write_dataset(str(data), task, "natural", n=args.n, seed=1)
            images = [(item.image, item.instances) for item in datasets.iter_items(str(data), None, args.n)]
        # (area, best IoU, NoC@85, grid answer IoU, IoU@1 rated best, IoU@1 best of 3, masks 1-3)
        rows, panels = [], []
        for image, instances in images:
            embeddings = predictor.encode([image])
            for mask in instances:
                r = evaluate_noc(segmenter, image, mask, max_clicks=20)
                if (
                    args.gallery
                    and mask.sum() < 2000
                    and max(r.ious) < 0.85
                    and len(panels) < GALLERY_PER_TASK
                ):
                    # The session again (it is deterministic), for its masks, which evaluate_noc keeps not.
                    best = max(
                        click_session(segmenter, image, mask, max_clicks=20), key=lambda step: step.iou
                    )
                    panels.append(failure_panel(image, mask, best.mask))
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
        if panels:
            blank = np.zeros_like(panels[0])
            gallery.append(np.concatenate(panels + [blank] * (GALLERY_PER_TASK - len(panels)), axis=1))
            drawn.append(task)
    if args.gallery and gallery:
        Image.fromarray(np.concatenate(gallery, axis=0)).save(args.gallery)
        print(f"\ngallery {args.gallery}, a row each: {', '.join(drawn)}")


if __name__ == "__main__":
    main()
