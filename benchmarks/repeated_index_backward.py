"""Does the backward of indexing with repeated indices give the same bits every time?

tiny-sam's training picks each mask's image features with ``features[image_index]``, several masks per
image. On CPU with two threads, torch computes that backward with atomic float adds unless its
deterministic algorithms are on; where both threads add into one image's row, the order of the adds
follows the thread scheduling. This script repeats that backward on a training step's shapes and counts
the distinct gradients (as bytes), with the setting off and on, optionally beside busy loops that compete
for the cores as other work on a shared machine does.

    python benchmarks/repeated_index_backward.py --busy 1
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys

import torch


def distinct_gradients(repeats: int, deterministic: bool) -> int:
    """How many different gradients ``repeats`` identical backward passes give."""
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(8, 256, 16, 16, generator=gen, requires_grad=True)  # (B, C, g, g), one step
    # 32 masks over 8 images, unevenly, as `train_sam._batch` makes them: two threads split the 32
    # rows in the middle, inside image 3's run, so both add into that image's gradient.
    counts = torch.tensor([3, 4, 5, 7, 3, 3, 3, 4])
    image_index = torch.arange(8).repeat_interleave(counts)
    weight = torch.randn(len(image_index), 256, 16, 16, generator=gen)
    seen = set()
    torch.use_deterministic_algorithms(deterministic)
    try:
        for _ in range(repeats):
            features.grad = None
            (features[image_index] * weight).sum().backward()
            seen.add(hashlib.blake2b(features.grad.numpy().tobytes(), digest_size=8).digest())
    finally:
        torch.use_deterministic_algorithms(False)
    return len(seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--busy", type=int, default=0, help="busy-loop processes running beside it")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        for deterministic in (False, True):
            n = distinct_gradients(args.repeats, deterministic)
            print(
                f"threads={args.threads} busy={args.busy} deterministic={deterministic}: "
                f"{n} distinct gradients in {args.repeats} backward passes"
            )
    finally:
        for p in busy:
            p.kill()


if __name__ == "__main__":
    main()
