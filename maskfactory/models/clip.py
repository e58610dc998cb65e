"""open_clip models from a config plus a checkpoint URI, with the offline tokenizer.

``open_clip.create_model(name, pretrained=...)`` downloads weights from a hub; here a model is built
from its config (a built-in open_clip config such as ``ViT-B-16``, or our own ``TINY_CLIP``) and its
weights come from any fsspec URI. The tokenizer is open_clip's ``SimpleTokenizer``, whose BPE
vocabulary ships inside the open_clip package, so tokenising needs no network. Configs that need a
HuggingFace tokenizer or text tower (``hf_tokenizer_name``, ``hf_model_name``) would download one and
are refused.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.tokenizer import SimpleTokenizer

from maskfactory.infra.checkpoints import load_checkpoint
from maskfactory.infra.settings import Settings
from maskfactory.models.stem import ConvStem

# tiny-clip: our choice, sized to train contrastively on the synthetic world on a CPU.
# 256 px images (the world's own size) with 16 px patches give a 16x16 token grid, the same grid as
# tiny-sam's embedding, so CLIP Surgery's text maps line up with SAM's patches. The patch embedding is a
# convolutional stem (``conv_stem``, models/stem.py): with open_clip's single linear projection the
# tower did not learn the six shapes in the CPU budget, and at 128 px (objects 9-19 px across) it
# confused stars, crosses and triangles (benchmarks/RESULTS.md). A thin stem keeps the full resolution
# affordable (the stem takes about a tenth of a training step). Three residual 3x3 convolutions at the
# stem's 32x32 stage (``conv_stem_blocks``) let each token see more of its object's outline: at equal
# steps they lifted held-out zero-shot top-1 from 0.34 to 0.44 (800-step probes), and a full run
# from 0.77 to 0.83 (``7b495a5b238e``), for about a fifth more time per step.
# The text tower keeps CLIP's BPE vocabulary (49408 tokens: the offline tokenizer's) at width 64; a
# context of 32 tokens fits every world caption.
TINY_CLIP: dict[str, Any] = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 256, "layers": 4, "width": 128, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 3},
    "conv_stem": [32, 64],
    "conv_stem_blocks": 3,
}


def named_config(name: str) -> dict[str, Any]:
    """A copy of one of open_clip's built-in model configs (e.g. ``ViT-B-16``)."""
    config = open_clip.get_model_config(name)
    if config is None:
        raise KeyError(f"open_clip has no model config {name!r}")
    return copy.deepcopy(config)


def _check_offline(config: dict[str, Any]) -> None:
    text = config.get("text_cfg", {})
    for key in ("hf_tokenizer_name", "hf_model_name"):
        if text.get(key):
            raise ValueError(
                f"this CLIP config needs the HuggingFace download {text[key]!r} ({key}); "
                "only configs that use open_clip's bundled BPE tokenizer work offline"
            )


def build_clip(config: dict[str, Any]) -> open_clip.CLIP:
    """A randomly initialised open_clip CLIP of this config, in eval mode."""
    _check_offline(config)
    cfg = copy.deepcopy(config)
    # Keys open_clip's factory consumes itself rather than passing to CLIP().
    for key in ("custom_text", "multimodal_cfg"):
        if cfg.pop(key, None):
            raise ValueError(f"CLIP configs with {key!r} are not supported")
    # Ours, not open_clip's: applied after open_clip builds the ViT.
    stem, stem_blocks = cfg.pop("conv_stem", None), cfg.pop("conv_stem_blocks", 0)
    model = open_clip.CLIP(**cfg)
    if stem:
        vision = cfg["vision_cfg"]
        model.visual.conv1 = ConvStem(stem, vision["width"], vision["patch_size"], stem_blocks)
    return model.eval()


def tokenizer_for(config: dict[str, Any]) -> SimpleTokenizer:
    """The offline BPE tokenizer with the model's context length."""
    _check_offline(config)
    return SimpleTokenizer(context_length=config.get("text_cfg", {}).get("context_length", 77))


def image_normalization(config: dict[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) for 0..1 RGB inputs: the config's own, else OpenAI CLIP's."""
    vision = config.get("vision_cfg", {})
    mean = vision.get("image_mean", open_clip.OPENAI_DATASET_MEAN)
    std = vision.get("image_std", open_clip.OPENAI_DATASET_STD)
    return tuple(mean), tuple(std)


@dataclass
class LoadedClip:
    model: open_clip.CLIP
    tokenizer: SimpleTokenizer  # tokenizer(list[str]) -> (N, context_length) int64 token ids
    version: str  # checkpoint content hash
    image_size: int  # px, square input
    mean: tuple[float, float, float]  # per-channel normalisation of 0..1 RGB
    std: tuple[float, float, float]


def load_clip(
    config: dict[str, Any], checkpoint_uri: str, settings: Settings | None = None, device: str = "cpu"
) -> LoadedClip:
    """Build CLIP from ``config`` and load weights from any URI (open_clip state dict or maskfactory file).

    A maskfactory checkpoint of kind ``clip`` carries its own config, which then wins over ``config``.
    """
    ckpt = load_checkpoint(checkpoint_uri, settings, map_location="cpu")
    if ckpt.kind == "clip":
        config = ckpt.config
    elif ckpt.kind != "state_dict":
        raise ValueError(f"{checkpoint_uri} is a {ckpt.kind!r} checkpoint, not CLIP weights")
    model = build_clip(config)
    # Checkpoints saved from DistributedDataParallel prefix every key with "module.".
    state_dict = {k.removeprefix("module."): v for k, v in ckpt.state_dict.items()}
    model.load_state_dict(state_dict, strict=True)
    size = config["vision_cfg"]["image_size"]
    mean, std = image_normalization(config)
    return LoadedClip(
        model=model.to(device),
        tokenizer=tokenizer_for(config),
        version=ckpt.version,
        image_size=size if isinstance(size, int) else size[0],
        mean=mean,
        std=std,
    )


def square_resize(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8, antialiased."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, (size, size), mode="bilinear", antialias=True, align_corners=False)
    return x[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()


def normalize_images(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(N, S, S, 3) uint8 -> (N, 3, S, S) float normalised as CLIP expects."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
