"""What the guided filter (models/refine.py) costs per answer, beside tiny-sam's own passes.

    .venv/bin/python benchmarks/refine_cost.py [--sizes 256 512 1024] [--repeats 10]

For each image side it times ``GuidedRefinement().refine`` on a world image resized to that side (the
median of ``--repeats`` calls after a warm-up), and, at tiny-sam's 256 px, one click's decoder pass
with its upscaling and one encoder pass, so the filter's cost reads against what a click already
costs; the filter is timed with its smoothed guide (the default) and with the raw image as guide. The
filter's cost grows with the image's pixels, not its radius (summed-area tables); the model's
passes do not grow with the image, which SAM resizes to its input.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from PIL import Image

from maskfactory.models.predictor import BatchedSamPredictor
from maskfactory.models.refine import GuidedRefinement
from maskfactory.models.registry import load_sam_model
from maskfactory.simulators.world import make_sample


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    sample = make_sample("saliency", "natural", seed=7_200_001)
    sam, _ = load_sam_model("tiny-sam")
    predictor = BatchedSamPredictor(sam)
    refine = GuidedRefinement()
    raw = GuidedRefinement(guide_sigma=0.0)  # without the guide's smoothing, for its share of the cost

    with torch.inference_mode():
        embeddings = predictor.encode([sample.image])
        coords, labels = torch.tensor([[[128.0, 128.0]]]), torch.tensor([[1.0]])

        def click() -> torch.Tensor:
            pred = predictor.decode(embeddings, [0], coords, labels, multimask_output=False)
            return predictor.upscale(pred, embeddings)[0][0]

        logits = click()
        print(f"torch threads: {torch.get_num_threads()}")
        print("| what | image side (px) | median ms |")
        print("|---|---|---|")
        encode_ms = median_ms(partial(predictor.encode, [sample.image]), args.repeats)
        print(f"| tiny-sam encoder pass | 256 | {encode_ms:.1f} |")
        print(f"| tiny-sam click (decoder + upscale) | 256 | {median_ms(click, args.repeats):.1f} |")
        for side in args.sizes:
            image = np.asarray(Image.fromarray(sample.image).resize((side, side), Image.BILINEAR))
            big = torch.nn.functional.interpolate(logits[None, None], (side, side), mode="bilinear")[0, 0]
            radius = round(refine.radius * side / 256)
            for name, r in (("smoothed guide", refine), ("raw guide", raw)):
                ms = median_ms(partial(r.refine, image, big, side / 256), args.repeats)
                print(f"| guided filter (radius {radius} px, {name}) | {side} | {ms:.1f} |")


if __name__ == "__main__":
    main()
