"""Train and evaluate AlignSAM agents on labelled datasets (``maskfactory policy``, ``train-prompt-policy``).

Where datasets meet the agent: read a task's items, encode them once with SAM, lay ground truth (and
CLIP Surgery's text maps, for the explicit branch) onto SAM's input frame, then train
(``models/alignsam/trainer.py``) or prompt (``models/alignsam/prompter.py``) and score with the
paper's metrics (``models/metrics.py``).

The few-shot split is seeded: a training seed picks ``shots`` items of the task for training and the
next ``VALIDATION`` items for the validation figures the checkpoint carries. Evaluate on a dataset
made with another seed (``world make --seed``) for held-out figures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from maskfactory.infra.checkpoints import load_checkpoint, save_checkpoint
from maskfactory.infra.settings import Settings, get_settings
from maskfactory.models import confidence, metrics
from maskfactory.models.alignsam.agent import KIND, AlignSamConfig, load_agent, save_agent
from maskfactory.models.alignsam.prompter import ABLATIONS, Prompter, PromptResult
from maskfactory.models.alignsam.trainer import FewShotSet, train_agent
from maskfactory.models.clip_surgery import ClipSurgery
from maskfactory.models.predictor import BatchedSamPredictor, ImageEmbeddings, Prediction
from maskfactory.models.refine import GuidedRefinement
from maskfactory.models.registry import load_clip_model, load_sam_model
from maskfactory.models.zoo import zoo_path
from maskfactory.simulators import datasets
from maskfactory.simulators.world import BRANCH, TASKS

VALIDATION = 20  # items held out of the few-shot set for the checkpoint's validation figures
ENCODE_BATCH = 16  # images per SAM encoder call


def zoo_policy_path(task: str) -> str:
    """The bundled agent of a synthetic task (trained on tiny-sam with 50 shots)."""
    if task not in TASKS:
        raise ValueError(
            f"the zoo has no agent for task {task!r} (it has {', '.join(TASKS)}); pass a policy URI"
        )
    return str(zoo_path(f"alignsam-{task}.pt"))


def task_items(data: str, task: str, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Manifest rows of ``task`` in dataset ``data``, in manifest order."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    rows = [r for r in datasets.read_manifest(data, settings).to_pylist() if r["task"] == task]
    if not rows:
        raise ValueError(f"{data}: no items of task {task!r}")
    return rows


class Encoded:
    """Items encoded for the agent: SAM embeddings, ground truth and (explicit) text maps."""

    def __init__(
        self,
        rows: Sequence[dict[str, Any]],
        predictor: BatchedSamPredictor,
        surgery: ClipSurgery | None,
        settings: Settings | None = None,
    ) -> None:
        items = [datasets.read_item(r, settings) for r in rows]
        self.items = items
        parts = [
            predictor.encode([it.image for it in items[i : i + ENCODE_BATCH]])
            for i in range(0, len(items), ENCODE_BATCH)
        ]
        self.embeddings = ImageEmbeddings(
            torch.cat([p.features for p in parts]),
            [s for p in parts for s in p.input_sizes],
            [s for p in parts for s in p.original_sizes],
        )
        size = predictor.image_size
        targets = torch.zeros(len(items), size, size, dtype=torch.bool)
        for k, (it, (h, w)) in enumerate(zip(items, self.embeddings.input_sizes, strict=True)):
            gt = torch.from_numpy(it.target)[None, None].float()
            targets[k, :h, :w] = F.interpolate(gt, (h, w), mode="nearest")[0, 0] > 0.5
        maps = None
        if surgery is not None:
            out = 4 * self.embeddings.features.shape[-1]  # SAM's mask resolution
            maps = surgery.sam_frame_maps(
                [it.image for it in items],
                [str(r["prompt"]) for r in rows],
                self.embeddings.input_sizes,
                size,
                out,
            )
        self.set = FewShotSet(self.embeddings.features, list(self.embeddings.input_sizes), targets, maps)


def surgery_for(config: AlignSamConfig, settings: Settings | None) -> ClipSurgery | None:
    """CLIP Surgery over the agent's CLIP for an explicit-branch agent; None for an implicit one."""
    if not config.explicit:
        return None
    return ClipSurgery(load_clip_model(config.clip_model, None, settings))


