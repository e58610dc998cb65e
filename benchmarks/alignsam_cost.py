"""What AlignSAM's prompting costs next to SAM's image encoder (issue 4's cost figure).

For one SAM (tiny-sam as shipped, or vit_b with random weights: the cost does not depend on the
weights) and one agent, times in one process, alternating so that machine drift hits both alike:

- encode: the image encoder over a batch of images;
- prompt: the Prompter's T steps over the cached embeddings (SRM, policy, decoder per step).

Both are timed batched (all images in one call) and one image at a time, ``--repeats`` times; the
figure is the ratio of medians, prompting time / encoder time, per image.

    python benchmarks/alignsam_cost.py --model tiny-sam --images 16
    python benchmarks/alignsam_cost.py --model vit_b --images 2 --repeats 2 [--bf16-encoder]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from maskfactory.models.alignsam.agent import AlignSam, AlignSamConfig
from maskfactory.models.alignsam.prompter import Prompter
from maskfactory.models.predictor import BatchedSamPredictor
from maskfactory.models.registry import get_spec, load_sam_model
from maskfactory.models.sam import build_sam
from maskfactory.simulators.world import make_sample


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny-sam", help="tiny-sam (shipped weights) or vit_b (random).")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--steps", type=int, default=15, help="T, prompting steps.")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bf16-encoder", action="store_true", help="Encoder under bfloat16 autocast.")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.model == "tiny-sam":
        sam, _ = load_sam_model("tiny-sam")
    else:
        sam = build_sam(get_spec(args.model).config)  # random weights: cost only
    predictor = BatchedSamPredictor(sam.eval(), bf16_encoder=args.bf16_encoder)
    channels, grid = sam.prompt_encoder.embed_dim, sam.prompt_encoder.image_embedding_size[0]
    agent = AlignSam(channels, grid, AlignSamConfig())
    prompter = Prompter(predictor, agent, steps=args.steps)
    images = [make_sample("saliency", seed=i).image for i in range(args.images)]
    embeddings = predictor.encode(images[:1])  # warm-up of both paths
    prompter(embeddings)

    times: dict[str, list[float]] = {
        k: [] for k in ("encode_batched", "prompt_batched", "encode_single", "prompt_single")
    }
    embeddings = predictor.encode(images)
    singles = [predictor.encode([im]) for im in images]
    for _ in range(args.repeats):
        times["encode_batched"].append(seconds(lambda: predictor.encode(images)))
        times["prompt_batched"].append(seconds(lambda: prompter(embeddings)))
        times["encode_single"].append(sum(seconds(lambda im=im: predictor.encode([im])) for im in images))
        times["prompt_single"].append(sum(seconds(lambda e=e: prompter(e)) for e in singles))
    per_image = {k: statistics.median(v) / args.images for k, v in times.items()}
    result = {
        "model": args.model,
        "images": args.images,
        "steps": args.steps,
        "repeats": args.repeats,
        "bf16_encoder": args.bf16_encoder,
        "threads": torch.get_num_threads(),
        "seconds_per_image": per_image,
        "prompt_over_encode_batched": per_image["prompt_batched"] / per_image["encode_batched"],
        "prompt_over_encode_single": per_image["prompt_single"] / per_image["encode_single"],
        "batched_speedup_of_prompting": per_image["prompt_single"] / per_image["prompt_batched"],
        "spread": {k: [min(v) / args.images, max(v) / args.images] for k, v in times.items()},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
