"""AlignSAM's trainer, checkpoint and batched prompter, on the micro SAM (seconds on a CPU)."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from micro_models import MICRO_SAM
from test_alignsam_ppo import bright_squares
from test_clip_surgery import random_clip

from maskfactory.models.alignsam.agent import AlignSam, AlignSamConfig, load_agent, save_agent
from maskfactory.models.alignsam.ppo import PPOConfig
from maskfactory.models.alignsam.prompter import Prompter
from maskfactory.models.alignsam.trainer import FewShotSet, random_start_prompts, train_agent
from maskfactory.models.clip import TINY_CLIP
from maskfactory.models.clip_surgery import ClipSurgery
from maskfactory.models.predictor import BatchedSamPredictor
from maskfactory.models.sam import build_sam


def micro_predictor() -> BatchedSamPredictor:
    torch.manual_seed(0)
    return BatchedSamPredictor(build_sam(MICRO_SAM))


def small_config(**kw: object) -> AlignSamConfig:
    return AlignSamConfig(grid=8, batch=16, ppo=PPOConfig(steps=3, epochs=4, lr=3e-3), **kw)


def rgb(images: torch.Tensor) -> list[np.ndarray]:
    """Normalised (N, 3, S, S) test images -> uint8 RGB arrays, as a user's images arrive."""
    return [((im.permute(1, 2, 0).clamp(-2, 2) + 2) * 63).byte().numpy() for im in images]


def test_training_start_prompts_are_one_positive_and_one_negative_inside_the_frame() -> None:
    targets = torch.zeros(3, 64, 64, dtype=torch.bool)
    targets[:, 10:20, 30:40] = True
    frames = [(64, 64), (32, 64), (64, 48)]
    prompts = random_start_prompts(targets, frames, torch.Generator().manual_seed(0))
    assert prompts.coords.shape == (3, 2, 2) and prompts.labels.tolist() == [[1, 0]] * 3
    for (pos, neg), (h, w) in zip(prompts.coords.tolist(), frames, strict=True):
        assert 30 <= pos[0] < 40 and 10 <= pos[1] < 20
        assert not (30 <= neg[0] < 40 and 10 <= neg[1] < 20) and neg[0] < w and neg[1] < h


def test_the_trained_agent_prompts_the_target_more_often_than_random_actions() -> None:
    """Train on 32 bright-square images; on 16 others the greedy agent's points hit the square far
    more often than uniform random actions (seen: 0.85 against 0.06)."""
    predictor = micro_predictor()
    images, masks = bright_squares(48, seed=0)
    embeddings = predictor.encode(rgb(images))
    data = FewShotSet(embeddings.features, embeddings.input_sizes, masks)
    agent, summary = train_agent(predictor.sam, data.subset(torch.arange(32)), small_config(episodes=25))
    assert summary["train_images"] == 32 and summary["episode"] == 25
    test = torch.arange(32, 48)
    held_out = type(embeddings)(
        embeddings.features[test], embeddings.input_sizes[32:], embeddings.original_sizes[32:]
    )
    prompter = Prompter(predictor, agent)

    def rate(ablation: str) -> float:
        points = prompter(held_out, ablation=ablation).agent_points.long()
        return masks[test][torch.arange(16)[:, None], points[..., 1], points[..., 0]].float().mean().item()

    assert rate("full") > rate("no-rl") + 0.3, (rate("full"), rate("no-rl"))


def test_training_needs_images_with_foreground_and_background() -> None:
    predictor = micro_predictor()
    features = predictor.sam.image_encoder(torch.randn(2, 3, 64, 64)).detach()
    empty = FewShotSet(features, [(64, 64)] * 2, torch.zeros(2, 64, 64, dtype=torch.bool))
    with pytest.raises(ValueError, match="foreground and background"):
        train_agent(predictor.sam, empty, small_config(episodes=1))
    with pytest.raises(ValueError, match="text maps"):
        train_agent(predictor.sam, empty, small_config(episodes=1, explicit=True))


