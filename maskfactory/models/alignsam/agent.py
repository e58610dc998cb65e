"""A trained AlignSAM agent for one task: the prompting policy and the SRM, with their settings.

``AlignSamConfig`` holds everything that defines an agent (architecture, training hyper-parameters,
which SAM and CLIP it was trained on); it is saved in the checkpoint, so a checkpoint alone says how
to rebuild and use the agent.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from maskfactory.infra.checkpoints import load_checkpoint, save_checkpoint
from maskfactory.infra.settings import Settings
from maskfactory.models.alignsam.ppo import ActorCritic, PPOConfig
from maskfactory.models.alignsam.srm import SemanticRecalibration

KIND = "alignsam"


@dataclass
class AlignSamConfig:
    """One task's agent. Paper values where the paper gives them (section 4.1), else ours (noted)."""

    task: str = "saliency"
    explicit: bool = False  # the semantic switch: True uses CLIP Surgery's text map (explicit branch)
    grid: int = 16  # G; ours for 256 px tiny-sam images (16 px patches); paper: 10 (80 px of 800 px)
    episodes: int = 50  # paper: 50; ours: an episode is one pass over the few-shot set
    batch: int = 16  # ours: images per rollout and per PPO update
    srm_updates: int | None = None  # q; None: the paper's 1 for the implicit branch, 5 for the explicit
    srm_lr: float = 1e-4  # paper: Adam at 1e-4 for everything
    seed: int = 0
    sam_model: str = "tiny-sam"  # registry name of the frozen SAM the agent was trained with
    clip_model: str | None = None  # registry name of the CLIP behind the text maps (explicit only)
    ppo: PPOConfig = field(default_factory=PPOConfig)

    @property
    def q(self) -> int:
        """SRM updates per prompting step."""
        if self.srm_updates is not None:
            return self.srm_updates
        return 5 if self.explicit else 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlignSamConfig:
        return cls(**{**d, "ppo": PPOConfig(**d["ppo"])})


class AlignSam(nn.Module):
    """The policy (``ActorCritic``) and the SRM over a SAM embedding of ``channels`` x ``embed_grid``^2."""

    def __init__(self, channels: int, embed_grid: int, config: AlignSamConfig) -> None:
        super().__init__()
        self.channels = channels
        self.embed_grid = embed_grid
        self.config = config
        self.policy = ActorCritic(channels, config.grid)
        self.srm = SemanticRecalibration(channels, embed_grid, config.explicit)


def save_agent(
    agent: AlignSam, uri: str, extra: dict[str, Any] | None = None, settings: Settings | None = None
) -> str:
    """Write the agent to ``uri`` (local or s3://); returns its version. ``extra`` must be JSON."""
    config = {"channels": agent.channels, "embed_grid": agent.embed_grid, **agent.config.to_dict()}
    return save_checkpoint(uri, KIND, config, agent.state_dict(), extra=extra, settings=settings)


def load_agent(uri: str, settings: Settings | None = None) -> tuple[AlignSam, str, dict[str, Any]]:
    """Load an agent saved by ``save_agent``; returns (agent in eval mode, version, extra)."""
    ckpt = load_checkpoint(uri, settings)
    if ckpt.kind != KIND:
        raise ValueError(f"{uri} is a {ckpt.kind!r} checkpoint, not an AlignSAM agent")
    config = dict(ckpt.config)
    channels, embed_grid = config.pop("channels"), config.pop("embed_grid")
    agent = AlignSam(channels, embed_grid, AlignSamConfig.from_dict(config))
    agent.load_state_dict({k: v.float() for k, v in ckpt.state_dict.items()})
    return agent.eval(), ckpt.version, ckpt.extra
