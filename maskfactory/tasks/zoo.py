"""The tiny model zoo: train tiny-sam and tiny-clip on the synthetic world, and evaluate them.

This is where the world (simulators) meets the training recipes and models: the recipes in
``maskfactory/models/zoo/`` take pools of samples, and the evaluation drives SAM with the simulated
RITM clicker. ``maskfactory zoo train`` / ``maskfactory zoo eval`` call these functions.

Zoo checkpoints are saved in float16: they ship inside the repository (20 MB at most for the whole
zoo) and load into float32 models, which costs nothing measurable in accuracy at these sizes.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam

from maskfactory.infra.checkpoints import save_checkpoint
from maskfactory.infra.settings import Settings, get_settings
from maskfactory.models import clip as clip_models
from maskfactory.models.clip import normalize_images, square_resize
from maskfactory.models.interactive import SamClickSegmenter, ZoomIn
from maskfactory.models.predictor import BatchedSamPredictor
from maskfactory.models.refine import GuidedRefinement
from maskfactory.models.registry import load_clip_model, load_sam_model
from maskfactory.models.sam import TINY_SAM, load_sam
from maskfactory.models.zoo import zoo_path
from maskfactory.models.zoo.common import half_precision
from maskfactory.models.zoo.train_clip import (
    CaptionedImage,
    TinyClipTraining,
    train_tiny_clip,
    zero_shot_accuracy,
)
from maskfactory.models.zoo.train_sam import ZOOM_LEG, TinySamTraining, TrainingSample, train_tiny_sam
from maskfactory.simulators import datasets
from maskfactory.simulators.clicker import evaluate_noc, summarize_noc
from maskfactory.simulators.world import CLASSES, TASKS, Sample, make_sample

ZOO_MODELS = ("tiny-sam", "tiny-clip")
# Training images each recipe generates up front (``zoo train --pool`` overrides them).
TINY_SAM_POOL = 2000
TINY_CLIP_POOL = 3600


def training_samples(
    n: int,
    seed: int,
    domain: str = "natural",
    tasks: tuple[str, ...] = TASKS,
    n_objects: int | None = None,
) -> Iterator[Sample]:
    """``n`` world samples cycling through ``tasks`` (by default all five, so every kind of instance is
    seen), each with ``n_objects`` objects (default: drawn from its seed), made one at a time so that a
    caller that keeps only part of each (a training pool) never holds them all.

    Item ``i`` uses the seed that item ``i`` of a ``world make --seed <seed>`` dataset uses, so a zoo
    model trained with seed ``s`` has seen dataset seed ``s``'s items and no other: evaluate it on
    datasets made with any other seed.
    """
    for i in range(n):
        yield make_sample(
            tasks[i % len(tasks)], domain, seed=seed * datasets.SEED_STRIDE + i, n_objects=n_objects
        )


# Region kinds get a sentence and the bare prompt AlignSAM's explicit branch sends to CLIP Surgery
# (the paper's Appendix A: "shadow", "defocus background", "glass").
REGION_CAPTIONS = {
    "shadow": ["a photo with shadows", "shadow"],
    "blur": ["a photo with a blurred background", "defocus background"],
    "glass": ["a photo with glass", "glass"],
}


def object_captions(kind: str, colour: str) -> list[str]:
    """Every caption of one world instance on its own: a class object's bare name (the semantic task's
    prompt), its name with and without its colour in a sentence, or a region kind's sentence and prompt."""
    if kind in CLASSES:
        return [kind, f"a photo of a {kind}", f"a photo of a {colour} {kind}", f"a {colour} {kind}"]
    return list(REGION_CAPTIONS[kind])


def clip_captions(sample: Sample) -> list[str]:
    """Every caption that truly describes a world image: its objects' classes and colours, and the
    kind of region (shadow, blur, glass) the image shows. Order of objects is not meaningful."""
    things = [(k, c) for k, c in zip(sample.object_kinds, sample.object_colors, strict=True) if k in CLASSES]
    captions: list[str] = []
    if len(things) == 1:
        captions += object_captions(*things[0])
    elif things:
        kinds = sorted({k for k, _ in things})
        captions += kinds + [f"a photo of a {k}" for k in kinds]  # each class present is a true caption
        captions += [f"a photo of a {c} {k}" for k, c in sorted(set(things))]
    for kind, words in REGION_CAPTIONS.items():
        if kind in sample.object_kinds:
            captions += words
    return captions or ["a photo"]


