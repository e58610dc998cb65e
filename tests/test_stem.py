"""The convolutional patch embedding of the zoo's ViTs, in tiny-clip and in SAM configs."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from micro_models import MICRO_SAM

from maskfactory.infra.checkpoints import save_checkpoint
from maskfactory.models.clip import TINY_CLIP, build_clip
from maskfactory.models.sam import SamConfig, build_sam, load_sam
from maskfactory.models.stem import ConvStem


def test_the_stem_has_the_patch_projections_output_shape() -> None:
    stem = ConvStem([16, 32], width=48, patch_size=16)  # a 4 px patchify conv, then two stride-2 convs
    assert stem(torch.rand(2, 3, 64, 64)).shape == (2, 48, 4, 4)
    for hidden, patch in (([16, 32], 4), ([16, 32], 10), ([], 16)):
        with pytest.raises(ValueError, match="cannot make"):
            ConvStem(hidden, width=48, patch_size=patch)


def test_residual_blocks_run_at_the_last_hidden_stage_and_leave_plain_stems_as_they_were() -> None:
    plain, deep = ConvStem([16, 32], 48, 16), ConvStem([16, 32], 48, 16, blocks=2)
    assert deep(torch.rand(2, 3, 64, 64)).shape == (2, 48, 4, 4)
    # Two blocks on the 32-channel map, just before the stride-2 conv that makes the tokens.
    assert [type(m).__name__ for m in deep][-5:] == [
        "ResidualConv",
        "ResidualConv",
        "GroupNorm",
        "GELU",
        "Conv2d",
    ]
    assert deep[-4].norm.num_channels == 32
    # Without blocks the layer indices, and so the state-dict keys of shipped checkpoints, are unchanged.
    keys = ["0.weight", "1.weight", "1.bias", "3.weight", "4.weight", "4.bias", "6.weight", "6.bias"]
    assert list(plain.state_dict()) == keys


def test_a_clip_config_asks_for_stem_blocks() -> None:
    model = build_clip({**TINY_CLIP, "conv_stem_blocks": 1})
    assert sum(type(m).__name__ == "ResidualConv" for m in model.visual.conv1) == 1


def test_tiny_clip_embeds_patches_with_the_stem() -> None:
    model = build_clip(TINY_CLIP)
    assert isinstance(model.visual.conv1, ConvStem)
    assert model.encode_image(torch.rand(1, 3, 256, 256)).shape == (1, TINY_CLIP["embed_dim"])
    plain = build_clip({k: v for k, v in TINY_CLIP.items() if k != "conv_stem"})
    assert isinstance(plain.visual.conv1, torch.nn.Conv2d)


def test_a_sam_config_with_a_stem_round_trips_through_its_checkpoint(tmp_path) -> None:
    config = dataclasses.replace(MICRO_SAM, conv_stem=(8, 16), conv_stem_blocks=1)  # 16 px patches
    sam = build_sam(config)
    assert isinstance(sam.image_encoder.patch_embed.proj, ConvStem)
    assert sum(type(m).__name__ == "ResidualConv" for m in sam.image_encoder.patch_embed.proj) == 1
    assert sam.image_encoder(torch.rand(1, 3, 64, 64)).shape == (1, 32, 4, 4)
    assert SamConfig.from_dict(config.to_dict()) == config
    # Headers written before the fields existed read as no stem.
    old = {k: v for k, v in MICRO_SAM.to_dict().items() if k not in ("conv_stem", "conv_stem_blocks")}
    assert SamConfig.from_dict(old) == MICRO_SAM
    uri = str(tmp_path / "sam.pt")
    save_checkpoint(uri, "sam", config.to_dict(), sam.state_dict())
    loaded, _ = load_sam(uri)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.image_encoder(x), sam.image_encoder(x))


def test_zoo_eval_measures_a_candidate_tiny_sam_of_another_architecture(tmp_path) -> None:
    # A recipe under study (here: a stem) is measured from its own header, before it replaces the zoo's.
    from maskfactory.simulators.datasets import write_dataset
    from maskfactory.tasks.zoo import evaluate_tiny_sam

    config = dataclasses.replace(MICRO_SAM, conv_stem=(8, 16))
    uri = str(tmp_path / "candidate.pt")
    version = save_checkpoint(uri, "sam", config.to_dict(), build_sam(config).state_dict())
    write_dataset(str(tmp_path / "data"), "saliency", n=1, seed=3)
    result = evaluate_tiny_sam(str(tmp_path / "data"), uri, max_clicks=2)
    assert result["version"] == version and result["n"] >= 1 and 0 <= result["mIoU@1"] <= 1
