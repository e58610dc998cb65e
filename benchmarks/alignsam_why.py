"""Why full AlignSAM does or does not beat its ablations: the shipped agents with their points relabelled.

A diagnosis, not the method: it hands ground truth to the labeller on purpose, which the Prompter never
does. On each task's held-out items (dataset seed 1, the same 50 items as ``alignsam_tables.py``), for
the zoo's agent:

1. **Start points.** SAM's mIoU after the first prompts alone, for the SRM's highest and lowest cells
   (what the Prompter uses), the SRM's highest cell alone, the policy's first action as a positive
   point (what ``no-srm`` starts from) and the ground truth's own pair (the cells most and least
   covered by the target). With it: how often the SRM's highest cell is on the target and its lowest
   off it.
2. **Labels.** The policy's T steps from the SRM's start pair, with each point labelled by the SRM (the
   Prompter), by the ground truth (a perfect SRM) or always negative; mIoU after 0, 1, 5 and T steps,
   and how often the labels are right. If ground-truth labels lift the mask little, the SRM is not what
   holds the task back.

    .venv/bin/python benchmarks/alignsam_why.py --out benchmarks/logs/alignsam-why.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from maskfactory.models.alignsam.agent import load_agent
from maskfactory.models.alignsam.environment import Answer, PromptingEnvironment, Prompts, state_of
from maskfactory.models.alignsam.ppo import choose, distribution
from maskfactory.models.alignsam.srm import extreme_points, point_labels
from maskfactory.models.metrics import mask_iou
from maskfactory.models.predictor import BatchedSamPredictor
from maskfactory.models.registry import load_sam_model
from maskfactory.simulators import datasets
from maskfactory.simulators.world import TASKS
from maskfactory.tasks.policy import Encoded, surgery_for, task_items, zoo_policy_path

LABELLERS = ("srm", "ground truth", "all negative")


def miou(answer: Answer, targets: torch.Tensor) -> float:
    """Mean IoU of SAM's masks (low-res logits upsampled to the input frame) against targets (B, S, S)."""
    masks = F.interpolate(answer.low_res_logits, targets.shape[-2:], mode="bilinear", align_corners=False)
    pairs = zip(masks, targets, strict=True)
    return float(np.mean([mask_iou(m[0].numpy() > 0, t.numpy()) for m, t in pairs]))


def on_target(points: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Whether each point (B, 2) x/y in the input frame lies on its image's target (B, S, S); (B,) long."""
    size = targets.shape[-1]
    cols, rows = points.long().clamp(0, size - 1).unbind(1)
    return targets[torch.arange(len(points)), rows, cols].long()


@torch.no_grad()
def diagnose(task: str, data: str, n: int) -> dict:
    agent, version, _ = load_agent(zoo_policy_path(task), None)
    sam, _ = load_sam_model(agent.config.sam_model, None, None)
    predictor = BatchedSamPredictor(sam)
    encoded = Encoded(task_items(data, task)[:n], predictor, surgery_for(agent.config, None))
    features, targets, maps = encoded.set.features, encoded.set.targets, encoded.set.text_maps
    frames, size, b = encoded.embeddings.input_sizes, predictor.image_size, len(features)
    env = PromptingEnvironment(sam, agent.config.grid, frames)
    no_mask = features.new_zeros(b, 1, 4 * features.shape[-1], 4 * features.shape[-1])
    coords, labels = extreme_points(agent.srm(features, no_mask, maps), size, frames)
    truth = F.adaptive_avg_pool2d(targets[:, None].float(), features.shape[-2:]) - 0.5  # cover, as logits
    truth_coords, _ = extreme_points(truth, size, frames)
    every = torch.ones(b, env.num_actions, dtype=torch.bool)
    first = env.points(choose(distribution(agent.policy(state_of(features, no_mask))[0], every), None))
    positive = torch.ones(b, 1)

    def start(coords: torch.Tensor, labels: torch.Tensor) -> float:
        return miou(env.answer(features, Prompts(coords, labels)), targets)

    row: dict = {
        "task": task,
        "policy_version": version,
        "images": b,
        "target_cover": float(targets.float().mean()),
        "srm_best_on_target": float(on_target(coords[:, 0], targets).float().mean()),
        "srm_worst_off_target": float(1 - on_target(coords[:, 1], targets).float().mean()),
        "start_mIoU": {
            "srm pair": start(coords, labels.float()),
            "srm best alone": start(coords[:, :1], positive),
            "policy first (no-srm)": start(first[:, None], positive),
            "ground-truth pair": start(truth_coords, labels.float()),
        },
        "steps": agent.config.ppo.steps,
    }
    for labeller in LABELLERS:
        prompts = Prompts(coords, labels.float())
        answer = env.answer(features, prompts)
        allowed = torch.ones(b, env.num_actions, dtype=torch.bool)
        curve, right, positives = [miou(answer, targets)], [], []
        for _ in range(agent.config.ppo.steps):  # the Prompter's loop, with the labels swapped
            action = choose(distribution(agent.policy(answer.state)[0], allowed), None)
            points = env.points(action)
            truth_labels = on_target(points, targets)
            if labeller == "srm":
                point_label = point_labels(agent.srm(features, answer.low_res_logits, maps), points, size)
            elif labeller == "ground truth":
                point_label = truth_labels
            else:
                point_label = torch.zeros(b, dtype=torch.long)
            right.append(float((point_label == truth_labels).float().mean()))
            positives.append(float(point_label.float().mean()))
            prompts, answer = env.step(features, prompts, action, point_label, answer)
            if agent.config.ppo.mask_chosen:
                allowed[torch.arange(b), action] = False
            curve.append(miou(answer, targets))
        row[labeller] = {
            "label_accuracy": float(np.mean(right)),
            "positive_share": float(np.mean(positives)),
            "mIoU_by_step": {t: curve[t] for t in (0, 1, 5, len(curve) - 1)},
        }
    return row


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--n", type=int, default=50, help="held-out items per task (the tables' 50)")
    parser.add_argument("--root", default="/tmp/alignsam-tables", help="held-out datasets (the tables')")
    parser.add_argument("--out", default=None, help="append one JSON line per task here")
    args = parser.parse_args()
    for task in args.tasks:
        data = Path(args.root) / f"test-{task}"
        if not (data / "manifest.parquet").exists():
            datasets.write_dataset(str(data), task, n=args.n, seed=1)
        row = diagnose(task, str(data), args.n)
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
