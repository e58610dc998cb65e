"""Train tiny-sam with SAM's recipe (Kirillov et al. 2023, section 3 and appendix A) on (image, instances).

Per step, for a batch of images and a few instances in each:

1. The first prompt is, with equal probability, the instance's bounding box with noise (each corner
   moved by a normal with 10% of the box side as standard deviation, at most 20 px) or one point inside
   the instance.
2. ``correction_iters`` times, a corrective point is added from the error region of the previous
   prediction (positive on a miss, negative on a false alarm), with the previous low-res logits as the
   mask prompt (detached, as SAM does).

Where a point comes from is our choice. SAM draws every point uniformly from its region; we do that for
half of them and put the other half where RITM's clicker (and so every NoC evaluation) clicks: at the
point deepest inside the error, found on the decoder's 64x64 grid so that it costs little. Uniform
points teach the model to use any click, deepest points the clicks it will get when measured.
3. Mask loss = 20 x focal + 1 x dice against the instance (on the low-res grid, see _step_loss, or
   at sampled full-resolution pixels with ``loss_points``, see _point_loss); for the ambiguous first
   point prompt SAM predicts three masks and back-propagates only the lowest-loss one. The IoU head
   regresses the actual IoU of each predicted mask with an MSE loss.

The data come in as a pool of samples (the CLI fills it from the synthetic world), so this module
knows nothing about where images come from. Scale choices (steps, batch, learning rate, corrections)
are ours: SAM trains for 90k iterations with 256 images per batch and 11 interactive iterations; ours
must fit in 45 minutes on 2 CPU cores, so we use 2600 steps of 8 images (4 instances each) and 2
corrections. More corrections per step over fewer instances (6 per step, 6 images x 3, 1700 steps in
the same time) did worse: the model took 1000 steps instead of 400 to start predicting anything and
ended behind (benchmarks/RESULTS.md). In the zoom leg, on a model that already predicts, more
corrections at the same batch do pay, so it uses 6 (``ZOOM_LEG``; RESULTS, "Corrective clicks in the
zoom leg").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from torchvision.ops import sigmoid_focal_loss

from maskfactory.models.interactive import ZoomIn
from maskfactory.models.losses import soft_dice
from maskfactory.models.predictor import decode_masks
from maskfactory.models.sam import SamConfig, build_sam, image_features, pick_high_res, resize_longest_side
from maskfactory.models.zoo.common import (
    WeightAverage,
    deterministic_algorithms,
    mean_of,
    out_of_budget,
    warmup_cosine,
)
from maskfactory.simulators.clicker import next_click
from maskfactory.simulators.world import min_instance_area


@dataclass
class TinySamTraining:
    """Hyper-parameters of one tiny-sam training run."""

    steps: int = 2600  # about 0.9 s each on 2 idle cores
    images_per_step: int = 8
    instances_per_image: int = 4
    correction_iters: int = 2
    deepest_point_prob: float = 0.5  # share of points placed as RITM's clicker does, not uniformly
    # AdamW at SAM's peak rate (8e-4, for a 256-image batch). 900-step probes: 4e-4 was behind on every
    # task, 1.6e-3 never broke out of predicting nothing (benchmarks/RESULTS.md).
    lr: float = 8e-4
    weight_decay: float = 0.1
    warmup_steps: int = 100
    box_noise: float = 0.1  # corner noise std as a fraction of the box side
    box_noise_max_px: float = 20.0
    focal_weight: float = 20.0
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    # Where the mask loss is measured. None: on the decoder's 64x64 grid against each cell's foreground
    # fraction (the shipped run 4). N: at N full-resolution pixels per mask, the logits upsampled
    # bilinearly as SAM does at inference, mostly where the prediction is least sure; see _point_loss.
    loss_points: int | None = None
    point_oversample: int = 3  # candidates drawn per kept pixel; Mask2Former's values, as are the next
    point_importance: float = 0.75  # share of the kept pixels that are the least certain candidates
    # The IoU head's target: each mask's IoU on the decoder's grid (False, run 4) or of its logits
    # upsampled to the input size (True), which is the mask the first click is judged on.
    full_res_iou: bool = False
    # Train only the parameters whose names start with this prefix (None: all), e.g.
    # "mask_decoder.iou_prediction_head" to refit the IoU head of a trained model with the rest fixed.
    train_only: str | None = None
    seed: int = 0
    # A safety net so `zoo train` stays within its 45-minute budget on a busy 2-core machine; the summary
    # records how many steps actually ran.
    time_limit_s: float | None = 42 * 60
    stop_after: int | None = None  # end after this many steps, time limit off; schedule unchanged
    # Zoom crops (ours, not SAM's recipe): this share of each step's images is replaced by a square crop
    # around one of its instances, magnified to the input size, which is what Zoom-In (models/interactive.py,
    # ``ZoomIn``) shows the model at inference. The crop is ZoomIn's box with its minimum side drawn from
    # ``zoom_crop_sides`` (px) and its growth from ``zoom_crop_expansion``: at 256 px, small objects are
    # magnified 1.3 to 4 times. 0 (the shipped run) draws nothing, so the recipe's random stream is unchanged.
    # The ranges, and the share 0.5 the probes used, are our choice (benchmarks/RESULTS.md, "Zoom crops").
    zoom_crop_prob: float = 0.0
    zoom_crop_sides: tuple[int, int] = (64, 192)
    zoom_crop_expansion: tuple[float, float] = (1.2, 2.0)
    # Weight averaging (ours, not SAM's recipe): None returns the weights of the last step; a decay
    # returns an exponential moving average of the weights over the run (models/zoo/common.py,
    # ``WeightAverage``), which weighs about the last 1 / (1 - decay) steps. It changes nothing the run
    # computes or draws, only which weights it returns. On the zoom leg at 0.995 (about its last 200
    # steps) it saved 0.12 and 0.19 clicks of NoC@85 on two runs; 0.998, which reaches back to the leg's
    # start, did worse than none (benchmarks/RESULTS.md, "Weight averaging in the zoom leg"). Off in the
    # recipe, on in ZOOM_LEG (since the shipped run 9).
    ema_decay: float | None = None

    def __post_init__(self) -> None:
        # Checked here, when the settings are made, so a bad leg setting fails before the recipe's run.
        if self.correction_iters < 0:
            raise ValueError(f"correction_iters must be 0 or more, got {self.correction_iters}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")


# The zoom leg, which `maskfactory zoo train tiny-sam` runs after the recipe above (`--zoom-leg 0` leaves
# it out): more steps on the trained model with half of each step's images zoom crops, from a fresh AdamW
# warmed up again to a quarter of the peak rate. These are the settings of the probe legs in
# benchmarks/RESULTS.md ("Zoom crops in training"): half the images cropped from the first step took two
# clicks more without Zoom-In, so the crops come after the model has learned whole images. The leg trains
# each prompt set with 6 corrective clicks, where the recipe has 2 (the clicks NoC counts come late in a
# session, and the recipe trains on three prompts), and returns its weights averaged at 0.995: on two
# fresh runs that took 0.32 and 0.23 clicks fewer than 2 corrections (RESULTS, "Corrective clicks in the
# zoom leg"). These are the settings of the shipped run 9 (2026-12-06; run 5 before it had 2 and none).
ZOOM_LEG = TinySamTraining(
    steps=600, lr=2e-4, warmup_steps=20, zoom_crop_prob=0.5, correction_iters=6, ema_decay=0.995
)


@dataclass
class TrainingSample:
    image: np.ndarray  # (S, S, 3) uint8, already at the encoder's input size
    instances: np.ndarray  # (K, S, S) bool, K >= 1


@deterministic_algorithms()
def train_tiny_sam(
    config: SamConfig,
    pool: Sequence[TrainingSample],
    training: TinySamTraining,
    log: Callable[[dict[str, float]], None] | None = None,
    start: dict[str, torch.Tensor] | None = None,
) -> tuple[Sam, dict[str, float]]:
    """Train a SAM of ``config`` on ``pool``; returns the model (eval mode) and a summary.

    ``start``: a state dict to go on training from (fine-tuning) instead of fresh weights. It may lack
    the high-resolution projections of a ``high_res_features`` config; those then start at zero, so the
    model starts out decoding exactly as the one it came from.
    """
    torch.manual_seed(training.seed)
    rng = np.random.default_rng(training.seed)
    gen = torch.Generator().manual_seed(training.seed)
    sam = build_sam(config).train()
    if start is not None:
        missing, unexpected = sam.load_state_dict(start, strict=False)
        if unexpected or any(not k.startswith("mask_decoder.conv_s") for k in missing):
            raise ValueError(f"start weights do not fit {config}: missing {missing}, unexpected {unexpected}")
    if training.train_only is not None:
        for name, p in sam.named_parameters():
            p.requires_grad_(name.startswith(training.train_only))
        if not any(p.requires_grad for p in sam.parameters()):
            raise ValueError(f"no parameter of {config} starts with {training.train_only!r}")
    size = config.image_size
    for s in pool:
        if s.image.shape[:2] != (size, size):
            raise ValueError(f"pool images must be {size}x{size}, got {s.image.shape[:2]}")
    # Normalise every image once: the pool is reused for thousands of steps.
    images = torch.stack([sam.preprocess(torch.from_numpy(s.image).permute(2, 0, 1).float()) for s in pool])
    instances = [torch.from_numpy(s.instances) for s in pool]

    optim = torch.optim.AdamW(sam.parameters(), lr=training.lr, weight_decay=training.weight_decay)

    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda step: warmup_cosine(step, training.warmup_steps, training.steps, floor=0.1)
    )
    average = None if training.ema_decay is None else WeightAverage(sam, training.ema_decay)
    start, steps_run, recent = time.perf_counter(), 0, []
    for step in range(training.steps):
        if out_of_budget(step, start, training.time_limit_s, training.stop_after):
            break
        steps_run = step + 1
        x, gt, image_index = _batch(images, instances, training, rng)
        loss, stats = _step_loss(sam, x, gt, image_index, training, gen)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(sam.parameters(), 1.0)
        optim.step()
        sched.step()
        if average is not None:
            average.update()
        recent.append(stats)
        if log and (step + 1) % 50 == 0:
            log({"step": step + 1, "seconds": time.perf_counter() - start, **mean_of(recent)})
            recent = []
    if average is not None:
        average.write_to_model()
    # steps_run can be below training.steps when the time limit or stop_after ends the run.
    summary = {**asdict(training), "steps_run": steps_run, "train_seconds": time.perf_counter() - start}
    return sam.eval(), summary


def _batch(
    images: torch.Tensor, instances: list[torch.Tensor], training: TinySamTraining, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (B, 3, S, S), instance masks (M, S, S) float and the image of each instance (M,)."""
    picks = rng.choice(
        len(instances), size=training.images_per_step, replace=len(instances) < training.images_per_step
    )
    flips = rng.random(len(picks)) < 0.5  # horizontal flips: free augmentation for a small pool
    zooms = np.zeros(len(picks), dtype=bool)
    if training.zoom_crop_prob > 0:
        zooms = rng.random(len(picks)) < training.zoom_crop_prob
    xs, gts, index = [], [], []
    for b, (i, flip, zoom) in enumerate(zip(picks, flips, zooms, strict=True)):
        x, masks = images[i], instances[i]
        if zoom:
            x, masks = zoom_crop(x, masks, int(rng.integers(len(masks))), training, rng)
        chosen = rng.choice(len(masks), size=min(training.instances_per_image, len(masks)), replace=False)
        m = masks[torch.as_tensor(chosen)]
        if flip:
            x, m = x.flip(-1), m.flip(-1)
        xs.append(x)
        gts.append(m)
        index += [b] * len(chosen)
    return torch.stack(xs), torch.cat(gts).float(), torch.tensor(index)


