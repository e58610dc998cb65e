"""AlignSAM's PPO: returns, the masked distribution, and a short run that beats random actions."""

from __future__ import annotations

import numpy as np
import torch
from micro_models import MICRO_SAM

from maskfactory.models.alignsam.environment import PromptingEnvironment, Prompts, point_rewards
from maskfactory.models.alignsam.ppo import ActorCritic, PPOConfig, discounted_returns, ppo_update, rollout
from maskfactory.models.sam import build_sam


def test_discounted_returns() -> None:
    rewards = torch.tensor([[1.0, -1.0], [-1.0, -1.0], [1.0, 1.0]])
    returns = discounted_returns(rewards, 0.5)
    assert returns[:, 0].tolist() == [1 - 0.5 + 0.25, -1 + 0.5, 1.0]
    assert returns[:, 1].tolist() == [-1 - 0.5 + 0.25, -1 + 0.5, 1.0]


def bright_squares(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised 64 px images (n, 3, 64, 64) with one bright 24 px square on dark noise, and masks."""
    rng = np.random.default_rng(seed)
    images = rng.normal(-1.0, 0.3, (n, 3, 64, 64)).astype(np.float32)
    masks = np.zeros((n, 64, 64), bool)
    for i in range(n):
        y, x = rng.integers(0, 40, 2)
        masks[i, y : y + 24, x : x + 24] = True
    images[np.repeat(masks[:, None], 3, axis=1)] = 1.5
    return torch.from_numpy(images), torch.from_numpy(masks)


def uniform_policy(channels: int, grid: int) -> ActorCritic:
    """An actor with zero weights on its head: every allowed action equally likely."""
    policy = ActorCritic(channels, grid)
    torch.nn.init.zeros_(policy.actor.weight)
    torch.nn.init.zeros_(policy.actor.bias)
    return policy


def foreground_rate(
    env: PromptingEnvironment, policy: ActorCritic, images: torch.Tensor, gt: torch.Tensor, seed: int
) -> float:
    """Share of chosen points on foreground over one 3-step episode per image."""
    features = env.sam.image_encoder(images)
    start = Prompts(
        torch.tensor([[[1.0, 1.0]]]).expand(len(images), -1, -1), torch.full((len(images), 1), -1)
    )
    episode, _ = rollout(
        env,
        policy,
        features,
        start,
        label=lambda points, answer: torch.ones(len(points), dtype=torch.long),
        reward=lambda points: point_rewards(points, gt),
        config=PPOConfig(steps=3),
        generator=torch.Generator().manual_seed(seed),
    )
    return (episode.rewards > 0).float().mean().item()


def test_a_short_ppo_run_beats_random_actions() -> None:
    """The policy learns to prompt the bright square; uniform actions hit it about 12% of the time
    (0.865 against 0.115 seen)."""
    torch.manual_seed(0)
    sam = build_sam(MICRO_SAM)
    env = PromptingEnvironment(sam, grid=8, frame=(64, 64))
    config = PPOConfig(steps=3, epochs=4, lr=3e-3)
    policy_channels = MICRO_SAM.prompt_embed_dim
    policy = ActorCritic(policy_channels, env.grid)
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(0)
    images, gt = bright_squares(64, seed=0)
    with torch.no_grad():
        features = sam.image_encoder(images)
    start = Prompts(torch.tensor([[[1.0, 1.0]]]).expand(16, -1, -1), torch.full((16, 1), -1))
    for episode_index in range(30):
        batch = torch.arange(16) + 16 * (episode_index % 4)
        episode, _ = rollout(
            env,
            policy,
            features[batch],
            start,
            label=lambda points, answer: torch.ones(len(points), dtype=torch.long),
            reward=lambda points, batch=batch: point_rewards(points, gt[batch]),
            config=config,
            generator=generator,
        )
        ppo_update(policy, optimizer, episode, config)
    test_images, test_gt = bright_squares(32, seed=1)
    with torch.no_grad():
        learned = foreground_rate(env, policy, test_images, test_gt, seed=2)
        random = foreground_rate(env, uniform_policy(policy_channels, env.grid), test_images, test_gt, seed=2)
    assert learned > random + 0.3, (learned, random)