def split(
    rows: list[dict[str, Any]], shots: int, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A seeded few-shot split: ``shots`` training rows and up to ``VALIDATION`` validation rows."""
    if shots < 1 or shots > len(rows):
        raise ValueError(f"shots must be in 1..{len(rows)} (the task's items), got {shots}")
    order = np.random.default_rng(seed).permutation(len(rows))
    return [rows[i] for i in order[:shots]], [rows[i] for i in order[shots : shots + VALIDATION]]


def train_policy(
    task: str,
    data: str,
    out: str,
    shots: int = 50,
    seed: int = 0,
    branch: str | None = None,
    settings: Settings | None = None,
    log: Callable[[dict[str, float]], None] | None = None,
    **overrides: Any,
) -> tuple[str, str, dict[str, Any]]:
    """Train an agent for ``task`` on ``shots`` items of ``data`` and save it to ``out``.

    ``branch``: "implicit" or "explicit" SRM (default: the task's, ``world.BRANCH``); the explicit
    branch uses the settings' CLIP unless ``clip_model`` is given. ``overrides`` set other
    ``AlignSamConfig`` fields (``episodes``, ``grid``, ``clip_model``, ...). Returns (uri, version,
    summary with the validation figures).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    if branch not in (None, "implicit", "explicit"):
        raise ValueError(f"branch must be 'implicit' or 'explicit', got {branch!r}")
    config = AlignSamConfig(
        task=task, explicit=(branch or BRANCH[task]) == "explicit", seed=seed, **overrides
    )
    if config.explicit and config.clip_model is None:
        config = replace(config, clip_model=(settings or get_settings()).clip_model)
    sam, sam_version = load_sam_model(config.sam_model, None, settings)
    predictor = BatchedSamPredictor(sam)
    surgery = surgery_for(config, settings)
    train_rows, validation_rows = split(task_items(data, task, settings), shots, seed)
    train = Encoded(train_rows, predictor, surgery, settings)
    agent, training = train_agent(sam, train.set, config, log)
    summary: dict[str, Any] = {
        "task": task,
        "data": data,
        "shots": shots,
        "training": training,
        "validation": {},
        "sam_version": sam_version,
        "clip_version": surgery.clip.version if surgery else None,
    }
    if validation_rows:
        scored = score(Prompter(predictor, agent), Encoded(validation_rows, predictor, surgery, settings))
        summary["validation"] = scored.figures
        # The routing confidence is fitted on the same held-back items (issue 5: "fitted on a
        # validation split when the policy is trained, stored with it").
        summary["confidence"] = confidence.ConfidenceModel.fit(scored.signals, scored.ious).to_dict()
    version = save_agent(agent, out, extra=summary, settings=settings)
    return out, version, summary


@dataclass
class Scored:
    """What ``score`` measured: the mean figures, and per item the confidence signals and true IoU."""

    figures: dict[str, Any]
    signals: np.ndarray  # (N, 4) in confidence.FEATURES order
    ious: np.ndarray  # (N,)


def refined_masks(
    predictor: BatchedSamPredictor,
    result: PromptResult,
    embeddings: ImageEmbeddings,
    images: Sequence[np.ndarray],
    refine: GuidedRefinement,
) -> list[np.ndarray]:
    """The prompter's final masks, each refined by the guided filter on its image: B x (H, W) bool."""
    prediction = Prediction(result.low_res_logits, result.iou_prediction[:, None], torch.arange(len(images)))
    logits = predictor.upscale(prediction, embeddings)
    # Each image was answered whole, and SAM resized its longest side to the input size.
    return [
        refine.mask(image, answer[0], max(image.shape[:2]) / predictor.image_size)
        for image, answer in zip(images, logits, strict=True)
    ]


def score(
    prompter: Prompter,
    encoded: Encoded,
    ablation: str = "full",
    steps: int | None = None,
    seed: int = 0,
    refine: GuidedRefinement | None = None,
) -> Scored:
    """Prompt every encoded item (in encoder-sized batches) and average the paper's metrics over items.

    ``refine``: score the final masks after the guided filter (``models/refine.py``); the confidence
    signals stay those of SAM's own answer."""
    per_image: dict[str, list[float]] = {name: [] for name in metrics.SCORES}
    rates, agreement, signals = [], [], []
    for start in range(0, len(encoded.items), ENCODE_BATCH):
        index = torch.arange(start, min(start + ENCODE_BATCH, len(encoded.items)))
        e = encoded.embeddings
        batch = ImageEmbeddings(
            e.features[index], [e.input_sizes[i] for i in index], [e.original_sizes[i] for i in index]
        )
        maps = None if encoded.set.text_maps is None else encoded.set.text_maps[index]
        result = prompter(batch, maps, ablation=ablation, steps=steps, seed=seed + start)
        signals.append(confidence.signals(result, batch.input_sizes, prompter.predictor.image_size))
        masks = result.masks
        if refine is not None:
            images = [encoded.items[i].image for i in index.tolist()]
            masks = refined_masks(prompter.predictor, result, batch, images, refine)
        for k, i in enumerate(index.tolist()):
            gt = encoded.items[i].target
            for name, fn in metrics.SCORES.items():
                per_image[name].append(fn(masks[k], gt))
            taken = result.agent_points.shape[1]
            if taken:
                points = result.agent_points[k].cpu().numpy()
                rates.append(metrics.foreground_rate(points, gt))
                labels = result.labels[k, -taken:].cpu().numpy()
                agreement.append(metrics.label_accuracy(points, labels, gt))
    figures: dict[str, Any] = {name: float(np.mean(v)) for name, v in per_image.items()}
    figures["foreground_rate"] = float(np.mean(rates)) if rates else None
    figures["label_accuracy"] = float(np.mean(agreement)) if agreement else None
    figures["images"] = len(encoded.items)
    return Scored(figures, np.concatenate(signals), np.asarray(per_image["mIoU"]))


def evaluate_policy(
    task: str,
    data: str,
    policy: str | None = None,
    ablation: str = "full",
    shots: int | None = None,
    steps: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    settings: Settings | None = None,
    refine: GuidedRefinement | None = None,
) -> dict[str, Any]:
    """The paper's metrics for an agent (default: the zoo's for ``task``) on ``task``'s items of ``data``.

    ``shots``, when given, must match the number of shots the agent was trained with (so tables do
    not mix agents up). ``seed`` drives the random actions of the ``no-rl`` ablation. ``refine``: the
    final masks are scored after the guided filter (:func:`score`).
    """
    if ablation not in ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r}; known: {', '.join(ABLATIONS)}")
    uri = policy or zoo_policy_path(task)
    agent, version, extra = load_agent(uri, settings)
    if agent.config.task != task:
        raise ValueError(f"{uri} was trained for task {agent.config.task!r}, not {task!r}")
    if shots is not None and extra.get("shots") != shots:
        raise ValueError(f"{uri} was trained with {extra.get('shots')} shots, not {shots}")
    sam, _ = load_sam_model(agent.config.sam_model, None, settings)
    predictor = BatchedSamPredictor(sam)
    rows = task_items(data, task, settings)[:limit]
    encoded = Encoded(rows, predictor, surgery_for(agent.config, settings), settings)
    prompter = Prompter(predictor, agent)
    return {
        "task": task,
        "data": data,
        "policy": uri,
        "policy_version": version,
        "shots": extra.get("shots"),
        "ablation": ablation,
        "steps": 0 if ablation == "single-step" else (prompter.steps if steps is None else steps),
        "refine": None if refine is None else asdict(refine),
        **score(prompter, encoded, ablation, steps, seed, refine).figures,
    }


def calibrate_policy(
    task: str,
    data: str,
    policy: str,
    limit: int | None = None,
    out: str | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Refit an agent's routing confidence on ``task``'s items of ``data`` and save it (to ``out``,
    default: in place). Use data the agent was not trained on.

    The checkpoint's version is unchanged: it names the weights, and the masks they produce do not
    depend on the confidence model. Returns the fitted model with its fit-set figures.
    """
    agent, version, extra = load_agent(policy, settings)
    if agent.config.task != task:
        raise ValueError(f"{policy} was trained for task {agent.config.task!r}, not {task!r}")
    sam, _ = load_sam_model(agent.config.sam_model, None, settings)
    predictor = BatchedSamPredictor(sam)
    rows = task_items(data, task, settings)[:limit]
    scored = score(
        Prompter(predictor, agent), Encoded(rows, predictor, surgery_for(agent.config, settings), settings)
    )
    model = confidence.ConfidenceModel.fit(scored.signals, scored.ious)
    probabilities = model.predict(scored.signals)
    good = scored.ious >= confidence.GOOD_IOU
    ckpt = load_checkpoint(policy, settings)
    fitted = model.to_dict()
    saved = save_checkpoint(
        out or policy,
        KIND,
        ckpt.config,
        ckpt.state_dict,
        extra={**extra, "confidence": fitted, "confidence_data": _described(data, settings)},
        settings=settings,
    )
    assert saved == version  # the weights and config were copied unchanged
    return {
        "task": task,
        "policy": out or policy,
        "policy_version": version,
        "items": len(rows),
        "good_share": float(good.mean()),
        "calibration_error": metrics.expected_calibration_error(probabilities, good),
        "confidence": fitted,
        "data": data,
    }


def _described(data: str, settings: Settings | None) -> str:
    """``data``, and how it was made where its manifest says (a checkpoint outlives temporary folders)."""
    made_by = datasets.read_made_by(data, settings)
    return data if made_by is None else f"{data} (made by: {made_by})"
