"""SAM 2's high-resolution features in a SAM with a convolutional stem (SamConfig.high_res_features)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from micro_models import MICRO_SAM

from maskfactory.infra.checkpoints import save_checkpoint
from maskfactory.models.alignsam.environment import PromptingEnvironment, Prompts
from maskfactory.models.predictor import BatchedSamPredictor, decode_masks
from maskfactory.models.sam import SamConfig, build_sam, image_features, load_sam, uses_high_res
from maskfactory.models.stem import ConvStem
from maskfactory.models.zoo.train_sam import TinySamTraining, TrainingSample, train_tiny_sam

HIGH_RES = dataclasses.replace(MICRO_SAM, conv_stem=(8, 16), high_res_features=True)  # 64 px, 16 px patches


def test_stem_stages_are_its_strided_convs_finest_first() -> None:
    stem = ConvStem([16, 32], width=48, patch_size=16, blocks=1)
    x = torch.rand(2, 3, 64, 64)
    stages = stem.stages(x)
    assert [tuple(s.shape) for s in stages] == [(2, 16, 16, 16), (2, 32, 8, 8), (2, 48, 4, 4)]
    assert torch.equal(stages[-1], stem(x))


def test_the_encoder_is_unchanged_and_the_stem_maps_come_projected_to_the_upscaling_widths() -> None:
    torch.manual_seed(0)
    sam = build_sam(HIGH_RES)
    assert uses_high_res(sam) and not uses_high_res(build_sam(MICRO_SAM))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        features, (s0, s1) = image_features(sam, x)
        assert torch.allclose(features, sam.image_encoder(x), atol=1e-6)
    c = HIGH_RES.prompt_embed_dim
    assert s0.shape == (2, c // 8, 16, 16) and s1.shape == (2, c // 4, 8, 8)  # strides 4 and 8
    plain_features, none = image_features(build_sam(MICRO_SAM), x)
    assert none is None and plain_features.shape == features.shape


def test_the_decoder_uses_the_maps_and_refuses_to_run_without_them() -> None:
    torch.manual_seed(0)
    sam = build_sam(HIGH_RES)
    predictor = BatchedSamPredictor(sam)
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    emb = predictor.encode([image])
    assert emb.high_res is not None
    points = (torch.tensor([[[20.0, 30.0]]]), torch.tensor([[1.0]]))
    before = predictor.decode(emb, [0], *points).low_res_logits
    emb.high_res = (emb.high_res[0] + 1.0, emb.high_res[1])  # a change at stride 4 alone
    assert not torch.allclose(predictor.decode(emb, [0], *points).low_res_logits, before)
    with pytest.raises(ValueError, match="high_res"):
        decode_masks(sam, emb.features, points=points)
    with pytest.raises(ValueError, match="high_res"):
        decode_masks(build_sam(MICRO_SAM), emb.features, points=points, high_res=emb.high_res)


def test_a_fresh_model_decodes_exactly_as_one_without_the_maps() -> None:
    # The projections start at zero (our choice, models/sam.py), so training starts from plain SAM.
    high_res = build_sam(HIGH_RES)
    plain = build_sam(dataclasses.replace(HIGH_RES, high_res_features=False))
    state = {k: v for k, v in high_res.state_dict().items() if ".conv_s" not in k}
    plain.load_state_dict(state, strict=True)
    image = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    points = (torch.tensor([[[40.0, 12.0], [8.0, 50.0]]]), torch.tensor([[1.0, 0.0]]))
    a, b = BatchedSamPredictor(high_res), BatchedSamPredictor(plain)
    ours, theirs = a.decode(a.encode([image]), [0], *points), b.decode(b.encode([image]), [0], *points)
    assert torch.allclose(ours.low_res_logits, theirs.low_res_logits, atol=1e-5)


def test_alignsam_refuses_a_sam_with_the_maps_it_does_not_carry() -> None:
    env = PromptingEnvironment(build_sam(HIGH_RES), grid=4, frame=(64, 64))
    features = torch.rand(1, HIGH_RES.prompt_embed_dim, 4, 4)
    with pytest.raises(ValueError, match="high_res"):
        env.answer(features, Prompts(torch.tensor([[[20.0, 30.0]]]), torch.tensor([[1.0]])))


def test_high_res_needs_two_stem_stages_and_round_trips_through_a_checkpoint(tmp_path: Path) -> None:
    for stem in ((), (16,)):
        with pytest.raises(ValueError, match="two hidden stages"):
            build_sam(dataclasses.replace(HIGH_RES, conv_stem=stem))
    # Headers written before the field existed read as no high-res features.
    old = {k: v for k, v in HIGH_RES.to_dict().items() if k != "high_res_features"}
    assert SamConfig.from_dict(old) == dataclasses.replace(HIGH_RES, high_res_features=False)
    sam = build_sam(HIGH_RES)
    uri = str(tmp_path / "sam.pt")
    save_checkpoint(uri, "sam", HIGH_RES.to_dict(), sam.state_dict())
    loaded, _ = load_sam(uri)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        (_, (a0, a1)), (_, (b0, b1)) = image_features(loaded, x), image_features(sam, x)
    assert torch.equal(a0, b0) and torch.equal(a1, b1)


def micro_pool() -> list[TrainingSample]:
    """Four 64 px noise images with the same two rectangles as instances."""
    rng = np.random.default_rng(0)
    pool = []
    for _ in range(4):
        masks = np.zeros((2, 64, 64), bool)
        masks[0, 8:30, 10:28], masks[1, 36:60, 30:50] = True, True
        pool.append(TrainingSample(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), masks))
    return pool


def test_the_recipe_trains_the_projections_from_zero() -> None:
    sam, summary = train_tiny_sam(HIGH_RES, micro_pool(), TinySamTraining(steps=3, images_per_step=2))
    assert summary["steps_run"] == 3
    for conv in (sam.mask_decoder.conv_s0, sam.mask_decoder.conv_s1):
        assert conv.weight.abs().sum() > 0  # the mask loss reaches them


def test_training_goes_on_from_a_plain_model_that_gains_the_maps() -> None:
    plain_config = dataclasses.replace(HIGH_RES, high_res_features=False)
    plain = build_sam(plain_config)
    start = plain.state_dict()
    # No step run: the model is the plain weights plus zero projections (which decode as the plain
    # model does: test_a_fresh_model_decodes_exactly_as_one_without_the_maps).
    recipe = TinySamTraining(steps=3, images_per_step=2, stop_after=0)
    grown, summary = train_tiny_sam(HIGH_RES, micro_pool(), recipe, start=start)
    assert summary["steps_run"] == 0
    assert all(torch.equal(grown.state_dict()[k], v) for k, v in start.items())
    assert grown.mask_decoder.conv_s0.weight.abs().sum() == 0
    lacking = {k: v for k, v in start.items() if k != "mask_decoder.iou_token.weight"}
    with pytest.raises(ValueError, match="do not fit"):
        train_tiny_sam(HIGH_RES, micro_pool(), recipe, start=lacking)
