"""Train an AlignSAM agent for one task on a few-shot set (paper section 3, Algorithm 1).

Read top to bottom: the few-shot set, the training start prompts, then the loop. Each batch of
images plays one T-step episode from a random positive and a random negative ground-truth point
(training only; at inference the SRM gives the first points). The SRM labels every point the policy
picks, the reward scores it against ground truth, PPO updates the policy, and the SRM is updated q
times per step on the masks SAM produced during the episode.

Choices the paper leaves open, made here:
- One episode is one pass over the few-shot set in batches of ``config.batch`` images.
- The SRM is updated after the episode on the episode's recorded masks (q updates per step, in step
  order), so the labels within one episode come from one SRM; it also learns from the empty start
  (no mask yet, probability 1/2 everywhere), which is the state of its first call at inference.
- Images whose target is empty, or covers the whole image, cannot give both start prompts and are
  left out of training.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam

from maskfactory.models.alignsam.agent import AlignSam, AlignSamConfig
from maskfactory.models.alignsam.environment import Answer, PromptingEnvironment, Prompts, point_rewards
from maskfactory.models.alignsam.ppo import ppo_update, rollout
from maskfactory.models.alignsam.srm import point_labels, srm_loss


@dataclass
class FewShotSet:
    """Images of one task prepared for the agent: SAM embeddings and ground truth on SAM's frame."""

    features: torch.Tensor  # (N, C, g, g) SAM image embeddings
    frames: list[tuple[int, int]]  # (h, w) of each image inside SAM's S x S input frame
    targets: torch.Tensor  # (N, S, S) bool ground truth on SAM's input frame, False on the padding
    text_maps: torch.Tensor | None = None  # (N, m, m) CLIP Surgery maps on SAM's frame (explicit)

    def __len__(self) -> int:
        return len(self.features)

    def subset(self, index: torch.Tensor) -> FewShotSet:
        maps = None if self.text_maps is None else self.text_maps[index]
        return FewShotSet(
            self.features[index], [self.frames[i] for i in index.tolist()], self.targets[index], maps
        )


def random_start_prompts(
    targets: torch.Tensor, frames: list[tuple[int, int]], generator: torch.Generator
) -> Prompts:
    """Training's first prompts: a random foreground pixel (positive) and a random background pixel
    of the image (negative) per image; coords (B, 2, 2) x/y at pixel centres."""
    coords = []
    for gt, (h, w) in zip(targets, frames, strict=True):
        on_image = gt[:h, :w].flatten()
        pair = []
        for pixels in (on_image.nonzero()[:, 0], (~on_image).nonzero()[:, 0]):
            i = pixels[torch.randint(len(pixels), (1,), generator=generator)].item()
            pair.append([i % w + 0.5, i // w + 0.5])
        coords.append(pair)
    return Prompts(torch.tensor(coords), torch.tensor([[1.0, 0.0]]).expand(len(targets), -1))


def train_agent(
    sam: Sam,
    data: FewShotSet,
    config: AlignSamConfig,
    log: Callable[[dict[str, float]], None] | None = None,
) -> tuple[AlignSam, dict[str, float]]:
    """Train policy and SRM of a fresh agent on ``data``; returns the agent (eval mode) and a summary."""
    if config.explicit and data.text_maps is None:
        raise ValueError("an explicit-branch agent needs text maps in its few-shot set")
    usable = torch.tensor(
        [
            bool(t[:h, :w].any() and not t[:h, :w].all())
            for t, (h, w) in zip(data.targets, data.frames, strict=True)
        ]
    )
    if not usable.any():
        raise ValueError("no training image has both foreground and background")
    data = data.subset(usable.nonzero()[:, 0])
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    embed_grid = data.features.shape[-1]
    agent = AlignSam(data.features.shape[1], embed_grid, config)
    policy_optimizer = torch.optim.Adam(agent.policy.parameters(), lr=config.ppo.lr)
    srm_optimizer = torch.optim.Adam(agent.srm.parameters(), lr=config.srm_lr)
    frame_size = sam.image_encoder.img_size
    srm_targets = F.adaptive_avg_pool2d(data.targets[:, None].float(), embed_grid)  # equation 13's target
    started = time.monotonic()
    summary: dict[str, float] = {}
    for episode in range(config.episodes):
        hits, srm_losses = [], []
        for batch in torch.randperm(len(data), generator=generator).split(config.batch):
            part = data.subset(batch)
            env = PromptingEnvironment(sam, config.grid, part.frames)

            def label(points: torch.Tensor, answer: Answer, part: FewShotSet = part) -> torch.Tensor:
                return point_labels(
                    agent.srm(part.features, answer.low_res_logits, part.text_maps), points, frame_size
                )

            def reward(points: torch.Tensor, part: FewShotSet = part) -> torch.Tensor:
                return point_rewards(points, part.targets)

            start = random_start_prompts(part.targets, part.frames, generator)
            played, _ = rollout(env, agent.policy, part.features, start, label, reward, config.ppo, generator)
            stats = ppo_update(agent.policy, policy_optimizer, played, config.ppo)
            hits.append((played.rewards > 0).float().mean().item())
            for previous in [torch.zeros_like(played.logits[0]), *played.logits]:
                for _ in range(config.q):
                    loss = srm_loss(agent.srm(part.features, previous, part.text_maps), srm_targets[batch])
                    srm_optimizer.zero_grad()
                    loss.backward()
                    srm_optimizer.step()
                srm_losses.append(loss.item())
        summary = {
            "episode": episode + 1,
            "foreground_rate": sum(hits) / len(hits),
            "srm_loss": sum(srm_losses) / len(srm_losses),
            "critic_loss": stats["critic_loss"],
            "seconds": time.monotonic() - started,
        }
        if log:
            log(summary)
    return agent.eval(), {**summary, "train_images": len(data)}