def test_an_agent_round_trips_through_its_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    agent = AlignSam(32, 4, small_config(task="glass", explicit=True))
    version = save_agent(agent, str(tmp_path / "a.pt"), extra={"shots": 5})
    loaded, loaded_version, extra = load_agent(str(tmp_path / "a.pt"))
    assert loaded_version == version and extra == {"shots": 5}
    assert loaded.config == agent.config and loaded.srm.explicit
    assert all(
        torch.equal(a, b)
        for a, b in zip(agent.state_dict().values(), loaded.state_dict().values(), strict=True)
    )
    with pytest.raises(ValueError, match="not an AlignSAM agent"):
        load_agent(str(Path(__file__).parents[1] / "maskfactory/models/zoo/tiny-sam.pt"))


def test_the_prompter_answers_a_batch_of_odd_sized_images_in_their_own_pixels() -> None:
    predictor = micro_predictor()
    agent = AlignSam(32, 4, small_config())
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in [(48, 96), (80, 40), (64, 64)]]
    embeddings = predictor.encode(images)
    result = Prompter(predictor, agent)(embeddings)
    assert [m.shape for m in result.masks] == [(48, 96), (80, 40), (64, 64)]
    assert result.points.shape == (3, 2 + 3, 2) and result.agent_points.shape == (3, 3, 2)
    assert result.labels[:, :2].tolist() == [[1, 0]] * 3  # the SRM's highest and lowest cells first
    for points, image in zip(result.points, images, strict=True):
        assert (points[:, 0] < image.shape[1]).all() and (points[:, 1] < image.shape[0]).all()
    for name in ("iou_prediction", "stability", "value"):
        assert getattr(result, name).shape == (3,)
    assert result.srm_map.shape == (3, 4, 4) and result.srm_map.min() >= 0 and result.srm_map.max() <= 1
    # Batched equals one image at a time: decoder calls are shared, answers are not.
    alone = Prompter(predictor, agent)(predictor.encode(images[1:2]))
    assert torch.allclose(alone.points[0], result.points[1]) and np.array_equal(
        alone.masks[0], result.masks[1]
    )
    # Masked actions: no patch is prompted twice.
    for chosen in result.agent_points:
        assert len({tuple(p) for p in chosen.tolist()}) == 3


def test_ablations_change_only_what_they_name() -> None:
    predictor = micro_predictor()
    agent = AlignSam(32, 4, small_config())
    embeddings = predictor.encode([np.full((64, 64, 3), 90, np.uint8), np.full((64, 64, 3), 200, np.uint8)])
    prompter = Prompter(predictor, agent)
    single = prompter(embeddings, ablation="single-step")
    assert single.points.shape[1] == 2 and single.agent_points.shape[1] == 0
    no_srm = prompter(embeddings, ablation="no-srm")
    assert no_srm.points.shape[1] == 3 and (no_srm.labels == 1).all()
    random_a, random_b = (
        prompter(embeddings, ablation="no-rl", seed=1),
        prompter(embeddings, ablation="no-rl", seed=1),
    )
    assert torch.equal(random_a.points, random_b.points)  # seeded
    assert prompter(embeddings, steps=6).agent_points.shape[1] == 6
    with pytest.raises(ValueError, match="ablation"):
        prompter(embeddings, ablation="no-policy")


def test_ground_truth_has_no_way_into_the_prompter() -> None:
    params = list(inspect.signature(Prompter.__call__).parameters)
    assert params == ["self", "embeddings", "text_maps", "ablation", "steps", "seed"]


def test_an_explicit_agent_reads_clip_surgery_maps_on_sams_frame() -> None:
    predictor = micro_predictor()
    agent = AlignSam(32, 4, small_config(explicit=True))
    surgery = ClipSurgery(random_clip(TINY_CLIP))
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 255, (32, 64, 3), dtype=np.uint8),
        rng.integers(0, 255, (64, 64, 3), dtype=np.uint8),
    ]
    embeddings = predictor.encode(images)
    maps = surgery.sam_frame_maps(images, ["shadow", "a photo of a star"], embeddings.input_sizes, 64, 16)
    assert maps.shape == (2, 16, 16) and maps[0, 8:].abs().max() == 0  # image 0 fills the top half only
    assert maps[0, :8].max() > 0 and maps[1].max() > 0
    result = Prompter(predictor, agent)(embeddings, maps)
    assert result.points.shape == (2, 5, 2)
    with pytest.raises(ValueError, match="text map"):
        Prompter(predictor, agent)(embeddings)