def captioned_image(sample: Sample, size: int) -> CaptionedImage:
    """A world sample as tiny-clip trains on it, at ``size`` px: the image's captions, and each
    instance as a region with its own captions."""
    regions = torch.from_numpy(sample.objects).float()[None]  # (1, K, H, W)
    regions = F.interpolate(regions, (size, size), mode="area")[0] >= 0.5
    return CaptionedImage(
        square_resize(sample.image, size),
        clip_captions(sample),
        regions.numpy(),
        [object_captions(k, c) for k, c in zip(sample.object_kinds, sample.object_colors, strict=True)],
    )


def clip_pool(n: int, seed: int, size: int) -> list[CaptionedImage]:
    """tiny-clip's training images: scenes of every task, plus as many single-object semantic scenes
    (the images zero-shot classification is measured on, and where a class caption is unambiguous)."""
    scenes = training_samples(n - n // 2, seed)
    singles = training_samples(n // 2, seed, tasks=("semantic",), n_objects=1)
    return [captioned_image(s, size) for s in itertools.chain(scenes, singles)]


def train_zoo_model(
    name: str,
    out: str | None = None,
    seed: int = 0,
    pool_size: int | None = None,
    steps: int | None = None,
    settings: Settings | None = None,
    log: Callable[[dict[str, Any]], None] | None = None,
    stop_after: int | None = None,
    zoom_leg: int | None = None,
    leg_corrections: int | None = None,
    leg_ema_decay: float | None = None,
) -> tuple[str, str, dict[str, Any]]:
    """Train a zoo model from scratch on the world; returns (checkpoint URI, version, summary).

    ``stop_after``: end after this many steps with the recipe's schedule unchanged and no time limit,
    to replay a run (such as a shipped one) on a machine of another speed; the zoom leg then runs whole.
    ``zoom_leg`` (tiny-sam only): then go on for this many steps with :data:`ZOOM_LEG`'s zoom crops
    (None: ``ZOOM_LEG.steps``, the shipped run; 0: none, as run 4); the summary's ``zoom_leg`` records
    that leg. ``leg_corrections`` and ``leg_ema_decay`` replace the leg's ``correction_iters`` and
    ``ema_decay`` (None: :data:`ZOOM_LEG`'s, the shipped run's; a decay of 0 turns the averaging off, so
    2 and 0 give run 5's leg).
    """
    if name not in ZOO_MODELS:
        raise ValueError(f"unknown zoo model {name!r}; known: {', '.join(ZOO_MODELS)}")
    if zoom_leg and name != "tiny-sam":
        raise ValueError("a zoom leg trains tiny-sam only")
    if zoom_leg is None:
        zoom_leg = ZOOM_LEG.steps if name == "tiny-sam" else 0
    changes = {"correction_iters": leg_corrections, "ema_decay": leg_ema_decay}
    changes = {k: v for k, v in changes.items() if v is not None}
    if changes.get("ema_decay") == 0:
        changes["ema_decay"] = None  # 0: no averaging, the last step's weights (run 5's leg)
    if changes and not zoom_leg:
        raise ValueError("the zoom leg's settings need a zoom leg (tiny-sam, --zoom-leg above 0)")
    base_leg = replace(ZOOM_LEG, **changes)  # made now, so bad settings fail before the recipe's run
    out = out or str(zoo_path(f"{name}.pt"))
    if name == "tiny-sam":
        training = TinySamTraining(seed=seed, stop_after=stop_after, **({"steps": steps} if steps else {}))
        samples = training_samples(pool_size or TINY_SAM_POOL, seed)
        pool = [TrainingSample(s.image, s.objects) for s in samples]
        model, summary = train_tiny_sam(TINY_SAM, pool, training, log=log)
        if zoom_leg:
            # One budget for the whole command: the leg gets what the first schedule left of the limit.
            # It draws with the run's seed, as the probe's leg did (its crops make the draws differ).
            left = (
                None
                if stop_after or training.time_limit_s is None
                else training.time_limit_s - summary["train_seconds"]
            )
            leg = replace(base_leg, steps=zoom_leg, seed=seed, time_limit_s=left)
            leg_log = None if log is None else lambda row: log({"leg": "zoom", **row})
            model, summary["zoom_leg"] = train_tiny_sam(
                TINY_SAM, pool, leg, log=leg_log, start=model.state_dict()
            )
        kind, config = "sam", TINY_SAM.to_dict()
    else:
        training = TinyClipTraining(seed=seed, stop_after=stop_after, **({"steps": steps} if steps else {}))
        pool = clip_pool(pool_size or TINY_CLIP_POOL, seed, clip_models.TINY_CLIP["vision_cfg"]["image_size"])
        model, summary = train_tiny_clip(clip_models.TINY_CLIP, pool, training, log=log)
        kind, config = "clip", clip_models.TINY_CLIP
    summary = {**summary, "pool_size": len(pool), "domain": "natural", "tasks": list(TASKS)}
    half = half_precision(model)
    version = save_checkpoint(out, kind, config, half, extra={"training": summary}, settings=settings)
    return out, version, summary


def tiny_sam_or_candidate(checkpoint: str | None, settings: Settings | None = None) -> tuple[Sam, str]:
    """The zoo's tiny-sam (``checkpoint`` None), or a maskfactory SAM checkpoint built from its own
    header, so a candidate of another width or stem (a recipe under study) loads too; (model, version)."""
    if checkpoint is None:
        return load_sam_model("tiny-sam", None, settings)
    s = settings or get_settings()
    return load_sam(checkpoint, None, s, device=s.torch_device())


def evaluate_tiny_sam(
    data: str,
    checkpoint: str | None = None,
    max_clicks: int = 20,
    limit: int | None = None,
    settings: Settings | None = None,
    progress: Callable[[int], None] | None = None,
    zoom_in: ZoomIn | None = None,
    refine: GuidedRefinement | None = None,
) -> dict[str, Any]:
    """One-click mIoU, NoC@85 and NoC@90 over every instance mask of a world dataset (per task too).

    ``checkpoint``: a maskfactory SAM checkpoint to measure instead of the zoo's tiny-sam
    (:func:`tiny_sam_or_candidate`), before it replaces the zoo's. ``zoom_in``: answer clicks in a crop
    around the object (:class:`ZoomIn`, as RITM evaluates); None: the whole image every click, as SAM does.
    ``refine``: each answer refined along the image's edges (:class:`GuidedRefinement`); None: SAM's own.
    """
    sam, version = tiny_sam_or_candidate(checkpoint, settings)
    segmenter = SamClickSegmenter(BatchedSamPredictor(sam), zoom_in, refine)
    by_task: dict[str, list] = defaultdict(list)
    for item in datasets.iter_items(data, settings, limit):
        for mask in item.instances:
            by_task[str(item.row["task"])].append(
                evaluate_noc(segmenter, item.image, mask, max_clicks=max_clicks)
            )
        if progress:
            progress(1)
    every = [r for rs in by_task.values() for r in rs]
    if not every:
        raise ValueError(f"{data}: no instance masks to evaluate")
    return {
        "model": "tiny-sam",
        "version": version,
        "data": data,
        "max_clicks": max_clicks,
        "zoom_in": None if zoom_in is None else asdict(zoom_in),
        "refine": None if refine is None else asdict(refine),
        **summarize_noc(every),
        "per_task": {task: summarize_noc(rs) for task, rs in sorted(by_task.items())},
    }


def evaluate_tiny_clip(
    data: str, checkpoint: str | None = None, limit: int | None = None, settings: Settings | None = None
) -> dict[str, Any]:
    """Zero-shot top-1 accuracy over the images of a world dataset that hold exactly one class object."""
    loaded = load_clip_model("tiny-clip", checkpoint, settings)
    images, labels = [], []
    for item in datasets.iter_items(data, settings, limit):
        kinds = [k for k in item.row["object_kinds"] if k in CLASSES]  # type: ignore[union-attr]
        if len(kinds) == 1:
            images.append(square_resize(item.image, loaded.image_size))
            labels.append(CLASSES.index(kinds[0]))
    if not images:
        raise ValueError(
            f"{data}: no single-object images (make them with `world make --task semantic --objects 1`)"
        )
    x = normalize_images(np.stack(images), loaded.mean, loaded.std)
    accuracy = zero_shot_accuracy(loaded.model, loaded.tokenizer, x, labels, CLASSES)
    # A reading of how steady the features are, not the figure the zoo is held to: "top1" is.
    averaged = zero_shot_accuracy(loaded.model, loaded.tokenizer, x, labels, CLASSES, views=8)
    return {
        "model": "tiny-clip",
        "version": loaded.version,
        "data": data,
        "images": len(images),
        "top1": accuracy,
        "top1_8_views": averaged,  # the feature averaged over quarter turns and mirror images
    }