def zoom_crop(
    image: torch.Tensor, masks: torch.Tensor, framed: int, training: TinySamTraining, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A Zoom-In frame of one training image: (3, S, S) image and (K, S, S) bool instances -> the
    same shapes, of a square crop around instance ``framed``, magnified back to S x S.

    Instances the crop cuts to less than the world's smallest object (``min_instance_area`` of the
    uncropped image, counted before magnifying) are dropped; the framed one is whole inside the crop,
    so at least it is kept.
    """
    size = image.shape[-1]
    zoom = ZoomIn(
        expansion=float(rng.uniform(*training.zoom_crop_expansion)),
        min_crop=int(rng.integers(training.zoom_crop_sides[0], training.zoom_crop_sides[1] + 1)),
    )
    x0, y0, x1, y1 = zoom.box(masks[framed].numpy(), [])
    # The pool's images are normalised already; resizing commutes with that per-channel affine map, so
    # this is the crop the predictor would normalise at inference.
    crop = resize_longest_side(image[None, :, y0:y1, x0:x1], size)[0]
    parts = masks[:, y0:y1, x0:x1]
    parts = parts[parts.sum((1, 2)) >= min_instance_area((size, size))]  # counted before magnifying
    parts = F.interpolate(parts[None].float(), (size, size), mode="bilinear", align_corners=False)[0]
    return crop, parts > 0.5


def _step_loss(
    sam: Sam,
    x: torch.Tensor,
    gt: torch.Tensor,
    image_index: torch.Tensor,
    training: TinySamTraining,
    gen: torch.Generator,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one training step: first prompt, then corrective clicks; mean over iterations."""
    features, high_res = image_features(sam, x)  # one encoder pass per image
    features, high_res = features[image_index], pick_high_res(high_res, image_index)  # per mask
    m, size = gt.shape[0], gt.shape[-1]
    use_box = torch.rand(m, generator=gen) < 0.5
    boxes = _noisy_boxes(gt, training, gen)
    # Losses are computed on the decoder's own low-res grid (4g x 4g, 64 x 64 for tiny-sam) against the
    # instance's foreground fraction in each cell: 16x fewer pixels than the input frame, which is most of
    # the step's cost otherwise. Uniform corrective clicks are drawn at full resolution.
    low_size = 4 * features.shape[-1]
    gt_low = F.avg_pool2d(gt[:, None], size // low_size)[:, 0]
    # The first point is the "next click" on an empty prediction: a point inside the instance.
    nothing, nothing_low = torch.zeros_like(gt, dtype=torch.bool), torch.zeros_like(gt_low, dtype=torch.bool)
    coords, labels = _next_points(gt, gt_low, nothing, nothing_low, training, gen)
    labels = torch.where(use_box[:, None], -1.0, labels)  # box-started sets: no point yet

    losses, ious = [], []
    previous = None
    for it in range(training.correction_iters + 1):
        first = it == 0
        kept = torch.zeros(m, 1, low_size, low_size)  # the kept mask of each set: next mask prompt
        iou_loss = torch.zeros(())
        mask_loss = torch.zeros(())
        # Box-started sets keep their box; point-started ones have none. Prompt sets of the two kinds
        # cannot share one prompt-encoder call, so each iteration decodes two groups.
        for group_is_box in (True, False):
            sel = (use_box == group_is_box).nonzero().squeeze(1)
            if sel.numel() == 0:
                continue
            all_logits, iou_pred = decode_masks(
                sam,
                features[sel],
                points=(coords[sel], labels[sel]),
                boxes=boxes[sel] if group_is_box else None,
                mask_input=None if previous is None else previous[sel],
                high_res=pick_high_res(high_res, sel),
            )
            # First point prompt: SAM's three masks, min loss; every other prompt: the single mask.
            keep = slice(1, None) if (first and not group_is_box) else slice(0, 1)
            low, iou_pred = all_logits[:, keep], iou_pred[:, keep]
            target = gt_low[sel, None].expand_as(low)
            if training.loss_points is None:
                per_mask = training.focal_weight * _focal(low, target)
                per_mask = per_mask + training.dice_weight * soft_dice(low, target)
            else:
                per_mask = _point_loss(low, gt[sel], training, gen)
            rows, best = torch.arange(len(sel)), per_mask.argmin(dim=1)
            mask_loss = mask_loss + per_mask[rows, best].sum()
            if training.full_res_iou:
                up = F.interpolate(low.detach(), (size, size), mode="bilinear", align_corners=False)
                actual_iou = _iou(up > 0, gt[sel, None] > 0.5)
            else:
                actual_iou = _iou(low.detach() > 0, target > 0.5)
            iou_loss = iou_loss + F.mse_loss(iou_pred, actual_iou, reduction="sum") / iou_pred.shape[1]
            kept[sel] = low[rows, best, None].detach()
        previous = kept
        losses.append((mask_loss + training.iou_weight * iou_loss) / m)
        pred = F.interpolate(kept, (size, size), mode="bilinear", align_corners=False)[:, 0] > 0
        ious.append(_iou(pred, gt > 0.5).mean().item())
        if it < training.correction_iters:
            new_coords, new_labels = _next_points(gt, gt_low, pred, kept[:, 0] > 0, training, gen)
            coords = torch.cat([coords, new_coords], dim=1)
            labels = torch.cat([labels, new_labels], dim=1)
    loss = torch.stack(losses).mean()
    return loss, {"loss": loss.item(), "iou_first": ious[0], "iou_last": ious[-1]}


def _next_points(
    gt: torch.Tensor,
    gt_low: torch.Tensor,
    pred: torch.Tensor,
    pred_low: torch.Tensor,
    training: TinySamTraining,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The next click on each mask, given the prediction so far (empty before the first click).

    gt (M, S, S) float, gt_low (M, s, s) foreground fractions; pred (M, S, S) and pred_low (M, s, s)
    bool: the prediction upsampled as SAM does and on the decoder's grid. Returns coords (M, 1, 2) x/y
    in input pixels and labels (M, 1): 1 on a miss, 0 on a false alarm, -1 (a padding point SAM
    ignores) where there is nothing left to correct.
    """
    m, size, low = gt.shape[0], gt.shape[-1], gt_low.shape[-1]
    coords, labels = _uniform_points(gt, pred != (gt > 0.5), gen)
    deepest = (torch.rand(m, generator=gen) < training.deepest_point_prob).nonzero().squeeze(1)
    cell = size / low
    for i in deepest.tolist():
        click = next_click(pred_low[i].numpy(), gt_low[i].numpy() > 0.5)
        if click is None:  # perfect on the coarse grid: keep the uniform point of the fine one
            continue
        coords[i, 0] = torch.tensor([click.x, click.y]) * cell + (cell - 1) / 2  # the cell's centre
        labels[i, 0] = float(click.positive)
    return coords, labels


def _uniform_points(
    gt: torch.Tensor, region: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One pixel drawn uniformly from ``region`` per mask: coords (M, 1, 2) x/y, labels (M, 1).

    The label is the ground truth there (1: a miss to add, 0: a false alarm to remove); a mask whose
    region is empty gets a padding point (label -1) that SAM ignores.
    """
    m, w = gt.shape[0], gt.shape[-1]
    counts = region.reshape(m, -1).cumsum(1)  # inverse-CDF sampling: far cheaper than torch.multinomial
    total = counts[:, -1]
    empty = total == 0
    draw = (torch.rand(m, generator=gen) * total.clamp(min=1)).long()
    flat = torch.searchsorted(counts, draw[:, None], right=True).squeeze(1).clamp(max=counts.shape[1] - 1)
    ys, xs = flat // w, flat % w
    labels = gt.reshape(m, -1)[torch.arange(m), flat].float()
    labels[empty] = -1.0
    return torch.stack([xs, ys], dim=1)[:, None].float(), labels[:, None]


def _noisy_boxes(gt: torch.Tensor, training: TinySamTraining, gen: torch.Generator) -> torch.Tensor:
    """(M, 4) x0, y0, x1, y1 boxes of the masks, each corner jittered as SAM does."""
    m, h, w = gt.shape
    rows, cols = gt.any(2), gt.any(1)
    ar_h, ar_w = torch.arange(h).float(), torch.arange(w).float()
    y0 = torch.where(rows, ar_h, float(h)).min(1).values
    y1 = torch.where(rows, ar_h, -1.0).max(1).values
    x0 = torch.where(cols, ar_w, float(w)).min(1).values
    x1 = torch.where(cols, ar_w, -1.0).max(1).values
    box = torch.stack([x0, y0, x1, y1], dim=1)
    side = torch.stack([x1 - x0, y1 - y0, x1 - x0, y1 - y0], dim=1).clamp(min=1)
    noise = torch.randn(m, 4, generator=gen) * training.box_noise * side
    noise = noise.clamp(-training.box_noise_max_px, training.box_noise_max_px)
    return (box + noise).clamp(min=0).minimum(torch.tensor([w - 1, h - 1, w - 1, h - 1]).float())


def _point_loss(
    low: torch.Tensor, gt: torch.Tensor, training: TinySamTraining, gen: torch.Generator
) -> torch.Tensor:
    """Focal + dice loss at sampled full-resolution pixels: low (M, K, s, s) logits, gt (M, S, S) -> (M, K).

    The grid loss teaches each 4x4-pixel cell its foreground fraction, and the pixels are never seen;
    an object of 500 px covers about 30 cells, most of them on its edge. Here the loss is on
    the pixels themselves, with the logits upsampled as SAM does at inference (bilinear, half-pixel
    centres), so the edge the clicker and the IoU see is the one trained. Measuring all S x S pixels
    would cost 16x the grid's loss; like PointRend and Mask2Former (Kirillov et al. 2020; Cheng et al.
    2022) we take ``loss_points`` pixels per mask instead: of ``point_oversample`` times as many
    uniform candidates, the ``point_importance`` share whose logit is nearest zero, then uniform ones.
    """
    m, k, s, _ = low.shape
    size = gt.shape[-1]
    logits = low.reshape(m * k, 1, s, s)
    n_points, n_unsure = training.loss_points, round(training.loss_points * training.point_importance)
    with torch.no_grad():
        candidates = torch.randint(size * size, (m * k, n_points * training.point_oversample), generator=gen)
        unsure = -_logits_at(logits, candidates, size).abs()
        picked = candidates.gather(1, unsure.topk(n_unsure, dim=1).indices)
    uniform = torch.randint(size * size, (m * k, n_points - n_unsure), generator=gen)
    pixels = torch.cat([picked, uniform], dim=1)  # (M*K, P) flat pixel indices
    at = _logits_at(logits, pixels, size).reshape(m, k, 1, -1)
    target = gt.reshape(m, 1, -1).expand(m, k, -1).gather(2, pixels.reshape(m, k, -1)).unsqueeze(2)
    return training.focal_weight * _focal(at, target) + training.dice_weight * soft_dice(at, target)


def _logits_at(logits: torch.Tensor, pixels: torch.Tensor, size: int) -> torch.Tensor:
    """Low-res logits (N, 1, s, s) upsampled to size x size and read at flat pixel indices (N, P) -> (N, P).

    Equal to F.interpolate(bilinear, align_corners=False) read at those pixels, without upsampling
    the whole mask.
    """
    xy = torch.stack([pixels % size, pixels // size], dim=-1).float()
    grid = (xy + 0.5) / size * 2 - 1  # pixel centres in grid_sample's [-1, 1] coordinates
    out = F.grid_sample(logits, grid[:, None], mode="bilinear", padding_mode="border", align_corners=False)
    return out[:, 0, 0]


def _focal(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-mask mean sigmoid focal loss (alpha 0.25, gamma 2), shape (M, K)."""
    return sigmoid_focal_loss(logits, target, alpha=0.25, gamma=2.0, reduction="none").mean((-2, -1))


def _iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU over the last two dims of bool tensors; two empty masks agree perfectly (1.0)."""
    inter = (pred & target).sum((-2, -1)).float()
    union = (pred | target).sum((-2, -1)).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
