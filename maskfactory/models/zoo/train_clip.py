"""Train tiny-clip contrastively (Radford et al. 2021) on captioned images, and measure zero-shot accuracy.

The loss is CLIP's symmetric cross-entropy between image and caption embeddings, with one change we
chose for a small world. CLIP contrasts each image with the one caption drawn for it and treats every
other caption in the batch as a negative. Here the world has about a hundred distinct captions and
an image has several true ones ("a photo of a star", "a red star", "a photo with shadows"), so most
in-batch "negatives" would be true. Instead each step contrasts the batch's images with the whole
caption vocabulary (every distinct caption of the pool, encoded afresh each step): an image's target is
spread evenly over all its true captions, and a caption's target over the batch images it truly
describes.

This recipe has not yet produced a tiny-clip that names shapes: in the CPU budget the tiny ViT learns
colours and region kinds but not the six classes, even when trained as a plain supervised classifier
(benchmarks/tiny_vit_probe.py; figures in benchmarks/RESULTS.md).

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

from maskfactory.models.clip import build_clip, normalize_images, tokenizer_for
from maskfactory.models.zoo.common import mean_of, warmup_cosine


@dataclass
class TinyClipTraining:
    """Hyper-parameters of one tiny-clip training run."""

    # Sized for the zoo's budget (under 45 minutes on 2 cores): one step of batch 32 takes about 0.7 s there.
    # The vocabulary loss needs no large batch for negatives, so small batches buy more steps.
    steps: int = 1800
    batch_size: int = 32
    lr: float = 1e-3  # AdamW; small models and short schedules tolerate a higher rate than CLIP's 5e-4
    weight_decay: float = 0.1
    warmup_steps: int = 100
    seed: int = 0
    time_limit_s: float | None = 30 * 60  # a safety net; the summary records the steps that ran


@dataclass
class CaptionedImage:
    image: np.ndarray  # (S, S, 3) uint8 at the model's input size
    captions: list[str]  # every caption that truly describes the image


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
    vocabulary = sorted({c for p in pool for c in p.captions})
    tokens = tokenizer(vocabulary)
    index = {c: i for i, c in enumerate(vocabulary)}
    truth = torch.zeros(len(pool), len(vocabulary))  # (N, V): 1 where a caption describes an image
    for row, p in enumerate(pool):
        truth[row, [index[c] for c in p.captions]] = 1.0
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
        x = images[torch.as_tensor(picks)]
        x = torch.where(torch.as_tensor(rng.random(len(picks)) < 0.5)[:, None, None, None], x.flip(-1), x)
        loss, acc = _contrastive_loss(model, x, tokens, truth[torch.as_tensor(picks)])
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
    model: open_clip.CLIP, x: torch.Tensor, tokens: torch.Tensor, truth: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """Images x (B, 3, S, S) against the caption vocabulary's tokens (V, L); truth (B, V) in {0, 1}.

    Returns the loss and the share of images whose best-matching caption is a true one.
    """
    img = F.normalize(model.encode_image(x), dim=-1)
    txt = F.normalize(model.encode_text(tokens), dim=-1)
    logits = model.logit_scale.exp() * img @ txt.T  # (B, V)
    image_loss = F.cross_entropy(logits, truth / truth.sum(1, keepdim=True))
    described = truth.sum(0) > 0  # captions true of some image in the batch
    per_caption = truth[:, described].T
    caption_loss = F.cross_entropy(logits[:, described].T, per_caption / per_caption.sum(1, keepdim=True))
    acc = truth[torch.arange(len(x)), logits.argmax(1)].mean().item()
    return 0.5 * (image_loss + caption_loss), acc


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
