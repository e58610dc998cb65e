"""tiny-sam with a convolutional patch embedding (models/stem.py) against SAM's own, at equal steps.

Trains one arm per call on the zoo's pool (``TINY_SAM_POOL`` seed-0 world samples, as ``maskfactory zoo train
tiny-sam``) with the zoo recipe and a cosine schedule over ``--steps``, and saves the checkpoint. Run
the two arms side by side, then measure each with ``benchmarks/zoo_quality.py --sam CHECKPOINT``:

    .venv/bin/python benchmarks/tiny_sam_stem.py --stem none --steps 900 --out /tmp/base900.pt
    .venv/bin/python benchmarks/tiny_sam_stem.py --stem 32,64 --steps 900 --out /tmp/stem900.pt
    .venv/bin/python benchmarks/zoo_quality.py --n 10 --skip-clip --domains natural --sam /tmp/stem900.pt

``--stem-blocks N`` adds N residual convolutions inside the stem (as tiny-clip's has since 2026-12-03).
``--lr``, ``--focal-weight``, ``--warmup-steps``, ``--loss-points`` and ``--full-res-iou`` change one
hyper-parameter of the recipe, to probe it at equal steps the same way. ``--high-res`` adds SAM 2's
high-resolution features to the decoder (``SamConfig.high_res_features``). ``--start CHECKPOINT``
goes on training a trained tiny-sam (for example the zoo's) instead of a fresh one, so that two arms
can be compared after tiny-sam has left its first phase of predicting nothing, whose length varies
from run to run:

    .venv/bin/python benchmarks/tiny_sam_stem.py --start maskfactory/models/zoo/tiny-sam.pt \
        --steps 300 --lr 2e-4 --warmup-steps 20 --high-res --out /tmp/hr300.pt

``--finer-grid`` halves the patches (8 px at 256 px: 32 x 32 tokens, 128 x 128 masks) with
``models/sam.py``'s ``finer_grid``, and converts ``--start`` weights of 16 px patches with
``finer_grid_weights`` (a checkpoint that already has 8 px patches goes on as it is), so the capacity a
finer grid adds can be probed as a fine-tune of the zoo's model:

    .venv/bin/python benchmarks/tiny_sam_stem.py --start maskfactory/models/zoo/tiny-sam.pt --finer-grid \
        --steps 300 --lr 2e-4 --warmup-steps 20 --threads 2 --out /tmp/fine300.pt

``--seed`` draws other batches and prompts, for a leg that goes on from a checkpoint this script made
with the default seed (the same seed would replay that leg's batches).
``--train-only mask_decoder.iou_prediction_head`` refits the IoU head alone, the rest held fixed.
``--zoom-crops P`` replaces a share P of each step's images by zoom crops (``TinySamTraining.zoom_crop_prob``:
a magnified square crop around one instance, as Zoom-In frames an object at inference):

    .venv/bin/python benchmarks/tiny_sam_stem.py --start maskfactory/models/zoo/tiny-sam.pt \
        --zoom-crops 0.5 --steps 600 --lr 2e-4 --warmup-steps 20 --threads 2 --out /tmp/zc600.pt

This A/B is why the zoo's tiny-sam (``TINY_SAM``) has the stem since 2026-12-02: ``--stem 32,64``
is its config, and ``--stem none`` is SAM's single patch projection, which it had before.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from maskfactory.infra.checkpoints import load_checkpoint, save_checkpoint
from maskfactory.models.sam import TINY_SAM, SamConfig, finer_grid, finer_grid_weights
from maskfactory.models.zoo.common import half_precision
from maskfactory.models.zoo.train_sam import TinySamTraining, TrainingSample, train_tiny_sam
from maskfactory.tasks.zoo import TINY_SAM_POOL, training_samples


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    zoo_stem = ",".join(map(str, TINY_SAM.conv_stem)) or "none"
    parser.add_argument("--stem", default=zoo_stem, help="the stem's hidden channels, or 'none'")
    parser.add_argument(
        "--stem-blocks", type=int, default=TINY_SAM.conv_stem_blocks, help="residual convs in it"
    )
    parser.add_argument("--steps", type=int, default=900)
    parser.add_argument("--lr", type=float, default=TinySamTraining.lr, help="peak AdamW learning rate")
    parser.add_argument("--focal-weight", type=float, default=TinySamTraining.focal_weight)
    parser.add_argument("--warmup-steps", type=int, default=TinySamTraining.warmup_steps)
    parser.add_argument(
        "--loss-points", type=int, default=None, help="mask loss at N sampled full-resolution pixels"
    )
    parser.add_argument(
        "--full-res-iou", action="store_true", help="IoU head's target at the input size, not the grid"
    )
    parser.add_argument(
        "--train-only", default=None, help="train only parameters under this name prefix (with --start)"
    )
    parser.add_argument("--high-res", action="store_true", help="SAM 2's high-resolution features")
    parser.add_argument(
        "--finer-grid", action="store_true", help="8 px patches (finer_grid); --start is converted"
    )
    parser.add_argument(
        "--zoom-crops", type=float, default=0.0, help="share of images replaced by zoom crops (0: none)"
    )
    parser.add_argument("--start", default=None, help="a tiny-sam checkpoint to go on training")
    parser.add_argument(
        "--seed", type=int, default=TinySamTraining.seed, help="batches and prompts (a second leg: another)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (two arms side by side: 1)")
    parser.add_argument("--out", required=True, help="checkpoint path")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    stem = () if args.stem == "none" else tuple(int(c) for c in args.stem.split(","))
    config = dataclasses.replace(
        TINY_SAM, conv_stem=stem, conv_stem_blocks=args.stem_blocks, high_res_features=args.high_res
    )
    coarse = config
    if args.finer_grid:
        config = finer_grid(config)
    start = None
    if args.start:
        checkpoint = load_checkpoint(args.start)
        start = {k: v.float() for k, v in checkpoint.state_dict.items()}  # the zoo stores float16
        if args.finer_grid and SamConfig.from_dict(checkpoint.config) == coarse:
            start = finer_grid_weights(start, coarse, config)  # else a finer-grid model already
    pool = [TrainingSample(s.image, s.objects) for s in training_samples(TINY_SAM_POOL, seed=0)]
    # No time limit: the arms are compared at equal steps, whatever the machine's load.
    training = TinySamTraining(
        steps=args.steps,
        lr=args.lr,
        focal_weight=args.focal_weight,
        warmup_steps=args.warmup_steps,
        loss_points=args.loss_points,
        full_res_iou=args.full_res_iou,
        train_only=args.train_only,
        seed=args.seed,
        zoom_crop_prob=args.zoom_crops,
        time_limit_s=None,
    )
    model, summary = train_tiny_sam(
        config, pool, training, log=lambda d: print(json.dumps(d), flush=True), start=start
    )
    summary["start"] = args.start  # the header says what the steps went on from (None: fresh)
    half = half_precision(model)
    version = save_checkpoint(args.out, "sam", config.to_dict(), half, extra={"training": summary})
    arm = {"stem": list(stem), "stem_blocks": args.stem_blocks, "high_res": args.high_res, "lr": args.lr}
    arm["patch_size"] = config.patch_size
    arm["zoom_crops"] = args.zoom_crops
    print(json.dumps({"out": args.out, "version": version, **arm, **summary}))


if __name__ == "__main__":
    main()
