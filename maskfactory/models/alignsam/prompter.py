"""AlignSAM at inference: prompt a frozen SAM for a batch of images with a trained agent.

Per batch: the SRM's highest and lowest cells give each image its first positive and negative point
(paper section 3.3), then T steps of the policy add one point each, labelled by the SRM. Every step
decodes all images' prompt sets in one decoder call over the cached embeddings. Ground truth plays
no part: nothing here accepts it.

Choices the paper leaves open, made here:
- The policy acts greedily (its most probable allowed action); training samples.
- At the first SRM call there is no mask yet: the previous mask probability is 1/2 everywhere (zero
  logits), as in training.
- The critic value returned is the value of the last state the policy acted on.

Ablations (the issue's evaluation, paper Table 2): ``no-rl`` takes uniformly random actions (seeded)
instead of the policy's; ``no-srm`` labels every point positive and starts from no points (the
policy places the first one); ``single-step`` stops after the SRM's two points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from maskfactory.models.alignsam.agent import AlignSam
from maskfactory.models.alignsam.environment import Answer, PromptingEnvironment, Prompts, state_of
from maskfactory.models.alignsam.ppo import choose, distribution
from maskfactory.models.alignsam.srm import extreme_points, point_labels
from maskfactory.models.predictor import BatchedSamPredictor, ImageEmbeddings, Prediction

ABLATIONS = ("full", "no-rl", "no-srm", "single-step")


@dataclass
class PromptResult:
    """What the prompter found for B images. Coordinates are x/y in each image's original pixels."""

    masks: list[np.ndarray]  # B x (H, W) bool: SAM's final mask at each image's size
    points: torch.Tensor  # (B, P, 2): every prompt in order; P = 2 + T (no-srm: T, single-step: 2)
    labels: torch.Tensor  # (B, P): 1 positive, 0 negative
    agent_points: torch.Tensor  # (B, T, 2): the points the agent chose (for the foreground rate)
    iou_prediction: torch.Tensor  # (B,): SAM's own estimate of the final mask's IoU
    stability: torch.Tensor  # (B,): SAM's stability score of the final mask
    value: torch.Tensor  # (B,): the critic's value of the last state the policy acted on (0 if none)
    srm_map: torch.Tensor  # (B, g, g): the SRM's foreground probability given the final mask
    low_res_logits: torch.Tensor  # (B, 1, 4g, 4g): the final mask's logits on SAM's input frame


class Prompter:
    """Batched AlignSAM inference with one agent over one SAM (the agent's ``config.sam_model``)."""

    def __init__(self, predictor: BatchedSamPredictor, agent: AlignSam, steps: int | None = None) -> None:
        """``steps``: T, prompting steps after the SRM's points (default: the agent's training T)."""
        self.predictor = predictor
        self.agent = agent.eval()
        self.steps = agent.config.ppo.steps if steps is None else steps

    @torch.no_grad()
    def __call__(
        self,
        embeddings: ImageEmbeddings,
        text_maps: torch.Tensor | None = None,
        ablation: str = "full",
        steps: int | None = None,
        seed: int = 0,
    ) -> PromptResult:
        """Prompt every image of ``embeddings`` (from ``predictor.encode``).

        text_maps: (B, m, m) CLIP Surgery maps on SAM's input frame (``ClipSurgery.sam_frame_maps``),
        needed by an explicit-branch agent. ``seed`` drives the random actions of ``no-rl`` only.
        """
        if ablation not in ABLATIONS:
            raise ValueError(f"unknown ablation {ablation!r}; known: {', '.join(ABLATIONS)}")
        steps = self.steps if steps is None else steps
        if ablation == "single-step":
            steps = 0
        agent, sam = self.agent, self.predictor.sam
        features = embeddings.features
        b, frame_size = len(features), self.predictor.image_size
        env = PromptingEnvironment(sam, agent.config.grid, embeddings.input_sizes)
        no_mask = features.new_zeros(b, 1, 4 * features.shape[-1], 4 * features.shape[-1])

        def srm(logits: torch.Tensor) -> torch.Tensor:
            return agent.srm(features, logits, text_maps)

        previous: Answer | None = None  # the answer a step refines; none before the first points
        if ablation == "no-srm":
            prompts = Prompts(features.new_zeros(b, 0, 2), features.new_zeros(b, 0))
            answer = Answer(no_mask, features.new_zeros(b), state_of(features, no_mask))
        else:
            coords, labels = extreme_points(srm(no_mask), frame_size, embeddings.input_sizes)
            prompts = Prompts(coords.to(features.device), labels.to(features))
            answer = previous = env.answer(features, prompts)
        generator = torch.Generator().manual_seed(seed) if ablation == "no-rl" else None
        allowed = torch.ones(b, env.num_actions, dtype=torch.bool)
        value = features.new_zeros(b)
        chosen = []
        for _ in range(steps):
            logits, value = agent.policy(answer.state)
            if ablation == "no-rl":
                logits = torch.zeros_like(logits)  # uniform over the allowed actions
            action = choose(distribution(logits, allowed), generator)
            points = env.points(action)
            if ablation == "no-srm":
                labels = torch.ones(b, dtype=torch.long)
            else:
                labels = point_labels(srm(answer.low_res_logits), points, frame_size)
            prompts, answer = env.step(features, prompts, action, labels, previous)
            previous = answer
            chosen.append(points)
            if agent.config.ppo.mask_chosen:
                allowed[torch.arange(b), action] = False
        to_input = embeddings.input_scales().to(features)  # original pixels -> SAM's input frame
        return PromptResult(
            masks=self._masks(answer, embeddings),
            points=prompts.coords / to_input[:, None, :],
            labels=prompts.labels.long(),
            agent_points=(torch.stack(chosen, 1) if chosen else features.new_zeros(b, 0, 2))
            / to_input[:, None, :],
            iou_prediction=answer.iou_prediction,
            stability=self.predictor.stability_score(answer.low_res_logits[:, 0]),
            value=value,
            srm_map=srm(answer.low_res_logits)[:, 0].sigmoid(),
            low_res_logits=answer.low_res_logits,
        )

    def _masks(self, answer: Answer, embeddings: ImageEmbeddings) -> list[np.ndarray]:
        """Each image's final mask, (H, W) bool at its original size."""
        final = Prediction(
            answer.low_res_logits, answer.iou_prediction[:, None], torch.arange(len(embeddings))
        )
        threshold = self.predictor.sam.mask_threshold
        return [(m[0] > threshold).cpu().numpy() for m in self.predictor.upscale(final, embeddings)]
