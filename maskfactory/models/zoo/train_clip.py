"""Train tiny-clip contrastively (Radford et al. 2021) on captioned images, and measure zero-shot accuracy.

The loss is CLIP's symmetric cross-entropy over the batch's image-text similarities, with one change:
a small world has few distinct captions, so two images in a batch often share one ("a red star"). CLIP
would treat the other as a negative and push equal things apart; here every pair whose captions are
identical is a positive, and the target of each row is spread evenly over its positives.

Like the tiny-sam recipe, this module takes a pool of samples and knows nothing about the world.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.tokenizer import SimpleTokenizer

from maskfactory.models.clip import build_clip, tokenizer_for
from maskfactory.models.zoo.common import mean_of, warmup_cosine


@dataclass
class TinyClipTraining:
    """Hyper-parameters of one tiny-clip training run."""

    # Sized for the zoo's budget (under 45 minutes on 2 cores): one step of batch 64 takes about 2 s there.
    steps: int = 600
    batch_size: int = 64
    lr: float = 1e-3  # AdamW; small models and short schedules tolerate a higher rate than CLIP's 5e-4
    weight_decay: float = 0.1
    warmup_steps: int = 100
    seed: int = 0
    time_limit_s: float | None = 30 * 60  # a safety net; the summary records the steps that ran


@dataclass
class CaptionedImage:
    image: np.ndarray  # (S, S, 3) uint8 at the model's input size
    captions: list[str]  # every caption that truly describes the image; one is drawn per use


def normalize_images(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(N, S, S, 3) uint8 -> (N, 3, S, S) float normalised as CLIP expects."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def train_tiny_clip(
    config: dict[str, Any],
    pool: Sequence[CaptionedImage],
    training: TinyClipTraining,
    log: Callable[[dict[str, float]], None] | None = None,
) -> tuple[open_clip.CLIP, dict[str, Any]]:
    """Train a fresh CLIP of ``config`` on ``pool``; returns the model (eval mode) and a summary."""
    torch.manual_seed(training.seed)
    rng = np.random.default_rng(training.seed)
    model = build_clip(config).train()
    tokenizer = tokenizer_for(config)
    images = normalize_images(
        np.stack([p.image for p in pool]), open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    )
    optim = torch.optim.AdamW(model.parameters(), lr=training.lr, weight_decay=training.weight_decay)

    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda step: warmup_cosine(step, training.warmup_steps, training.steps, floor=0.0)
    )
    start, steps_run, recent = time.perf_counter(), 0, []
    for step in range(training.steps):
        if training.time_limit_s is not None and time.perf_counter() - start > training.time_limit_s:
            break
        steps_run = step + 1
        picks = rng.choice(len(pool), size=training.batch_size, replace=len(pool) < training.batch_size)
        captions = [pool[i].captions[rng.integers(len(pool[i].captions))] for i in picks]
        x = images[torch.as_tensor(picks)]
        x = torch.where(torch.as_tensor(rng.random(len(picks)) < 0.5)[:, None, None, None], x.flip(-1), x)
        loss, acc = _contrastive_loss(model, x, captions, tokenizer)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        sched.step()
        with torch.no_grad():  # CLIP clamps the learned temperature at 100
            model.logit_scale.clamp_(0, math.log(100))
        recent.append({"loss": loss.item(), "batch_acc": acc})
        if log and (step + 1) % 50 == 0:
            log({"step": step + 1, "seconds": time.perf_counter() - start, **mean_of(recent)})
            recent = []
    # steps_run can be below training.steps when the time limit stops the run.
    summary = {**asdict(training), "steps_run": steps_run, "train_seconds": time.perf_counter() - start}
    return model.eval(), summary


def _contrastive_loss(
    model: open_clip.CLIP, x: torch.Tensor, captions: list[str], tokenizer: SimpleTokenizer
) -> tuple[torch.Tensor, float]:
    img = F.normalize(model.encode_image(x), dim=-1)
    txt = F.normalize(model.encode_text(tokenizer(captions)), dim=-1)
    logits = model.logit_scale.exp() * img @ txt.T  # (B, B)
    codes = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    ids = torch.tensor([codes[c] for c in captions])
    positives = (ids[:, None] == ids[None, :]).float()
    target = positives / positives.sum(1, keepdim=True)  # symmetric: the same for rows and columns
    loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    acc = (positives[torch.arange(len(ids)), logits.argmax(1)] > 0).float().mean().item()
    return loss, acc


@torch.no_grad()
def zero_shot_accuracy(
    model: open_clip.CLIP,
    tokenizer: SimpleTokenizer,
    images: torch.Tensor,
    labels: Sequence[int],
    classnames: Sequence[str],
    template: str = "a photo of a {}",
) -> float:
    """Top-1 accuracy of classifying normalised images (N, 3, S, S) by their nearest class prompt."""
    txt = F.normalize(model.encode_text(tokenizer([template.format(c) for c in classnames])), dim=-1)
    img = F.normalize(model.encode_image(images), dim=-1)
    pred = (img @ txt.T).argmax(1)
    return (pred == torch.as_tensor(labels)).float().mean().item()
