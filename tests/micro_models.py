"""Model configs small enough for tests to build, run and even train in seconds."""

from __future__ import annotations

from maskfactory.models.sam import SamConfig

# 64 px inputs, a 4x4 embedding grid, 16x16 low-res masks.
MICRO_SAM = SamConfig(
    image_size=64,
    encoder_embed_dim=32,
    encoder_depth=2,
    encoder_num_heads=2,
    encoder_global_attn_indexes=(1,),
    encoder_window_size=2,
    prompt_embed_dim=32,
    decoder_mlp_dim=64,
    decoder_num_heads=2,
    iou_head_hidden_dim=32,
)
