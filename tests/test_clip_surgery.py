"""CLIP Surgery: shapes, the untouched original stream, and what the redundancy removal does."""

from __future__ import annotations

import pytest
import torch

from maskfactory.models.clip import (
    TINY_CLIP,
    LoadedClip,
    build_clip,
    image_normalization,
    named_config,
    tokenizer_for,
)
from maskfactory.models.clip_surgery import ClipSurgery, upsample

PROMPTS = ["a photo of a star", "shadow", "glass"]


def random_clip(config: dict, seed: int = 0) -> LoadedClip:
    torch.manual_seed(seed)
    size = config["vision_cfg"]["image_size"]
    return LoadedClip(
        build_clip(config).eval(), tokenizer_for(config), "random", size, *image_normalization(config)
    )


def test_maps_have_one_normalised_grid_per_image_and_prompt() -> None:
    surgery = ClipSurgery(random_clip(TINY_CLIP))
    images = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    maps = surgery.maps(images, PROMPTS)
    assert surgery.grid_size == 16 and surgery.surgery_blocks == 2  # half of tiny-clip's 4 blocks
    assert maps.shape == (2, 3, 16, 16)
    flat = maps.flatten(2)
    assert torch.allclose(flat.min(-1).values, torch.zeros(2, 3))
    assert torch.allclose(flat.max(-1).values, torch.ones(2, 3))
    assert upsample(maps, (128, 96)).shape == (2, 3, 128, 96)
    # Batched equals one at a time: nothing is shared across the batch.
    assert torch.allclose(surgery.maps(images[1:], PROMPTS), maps[1:], atol=1e-5)


def test_the_original_stream_is_clips_own_image_feature() -> None:
    loaded = random_clip(TINY_CLIP)
    images = torch.randn(3, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    feature, patches = ClipSurgery(loaded).encode_image(images)
    with torch.no_grad():
        assert torch.allclose(feature, loaded.model.encode_image(images), atol=1e-5)
    assert patches.shape == (3, 256, 128)


def test_the_surgery_stream_differs_from_clips_tokens() -> None:
    """With every block operated on, patch tokens are no longer CLIP's own tokens."""
    loaded = random_clip(TINY_CLIP)
    images = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(2))
    one = ClipSurgery(loaded, surgery_blocks=1).encode_image(images)[1]
    four = ClipSurgery(loaded, surgery_blocks=4).encode_image(images)[1]
    assert not torch.allclose(one, four, atol=1e-3)
    with pytest.raises(ValueError, match="surgery_blocks"):
        ClipSurgery(loaded, surgery_blocks=5)


def test_redundancy_removal_subtracts_what_every_prompt_shares() -> None:
    """Against the empty prompt itself the similarity is exactly zero after removal, and removal
    changes the maps: without it they are plain cosine similarities, shared component included."""
    surgery = ClipSurgery(random_clip(TINY_CLIP))
    images = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(3))
    assert torch.equal(surgery.similarity(images, [""]), torch.zeros(2, 256, 1))
    plain = surgery.similarity(images, PROMPTS, remove_redundancy=False)
    removed = surgery.similarity(images, PROMPTS)
    empty = surgery.similarity(images, [""], remove_redundancy=False)
    assert torch.allclose(removed, plain - empty, atol=1e-5)


def test_full_size_open_clip_vit() -> None:
    """ViT-B-16 (random weights, 224 px, 14x14 patches): the same code path as tiny-clip."""
    surgery = ClipSurgery(random_clip(named_config("ViT-B-16")))
    maps = surgery.maps(torch.randn(1, 3, 224, 224), ["a photo of a dog", "shadow"])
    assert surgery.surgery_blocks == 6 and maps.shape == (1, 2, 14, 14)


def test_non_vit_towers_are_refused() -> None:
    config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    with pytest.raises(TypeError, match="ViT"):
        ClipSurgery(random_clip(config))
