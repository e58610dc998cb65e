"""AlignSAM's prompting policy: an actor-critic over the state, trained with PPO (paper section 3.2).

Read top to bottom: the hyper-parameters, the network, one episode's rollout, the returns and
advantages (equations 6-7), and the clipped update (equations 8-10).

Choices the paper leaves open, made here:
- The network: a 1x1 conv that narrows the state (C, g, g) to 32 channels, two 3x3 conv blocks,
  then an actor head (1x1 conv to one score per embedding cell, resized to the G x G action grid)
  and a critic head (global average pool, MLP, one value). Scoring cells with a conv keeps the
  policy translation-equivariant, which a few-shot set of 50 images cannot teach a dense layer; the
  narrow body makes PPO's 20 epochs per update affordable on a CPU (about 5x fewer multiply-adds,
  by count, than 3x3 convs at 64 channels on tiny-sam's 128-channel state; not timed).
- Returns are discounted sums of the episode's rewards (no bootstrap: an episode ends after T steps)
  and advantages are returns minus the critic's values, normalised per update.
- ``mask_chosen`` (a setting, as the issue asks): actions already taken in an episode can be masked
  out of the policy's distribution so that no point is prompted twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from maskfactory.models.alignsam.environment import Answer, PromptingEnvironment, Prompts
from maskfactory.models.alignsam.layers import conv_block


@dataclass
class PPOConfig:
    """PPO hyper-parameters; defaults from the paper (section 4.1) where it gives them."""

    gamma: float = 0.99  # discount factor (paper)
    clip: float = 0.2  # ratio clipping epsilon (paper)
    epochs: int = 20  # K: update epochs per episode (paper)
    steps: int = 15  # T: prompting steps per episode (paper)
    lr: float = 1e-4  # Adam (paper)
    value_weight: float = 0.5  # ours: critic loss weight in the joint loss
    mask_chosen: bool = True  # ours: never choose the same patch twice in an episode


class ActorCritic(nn.Module):
    """state (B, C, g, g) -> action logits (B, G*G) and state values (B,)."""

    def __init__(self, channels: int, grid: int, hidden: int = 32) -> None:
        super().__init__()
        self.grid = grid
        self.body = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), conv_block(hidden, hidden), conv_block(hidden, hidden)
        )
        self.actor = nn.Conv2d(hidden, 1, 1)
        self.critic = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.body(state)
        scores = F.adaptive_avg_pool2d(self.actor(x), self.grid)  # one score per action patch
        return scores.flatten(1), self.critic(x.mean((2, 3)))[:, 0]


@dataclass
class Episode:
    """One batch of episodes, T steps each: states (T, B, C, g, g), the rest (T, B) unless noted."""

    states: torch.Tensor
    logits: torch.Tensor  # (T, B, 1, 4g, 4g): SAM's mask before each step, which the SRM labelled from
    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    allowed: torch.Tensor  # (T, B, A) bool: actions the policy could choose at each step


def distribution(logits: torch.Tensor, allowed: torch.Tensor) -> torch.distributions.Categorical:
    """The policy's distribution over allowed actions only."""
    return torch.distributions.Categorical(logits=logits.masked_fill(~allowed, float("-inf")))


def choose(dist: torch.distributions.Categorical, generator: torch.Generator | None) -> torch.Tensor:
    """One action per image, (B,): sampled with ``generator`` (Gumbel-max, so a seed fixes it) when
    exploring, else the most probable (inference)."""
    if generator is None:
        return dist.logits.argmax(1)
    u = torch.rand(dist.logits.shape, generator=generator).clamp(1e-9, 1.0)
    return (dist.logits - torch.log(-torch.log(u))).argmax(1)


@torch.no_grad()
def rollout(
    env: PromptingEnvironment,
    policy: ActorCritic,
    features: torch.Tensor,
    prompts: Prompts,
    label: Callable[[torch.Tensor, Answer], torch.Tensor],
    reward: Callable[[torch.Tensor], torch.Tensor],
    config: PPOConfig,
    generator: torch.Generator,
) -> tuple[Episode, Prompts]:
    """Run T prompting steps for B images from their first prompts.

    ``label(points (B, 2), answer) -> (B,)`` labels each chosen point from SAM's current answer (the
    SRM's job); ``reward(points) -> (B,)`` scores it (training only, from ground truth). Neither can
    move a point.
    """
    answer = env.answer(features, prompts)
    b, a = features.shape[0], env.num_actions
    allowed = torch.ones(b, a, dtype=torch.bool)
    states, logits_at, actions, log_probs, values, rewards, allowed_at = [], [], [], [], [], [], []
    for _ in range(config.steps):
        logits, value = policy(answer.state)
        dist = distribution(logits, allowed)
        action = choose(dist, generator)
        points = env.points(action)
        states.append(answer.state)
        logits_at.append(answer.low_res_logits)
        actions.append(action)
        log_probs.append(dist.log_prob(action))
        values.append(value)
        rewards.append(reward(points))
        allowed_at.append(allowed.clone())
        prompts, answer = env.step(features, prompts, action, label(points, answer), answer)
        if config.mask_chosen:
            allowed[torch.arange(b), action] = False
    stack = torch.stack
    episode = Episode(
        stack(states),
        stack(logits_at),
        stack(actions),
        stack(log_probs),
        stack(values),
        stack(rewards),
        stack(allowed_at),
    )
    return episode, prompts


def discounted_returns(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """Equation 6 without bootstrap: rewards (T, B) -> returns (T, B), G_t = r_t + gamma * G_{t+1}."""
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running
        returns[t] = running
    return returns


def ppo_update(
    policy: ActorCritic, optimizer: torch.optim.Optimizer, episode: Episode, config: PPOConfig
) -> dict[str, float]:
    """K epochs of the clipped surrogate (equations 8-9) plus the critic's squared error (equation 10)."""
    returns = discounted_returns(episode.rewards, config.gamma).flatten()
    advantages = returns - episode.values.flatten()  # equation 7
    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    states = episode.states.flatten(0, 1)
    actions, old_log_probs = episode.actions.flatten(), episode.log_probs.flatten()
    allowed = episode.allowed.flatten(0, 1)
    for _ in range(config.epochs):
        logits, values = policy(states)
        ratio = (distribution(logits, allowed).log_prob(actions) - old_log_probs).exp()  # equation 8
        clipped = ratio.clamp(1 - config.clip, 1 + config.clip)
        actor_loss = -torch.min(ratio * advantages, clipped * advantages).mean()  # equation 9
        critic_loss = F.mse_loss(values, returns)  # equation 10
        loss = actor_loss + config.value_weight * critic_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {"actor_loss": actor_loss.item(), "critic_loss": critic_loss.item(), "ratio": ratio.mean().item()}
