"""AlignSAM's environment: the action -> point mapping, the state, the reward, and growing prompt sets."""

from __future__ import annotations

import pytest
import torch
from micro_models import MICRO_SAM

from maskfactory.models.alignsam.environment import (
    PromptingEnvironment,
    Prompts,
    patch_centres,
    point_rewards,
    state_of,
)
from maskfactory.models.sam import build_sam


def test_actions_are_patch_centres_row_major() -> None:
    centres = patch_centres(10, 800, 800)  # the paper's 800 px images and 80 px patches
    assert centres.shape == (100, 2)
    assert centres[0].tolist() == [40.0, 40.0] and centres[99].tolist() == [760.0, 760.0]
    assert centres[12].tolist() == [200.0, 120.0]  # row 1, column 2: x from the column, y from the row
    wide = patch_centres(4, 100, 200)  # a non-square frame: patches 50 px wide, 25 px high
    assert wide[5].tolist() == [75.0, 37.5]


def test_reward_is_plus_one_on_foreground_else_minus_one() -> None:
    gt = torch.zeros(3, 64, 64, dtype=torch.bool)
    gt[:, 10:20, 30:40] = True
    points = torch.tensor([[35.0, 15.0], [15.0, 35.0], [39.9, 19.9]])  # inside, outside, last pixel
    assert point_rewards(points, gt).tolist() == [1.0, -1.0, 1.0]


def test_state_is_the_embedding_weighted_by_the_previous_mask() -> None:
    features = torch.randn(2, 8, 4, 4)
    sure = torch.full((2, 1, 16, 16), 50.0)  # probability ~1 everywhere
    assert torch.allclose(state_of(features, sure), features)
    half = torch.full((2, 1, 16, 16), -50.0)
    half[..., :8] = 50.0  # foreground on the left half only
    state = state_of(features, half)
    assert state.shape == features.shape
    assert torch.allclose(state[..., :2], features[..., :2]) and state[..., 2:].abs().max() < 1e-6


def test_each_step_adds_one_labelled_point_and_answers_every_image() -> None:
    torch.manual_seed(0)
    sam = build_sam(MICRO_SAM)
    env = PromptingEnvironment(sam, grid=4, frame=(64, 48))  # the image fills 48 of 64 columns
    with torch.no_grad():
        features = sam.image_encoder(torch.randn(3, 3, 64, 64))
    prompts = Prompts(
        torch.tensor([[[10.0, 10.0], [50.0, 40.0]]]).expand(3, -1, -1), torch.tensor([[1, 0]] * 3)
    )
    first = env.answer(features, prompts)
    assert first.low_res_logits.shape == (3, 1, 16, 16) and first.iou_prediction.shape == (3,)
    assert first.state.shape == features.shape
    prompts, answer = env.step(features, prompts, torch.tensor([0, 5, 15]), torch.tensor([1, 0, 1]), first)
    assert prompts.coords.shape == (3, 3, 2) and prompts.labels[:, -1].tolist() == [1, 0, 1]
    assert prompts.coords[:, -1].tolist() == [[6.0, 8.0], [18.0, 24.0], [42.0, 56.0]]
    assert not torch.allclose(answer.low_res_logits, first.low_res_logits)
    with pytest.raises(ValueError, match="actions"):
        env.step(features, prompts, torch.tensor([0, 16, 1]), torch.tensor([1, 1, 1]), answer)
