"""Does the backward of indexing with repeated indices give the same bits every time?

On CPU with two threads, torch computes that backward (an accumulating ``index_put``) with atomic float
adds unless its deterministic algorithms are on; where both threads add into one row, the order of the
adds follows the thread scheduling. The zoo's recipes make two kinds of it:

- tiny-sam: ``features[image_index]`` gives each mask its image's features, several masks per image, so
  the repeated indices are sorted and the threads share at most the row where their halves meet;
- tiny-clip: some of its index ops pick rows in no order, so the threads share rows throughout.

This script repeats each backward on shapes like a training step's and counts the distinct gradients (as
bytes), with the setting off and on, optionally beside busy loops that compete for the cores as other work
on a shared machine does.

    python benchmarks/repeated_index_backward.py --busy 1
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys

import torch


def index_cases() -> dict[str, tuple[tuple[int, ...], torch.Tensor]]:
    """Per case: the shape of the indexed tensor and the (repeated) rows picked from it."""
    gen = torch.Generator().manual_seed(0)
    # 29 masks over 8 images, at most 4 each, as `train_sam._batch` makes them when some images have
    # fewer instances: two threads split the 29 rows in the middle, inside image 4's rows (13-16).
    sorted_rows = torch.arange(8).repeat_interleave(torch.tensor([4, 3, 4, 2, 4, 4, 4, 4]))
    return {
        "tiny-sam (sorted)": ((8, 256, 16, 16), sorted_rows),
        "tiny-clip (unsorted)": ((79, 55), torch.randint(0, 79, (3212,), generator=gen)),
    }


def distinct_gradients(shape: tuple[int, ...], rows: torch.Tensor, repeats: int, deterministic: bool) -> int:
    """How many different gradients of ``x[rows]`` (x of ``shape``) ``repeats`` identical passes give."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen, requires_grad=True)
    weight = torch.randn(len(rows), *shape[1:], generator=gen)
    seen = set()
    torch.use_deterministic_algorithms(deterministic)
    try:
        for _ in range(repeats):
            x.grad = None
            (x[rows] * weight).sum().backward()
            seen.add(hashlib.blake2b(x.grad.numpy().tobytes(), digest_size=8).digest())
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
        for case, (shape, rows) in index_cases().items():
            for deterministic in (False, True):
                n = distinct_gradients(shape, rows, args.repeats, deterministic)
                print(
                    f"{case}, threads={args.threads} busy={args.busy} deterministic={deterministic}: "
                    f"{n} distinct gradients in {args.repeats} backward passes",
                    flush=True,
                )
    finally:
        for p in busy:
            p.kill()


if __name__ == "__main__":
    main()
