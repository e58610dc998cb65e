"""SAM: architecture configs, a builder from segment_anything's own classes, a URI loader, and resizing.

``segment_anything.build_sam`` hard-codes 1024 px inputs and 256-channel prompts, and loads weights
with ``torch.load(f)`` (no ``map_location``, so GPU-saved files fail on a CPU). We build the same
modules from a :class:`SamConfig` instead: the official ``vit_h``/``vit_l``/``vit_b`` configs produce
state dicts with the official key names (official ``.pth`` files load with ``strict=True``), and
``tiny-sam`` is the same architecture at small width and 256 px.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from maskfactory.infra.checkpoints import load_checkpoint
from maskfactory.infra.settings import Settings
from maskfactory.models.stem import ConvStem


@dataclass(frozen=True)
class SamConfig:
    """Every width and size that defines a SAM model."""

    image_size: int = 1024  # encoder input, px (square, after resize + pad)
    patch_size: int = 16  # px per ViT patch: the embedding grid is image_size / patch_size
    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    encoder_global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    encoder_window_size: int = 14  # windowed attention in the other blocks
    prompt_embed_dim: int = 256  # channels of the image embedding and of every prompt token
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_hidden_dim: int = 256
    num_multimask_outputs: int = 3
    # Channels of a convolutional patch embedding (models/stem.py) in place of SAM's single patch
    # projection; empty for the official models.
    conv_stem: tuple[int, ...] = ()
    conv_stem_blocks: int = 0  # residual 3x3 convs inside that stem (ConvStem's ``blocks``)
    # px of the stem's first (patchify) conv; 0: patch_size / 2^len(conv_stem), every later conv at
    # stride 2. Set by :func:`finer_grid`, whose stems end with a stride-1 conv.
    conv_stem_patchify: int = 0
    # SAM 2's high-resolution features (Ravi et al. 2024): the stem's stride-4 and stride-8 maps,
    # projected by 1x1 convs, are added inside the decoder's two upscaling steps, so mask edges can
    # follow detail finer than a token. Needs a conv stem of two or more stride-2 stages. Probed for
    # tiny-sam and not adopted (benchmarks/RESULTS.md); AlignSAM's environment does not pass the maps
    # yet, so its decoder calls refuse such a SAM.
    high_res_features: bool = False

    @property
    def embedding_size(self) -> int:
        """Side of the image-embedding grid (64 for official SAM, 16 for tiny-sam)."""
        return self.image_size // self.patch_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SamConfig:
        d = dict(d)
        d["encoder_global_attn_indexes"] = tuple(d["encoder_global_attn_indexes"])
        d["conv_stem"] = tuple(d.get("conv_stem", ()))
        return cls(**d)


# The official sizes (segment_anything/build_sam.py).
VIT_H = SamConfig(
    encoder_embed_dim=1280,
    encoder_depth=32,
    encoder_num_heads=16,
    encoder_global_attn_indexes=(7, 15, 23, 31),
)
VIT_L = SamConfig(
    encoder_embed_dim=1024,
    encoder_depth=24,
    encoder_num_heads=16,
    encoder_global_attn_indexes=(5, 11, 17, 23),
)
VIT_B = SamConfig()
# tiny-sam: our choice, sized so it trains on the synthetic world on a 2-core CPU and ships in a few MB.
# 256 px with 16 px patches gives a 16x16 embedding grid (low-res masks 64x64); 8 px patches
# (finer_grid) fit small objects better but cost 4-5 times as much per step (RESULTS.md). Window 8
# tiles the grid in 2x2 windows; two of the four blocks attend globally, as in the official models' ratio.
TINY_SAM = SamConfig(
    image_size=256,
    encoder_embed_dim=128,
    encoder_depth=4,
    encoder_num_heads=4,
    encoder_global_attn_indexes=(1, 3),
    encoder_window_size=8,
    prompt_embed_dim=128,
    decoder_mlp_dim=512,
    decoder_num_heads=4,
    iou_head_hidden_dim=128,
    # A convolutional patch embedding: at equal steps it beat SAM's single 16 px projection on all five
    # natural tasks (benchmarks/tiny_sam_stem.py, RESULTS.md), at 1% more time per step.
    conv_stem=(32, 64),
)


def build_sam(config: SamConfig) -> Sam:
    """A randomly initialised SAM of this config, in eval mode."""
    grid = config.embedding_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=config.image_size,
            patch_size=config.patch_size,
            embed_dim=config.encoder_embed_dim,
            depth=config.encoder_depth,
            num_heads=config.encoder_num_heads,
            mlp_ratio=4,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            global_attn_indexes=config.encoder_global_attn_indexes,
            window_size=config.encoder_window_size,
            out_chans=config.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=config.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=config.decoder_depth,
                embedding_dim=config.prompt_embed_dim,
                mlp_dim=config.decoder_mlp_dim,
                num_heads=config.decoder_num_heads,
            ),
            transformer_dim=config.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
        ),
        # ImageNet mean/std in 0..255 units, as in the official models.
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    if config.conv_stem:
        stem = ConvStem(
            config.conv_stem,
            config.encoder_embed_dim,
            config.patch_size,
            config.conv_stem_blocks,
            config.conv_stem_patchify or None,
        )
        sam.image_encoder.patch_embed.proj = stem
    if config.high_res_features:
        if len(config.conv_stem) < 2 or config.conv_stem_patchify:
            # The decoder adds the maps at strides 4 and 8 of 16 px tokens: a stem of stride-2 convs.
            raise ValueError("high_res_features needs a conv_stem of two hidden stages or more, at stride 2")
        # On the decoder, as in SAM 2: the projections are trained with the mask loss. Their output
        # channels are those of the two upscaling steps they are added to (C / 4, then C / 8).
        c = config.prompt_embed_dim
        sam.mask_decoder.conv_s1 = torch.nn.Conv2d(config.conv_stem[-1], c // 4, 1)  # stride 8
        sam.mask_decoder.conv_s0 = torch.nn.Conv2d(config.conv_stem[-2], c // 8, 1)  # stride 4
        # Our choice: zero at the start, so a fresh model decodes exactly as one without them and the
        # maps come in as training finds them useful; and a trained plain SAM given them (the
        # ``start`` of train_tiny_sam) goes on from the very masks it made.
        for conv in (sam.mask_decoder.conv_s0, sam.mask_decoder.conv_s1):
            torch.nn.init.zeros_(conv.weight)
            torch.nn.init.zeros_(conv.bias)
    return sam.eval()


def finer_grid(config: SamConfig) -> SamConfig:
    """``config`` with patches half as large: twice the tokens per side (4x the tokens) at the same
    image size, so the decoder's masks come out at twice the resolution (128x128 for tiny-sam).

    Windows keep their size in pixels (twice the tokens per side), and a conv stem keeps its patchify
    conv, its last conv running at stride 1 (:class:`~maskfactory.models.stem.ConvStem`), so that the
    weights of a trained model of ``config`` fit it (:func:`finer_grid_weights`).
    """
    if not config.conv_stem or config.conv_stem_patchify:
        raise ValueError("finer_grid needs a conv stem whose convs all have stride 2")
    return replace(
        config,
        patch_size=config.patch_size // 2,
        encoder_window_size=2 * config.encoder_window_size,
        conv_stem_patchify=config.patch_size // 2 ** len(config.conv_stem),
    )


def finer_grid_weights(
    state: dict[str, torch.Tensor], coarse: SamConfig, fine: SamConfig
) -> dict[str, torch.Tensor]:
    """A state dict of a ``coarse`` SAM, turned into one for ``fine = finer_grid(coarse)``.

    Only the position tables depend on the token grid. The absolute position embedding (1, g, g, D) is
    resampled bilinearly to (1, 2g, 2g, D), token centres to token centres. Each block's relative
    position tables (2L - 1, head_dim) are read at half the token distance (one fine token is half a
    coarse one), linearly between entries and held at the ends. Every other tensor is kept as it is.
    """
    if fine != finer_grid(coarse):
        raise ValueError("finer_grid_weights converts weights of a config to those of finer_grid(config)")
    if state["image_encoder.pos_embed"].shape[1] != coarse.embedding_size:
        raise ValueError(f"these weights are not of a {coarse.embedding_size}x{coarse.embedding_size} grid")
    ratio = fine.patch_size / coarse.patch_size  # fine tokens per coarse token's distance: 1/2
    out = dict(state)
    pos = state["image_encoder.pos_embed"].permute(0, 3, 1, 2)
    out["image_encoder.pos_embed"] = F.interpolate(
        pos, size=fine.embedding_size, mode="bilinear", align_corners=False
    ).permute(0, 2, 3, 1)
    for i in range(fine.encoder_depth):
        side = fine.embedding_size if i in fine.encoder_global_attn_indexes else fine.encoder_window_size
        for axis in ("h", "w"):
            key = f"image_encoder.blocks.{i}.attn.rel_pos_{axis}"
            table = state[key]  # (2L - 1, head_dim); row r is the distance r - (L - 1) tokens
            distance = torch.arange(2 * side - 1) - (side - 1)  # fine tokens
            at = (distance * ratio + (table.shape[0] - 1) / 2).clamp(0, table.shape[0] - 1)
            lo = at.floor().long().clamp(max=table.shape[0] - 2)
            w = (at - lo)[:, None]
            out[key] = (1 - w) * table[lo] + w * table[lo + 1]
    return out


HighRes = tuple[torch.Tensor, torch.Tensor]  # (B, C/8, 4g, 4g) stride-4 and (B, C/4, 2g, 2g) stride-8


def pick_high_res(high_res: HighRes | None, index: torch.Tensor) -> HighRes | None:
    """The maps of the images ``index`` picks (one per prompt set, say); None stays None."""
    return None if high_res is None else (high_res[0][index], high_res[1][index])


def uses_high_res(sam: Sam) -> bool:
    """Whether ``sam`` was built with ``high_res_features`` (its decoder needs them)."""
    return hasattr(sam.mask_decoder, "conv_s0")


def image_features(sam: Sam, x: torch.Tensor) -> tuple[torch.Tensor, HighRes | None]:
    """(B, 3, S, S) preprocessed images -> the image embedding (B, C, g, g) and, for a SAM with
    ``high_res_features``, the projected stem maps its decoder adds (else None)."""
    enc = sam.image_encoder
    if not uses_high_res(sam):
        return enc(x), None
    # ImageEncoderViT.forward, step by step, to keep the stem's finer stages on the way.
    stages = enc.patch_embed.proj.stages(x)
    tokens = stages[-1].permute(0, 2, 3, 1)  # (B, g, g, D), as PatchEmbed returns
    if enc.pos_embed is not None:
        tokens = tokens + enc.pos_embed
    for block in enc.blocks:
        tokens = block(tokens)
    dec = sam.mask_decoder
    return enc.neck(tokens.permute(0, 3, 1, 2)), (dec.conv_s0(stages[-3]), dec.conv_s1(stages[-2]))


def load_sam(
    checkpoint_uri: str,
    config: SamConfig | None = None,
    settings: Settings | None = None,
    device: str = "cpu",
) -> tuple[Sam, str]:
    """Build SAM and load weights from any URI: an official ``.pth`` or a maskfactory checkpoint.

    An official file is a bare state dict, so ``config`` must say which architecture it is; a
    maskfactory checkpoint carries its config in its header (``config``, if given, must match it).
    Returns the model on ``device`` in eval mode and the checkpoint's version hash.
    """
    ckpt = load_checkpoint(checkpoint_uri, settings, map_location="cpu")
    if ckpt.kind == "sam":
        stored = SamConfig.from_dict(ckpt.config)
        if config is not None and config != stored:
            raise ValueError(f"{checkpoint_uri} holds a different SAM architecture than asked for")
        config = stored
    elif ckpt.kind != "state_dict":
        raise ValueError(f"{checkpoint_uri} is a {ckpt.kind!r} checkpoint, not SAM weights")
    elif config is None:
        raise ValueError(f"{checkpoint_uri} is an official (headerless) file: say which SamConfig it is")
    sam = build_sam(config)
    sam.load_state_dict(ckpt.state_dict, strict=True)
    return sam.to(device), ckpt.version


def preprocess_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(h, w) after scaling so the longer side is ``long_side`` px, rounded as SAM rounds."""
    scale = long_side / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_longest_side(images: torch.Tensor, long_side: int) -> torch.Tensor:
    """Resize (B, C, H, W) float images so the longer side is ``long_side``; aspect ratio kept.

    segment-anything 1.0's ``ResizeLongestSide.apply_image_torch`` computes the size from
    ``shape[0], shape[1]`` (batch and channels) instead of H and W; this takes them from the last two.
    """
    h, w = images.shape[-2:]
    size = preprocess_shape(h, w, long_side)
    return F.interpolate(images, size, mode="bilinear", align_corners=False, antialias=True)
