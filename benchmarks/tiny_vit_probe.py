"""Can tiny-clip's ViT learn the world's six shape classes at all within the CPU budget?

    .venv/bin/python benchmarks/tiny_vit_probe.py [--steps 1000] [--lr 5e-4] [--patch 16] [--augment]

A diagnostic for why tiny-clip does not reach its zero-shot bar: it takes the contrastive loss out of
the question. tiny-clip's vision tower (its open_clip config, optionally with another patch size) gets
a linear 6-way head and is trained with plain cross-entropy on single-object semantic scenes (dataset
seed 0), then its accuracy is measured on held-out ones (seed 1) every 100 steps. Chance is 1/6.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from maskfactory.models.clip import TINY_CLIP, build_clip, normalize_images, square_resize
from maskfactory.simulators.world import CLASSES
from maskfactory.tasks.zoo import training_samples


def scenes(n: int, seed: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n single-object semantic scenes: normalised images (n, 3, size, size) and class indices (n,)."""
    samples = list(training_samples(n, seed, tasks=("semantic",), n_objects=1))
    images = np.stack([square_resize(s.image, size) for s in samples])
    x = normalize_images(images, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)
    return x, torch.tensor([CLASSES.index(s.object_kinds[0]) for s in samples])


def augment(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Class-preserving augmentation of a batch: a quarter turn, a flip and a random crop (>= 62%)."""
    x = torch.rot90(x, int(rng.integers(4)), (2, 3))
    if rng.random() < 0.5:
        x = x.flip(-1)
    size = x.shape[-1]
    side = int(rng.integers(int(0.62 * size), size + 1))
    y0, x0 = rng.integers(0, size - side + 1, 2)
    return F.interpolate(x[:, :, y0 : y0 + side, x0 : x0 + side], (size, size), mode="bilinear")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--patch", type=int, default=16, help="patch size (tiny-clip uses 8)")
    parser.add_argument("--train", type=int, default=1200, help="training scenes")
    parser.add_argument("--augment", action="store_true")
    args = parser.parse_args()

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    config = copy.deepcopy(TINY_CLIP)
    config["vision_cfg"]["patch_size"] = args.patch
    size = config["vision_cfg"]["image_size"]
    x_train, y_train = scenes(args.train, 0, size)
    x_test, y_test = scenes(150, 1, size)
    tower = build_clip(config).visual.train()
    head = torch.nn.Linear(config["embed_dim"], len(CLASSES))
    optim = torch.optim.AdamW([*tower.parameters(), *head.parameters()], lr=args.lr, weight_decay=0.05)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        pick = torch.as_tensor(rng.choice(len(x_train), 32))
        x = augment(x_train[pick], rng) if args.augment else x_train[pick]
        loss = F.cross_entropy(head(tower(x)), y_train[pick])
        optim.zero_grad()
        loss.backward()
        optim.step()
        if step % 100 == 0:
            tower.eval()
            with torch.no_grad():
                accuracy = (head(tower(x_test)).argmax(1) == y_test).float().mean().item()
            tower.train()
            seconds = time.perf_counter() - start
            print(f"step {step} ({seconds:.0f} s): loss {loss.item():.3f}, held-out accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
