"""tiny-clip recipe variants at equal steps: zero-shot top-1 on held-out and on training images.

Trains one arm per call on the zoo's pool (the ``TINY_CLIP_POOL`` seed-0 images ``maskfactory zoo train
tiny-clip`` trains on) with the zoo recipe and a cosine schedule over ``--steps``, saves the checkpoint,
and measures it with ``maskfactory zoo eval tiny-clip`` on three datasets of single-object semantic
scenes: two of held-out seeds and one of the training seed (how far the arm underfits). Make them once,
then run the arms side by side with one thread each:

    maskfactory world make --task semantic --objects 1 --n 300 --seed 1 --out /tmp/clip-held
    maskfactory world make --task semantic --objects 1 --n 600 --seed 3 --out /tmp/clip-held3
    maskfactory world make --task semantic --objects 1 --n 300 --seed 0 --out /tmp/clip-seen
    .venv/bin/python benchmarks/tiny_clip_probe.py --steps 800 --stem-blocks 0 --out /tmp/base800.pt
    .venv/bin/python benchmarks/tiny_clip_probe.py --steps 800 --out /tmp/blocks800.pt  # the zoo's 3 blocks
    .venv/bin/python benchmarks/tiny_clip_probe.py --steps 800 --views 2 --consistency 1 --out /tmp/v2.pt
    .venv/bin/python benchmarks/tiny_clip_probe.py --steps 800 --batch-size 24 --crops 48 --out /tmp/crops.pt
    .venv/bin/python benchmarks/tiny_clip_probe.py --steps 800 --batch-size 16 --crops 64 \
        --cropped-at-full-size 0 --out /tmp/scenes.pt  # full images only from scenes crops cannot cut
"""

from __future__ import annotations

import argparse
import copy
import json

import torch

from maskfactory.infra.checkpoints import save_checkpoint
from maskfactory.models.clip import TINY_CLIP
from maskfactory.models.zoo.common import half_precision
from maskfactory.models.zoo.train_clip import TinyClipTraining, train_tiny_clip
from maskfactory.tasks.zoo import TINY_CLIP_POOL, clip_pool, evaluate_tiny_clip


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--pool", type=int, default=TINY_CLIP_POOL, help="training images")
    parser.add_argument("--stem-blocks", type=int, default=TINY_CLIP["conv_stem_blocks"])
    parser.add_argument("--layers", type=int, default=TINY_CLIP["vision_cfg"]["layers"], help="ViT blocks")
    parser.add_argument("--lr", type=float, default=TinyClipTraining.lr)
    parser.add_argument("--batch-size", type=int, default=TinyClipTraining.batch_size)
    parser.add_argument("--views", type=int, default=TinyClipTraining.views, help="views per image")
    parser.add_argument("--consistency", type=float, default=TinyClipTraining.consistency_weight)
    parser.add_argument("--region-weight", type=float, default=TinyClipTraining.region_weight)
    parser.add_argument("--crops", type=int, default=TinyClipTraining.crops, help="object crops per step")
    parser.add_argument(
        "--cropped-at-full-size",
        type=float,
        default=TinyClipTraining.cropped_at_full_size,
        help="how often a cropped image is also drawn full size, against the others (0: never)",
    )
    parser.add_argument("--seed", type=int, default=0, help="training seed (the pool is always seed 0's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (two arms side by side: 1)")
    parser.add_argument("--held", default="/tmp/clip-held", help="single-object scenes of a held-out seed")
    parser.add_argument("--held2", default="/tmp/clip-held3", help="a second held-out seed's scenes")
    parser.add_argument("--seen", default="/tmp/clip-seen", help="single-object scenes of the training seed")
    parser.add_argument("--out", required=True, help="checkpoint path")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = copy.deepcopy(TINY_CLIP)
    config["conv_stem_blocks"] = args.stem_blocks
    config["vision_cfg"]["layers"] = args.layers
    pool = clip_pool(args.pool, 0, config["vision_cfg"]["image_size"])
    # No time limit: the arms are compared at equal steps, whatever the machine's load.
    training = TinyClipTraining(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        views=args.views,
        consistency_weight=args.consistency,
        region_weight=args.region_weight,
        crops=args.crops,
        cropped_at_full_size=args.cropped_at_full_size,
        seed=args.seed,
        time_limit_s=None,
    )
    model, summary = train_tiny_clip(config, pool, training, log=lambda d: print(json.dumps(d), flush=True))
    version = save_checkpoint(args.out, "clip", config, half_precision(model), extra={"training": summary})
    held = evaluate_tiny_clip(args.held, args.out)["top1"]
    held2 = evaluate_tiny_clip(args.held2, args.out)["top1"]
    seen = evaluate_tiny_clip(args.seen, args.out)["top1"]
    arm = {"stem_blocks": args.stem_blocks, "layers": args.layers, "pool": args.pool}
    print(
        json.dumps(
            {
                "out": args.out,
                "version": version,
                **arm,
                "held_top1": held,
                "held2_top1": held2,
                "seen_top1": seen,
                **summary,
            }
        )
    )


if __name__ == "__main__":
    main()
