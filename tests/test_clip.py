"""open_clip models from a config and a checkpoint URI, with the offline tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from maskfactory.infra.checkpoints import save_checkpoint
from maskfactory.infra.settings import Settings
from maskfactory.models import registry
from maskfactory.models.clip import TINY_CLIP, build_clip, load_clip, named_config, tokenizer_for

CAPTIONS = ["a red car", "the shadow of a tree", "a blurred region", ""]


def encode(model: torch.nn.Module, tokenizer: object, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    image = torch.rand(2, 3, size, size)
    with torch.no_grad():
        return model.encode_image(image), model.encode_text(tokenizer(CAPTIONS))  # type: ignore[operator]


def test_offline_tokenizer_uses_the_models_context_length() -> None:
    tokens = tokenizer_for(TINY_CLIP)(CAPTIONS)  # runs under the no-network guard
    assert tokens.shape == (4, 32) and tokens.dtype == torch.long
    assert tokenizer_for(named_config("ViT-B-16"))(CAPTIONS).shape == (4, 77)
    assert not torch.equal(tokens[0], tokens[1])


def test_tiny_clip_through_s3_gives_identical_outputs(s3_bucket: str) -> None:
    torch.manual_seed(0)
    model = build_clip(TINY_CLIP)
    uri = f"{s3_bucket}/zoo/tiny-clip.pt"
    version = save_checkpoint(uri, "clip", TINY_CLIP, model.state_dict())
    loaded = load_clip({}, uri)  # the header carries the config
    assert loaded.version == version and loaded.image_size == 256
    want, got = encode(model, loaded.tokenizer, 256), encode(loaded.model, loaded.tokenizer, 256)
    assert want[0].shape == (2, 128) and want[1].shape == (4, 128)  # embed_dim 128
    assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])


@pytest.mark.slow
def test_full_size_open_clip_config_from_an_official_style_file(tmp_path: Path) -> None:
    """A built-in open_clip config (ViT-B-16) with random weights saved as a bare state dict, with the
    "module." prefix DistributedDataParallel adds, loads back with identical outputs."""
    config = named_config("ViT-B-16")
    torch.manual_seed(0)
    model = build_clip(config)
    path = str(tmp_path / "open_clip_vit_b_16.pt")
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    loaded = load_clip(config, path)
    want, got = encode(model, loaded.tokenizer, 224), encode(loaded.model, loaded.tokenizer, 224)
    assert want[0].shape == (2, 512)
    assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])


def test_configs_that_need_a_download_are_refused() -> None:
    config = named_config("ViT-B-16")
    config["text_cfg"]["hf_tokenizer_name"] = "some-org/some-tokenizer"
    with pytest.raises(ValueError, match="HuggingFace download"):
        build_clip(config)
    with pytest.raises(KeyError):
        named_config("ViT-Nonexistent-99")


def test_registry_loads_clip_from_settings(tmp_path: Path) -> None:
    torch.manual_seed(0)
    uri = str(tmp_path / "tiny-clip.pt")
    version = save_checkpoint(uri, "clip", TINY_CLIP, build_clip(TINY_CLIP).state_dict())
    loaded = registry.load_clip_model(
        settings=Settings(clip_model="tiny-clip", clip_checkpoint=uri, device="cpu")
    )
    assert loaded.version == version
    sam_file = str(tmp_path / "sam.pt")
    save_checkpoint(sam_file, "sam", {}, {"w": torch.zeros(1)})
    with pytest.raises(ValueError, match="not CLIP weights"):
        load_clip(TINY_CLIP, sam_file)
