"""CLIP Surgery (Li et al. 2023): text-guided similarity maps from an open_clip ViT, without retraining.

AlignSAM's explicit SRM branch weighs the SAM state by how much each image region matches the task's
text prompt ("glass", "a photo of a star"). A plain CLIP's patch tokens match text poorly (its maps
light up the background), and CLIP Surgery fixes that in two steps:

1. **Architecture surgery.** In the last ``surgery_blocks`` transformer blocks a second stream runs
   beside the original one. It takes the same input as the original attention (``ln_1`` of the
   original stream) but attends value-to-value (``softmax(v v^T / sqrt(d)) v``) and skips the MLP;
   its output is summed into the new stream, which starts as a copy of the tokens entering the
   first surgery block. The original stream is left exactly as CLIP computes it, so its class token
   is CLIP's image feature.
2. **Feature surgery.** Tokens are L2-normalised over the feature dimension (the fix of the
   reference code's issue #35), and the similarity is taken against the text feature minus the
   feature of the empty prompt: what every prompt shares is redundant and would otherwise dominate.
   Each map is min-max normalised over the patches.

Choices the papers leave open, made here:
- ``surgery_blocks`` defaults to half the depth (CLIP Surgery uses the last 6 of ViT-B's 12).
- Prompts are encoded as given, without CLIP Surgery's ensemble of 80 templates: the tiny-clip zoo
  model is trained on the very prompts AlignSAM sends ("shadow", "a photo of a star"), and a user can
  pass any wording they like.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

from maskfactory.models.clip import LoadedClip, normalize_images, square_resize


class ClipSurgery:
    """Similarity maps of images against text prompts, batched over both.

    ``maps(images, prompts)`` takes images normalised as the CLIP expects, (B, 3, S, S), and returns
    (B, P, g, g) maps in [0, 1] on the patch grid (g = S / patch size); ``upsample`` resizes them.
    """

    def __init__(self, clip: LoadedClip, surgery_blocks: int | None = None) -> None:
        visual = clip.model.visual
        if not isinstance(visual, VisionTransformer):
            raise TypeError(f"CLIP Surgery needs an open_clip ViT, got {type(visual).__name__}")
        if visual.attn_pool is not None or visual.final_ln_after_pool:
            raise ValueError(
                "CLIP Surgery supports ViTs whose tokens pass ln_post and proj (no attention pool)"
            )
        if not visual.transformer.batch_first:
            raise ValueError("CLIP Surgery expects a batch-first open_clip transformer")
        depth = len(visual.transformer.resblocks)
        self.surgery_blocks = default_surgery_blocks(visual) if surgery_blocks is None else surgery_blocks
        if not 1 <= self.surgery_blocks <= depth:
            raise ValueError(f"surgery_blocks must be in 1..{depth}, got {surgery_blocks}")
        self.clip = clip
        self.visual = visual

    @property
    def grid_size(self) -> int:
        """Side of the patch grid, g."""
        return self.visual.grid_size[0]

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) -> CLIP's image feature (B, E) and the surgery stream's patch tokens (B, g*g, E),
        both projected into the joint embedding space and not normalised."""
        return two_stream_forward(self.visual, images, self.surgery_blocks)

    @torch.no_grad()
    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """P prompts -> (P, E) L2-normalised text features."""
        return F.normalize(self.clip.model.encode_text(self.clip.tokenizer(list(prompts))), dim=-1)

    @torch.no_grad()
    def similarity(
        self, images: torch.Tensor, prompts: Sequence[str], remove_redundancy: bool = True
    ) -> torch.Tensor:
        """Raw similarity of every patch to every prompt, (B, g*g, P).

        ``remove_redundancy=False`` gives plain cosine similarity (for comparison: it is what the
        feature surgery removes).
        """
        _, patches = self.encode_image(images)
        patches = F.normalize(patches, dim=-1)  # over the feature dimension, per token
        text = self.encode_text(prompts)
        if remove_redundancy:
            text = text - self.encode_text([""])  # the empty prompt: what every prompt shares
        return patches @ text.T

    def maps(
        self, images: torch.Tensor, prompts: Sequence[str], remove_redundancy: bool = True
    ) -> torch.Tensor:
        """(B, 3, S, S) images and P prompts -> (B, P, g, g) maps, each min-max normalised to [0, 1]."""
        sim = self.similarity(images, prompts, remove_redundancy).transpose(1, 2)  # (B, P, N)
        low = sim.min(-1, keepdim=True).values
        high = sim.max(-1, keepdim=True).values
        sim = (sim - low) / (high - low).clamp(min=1e-8)  # a constant map becomes all zeros
        g = self.grid_size
        return sim.reshape(sim.shape[0], sim.shape[1], g, g)

    def sam_frame_maps(
        self,
        images: Sequence[np.ndarray],
        prompts: Sequence[str],
        input_sizes: Sequence[tuple[int, int]],
        frame_size: int,
        out_size: int,
    ) -> torch.Tensor:
        """Each image's map for its own prompt, laid onto SAM's square input frame: (B, out, out).

        images: B (H, W, 3) uint8 (any sizes; CLIP sees each squashed to its square input).
        input_sizes: each image's (h, w) inside SAM's ``frame_size`` px input, where the rest is
        padding; the map covers the image there and is 0 on the padding.
        """
        x = np.stack([square_resize(im, self.clip.image_size) for im in images])
        x = normalize_images(x, self.clip.mean, self.clip.std).to(self.visual.positional_embedding.device)
        unique = sorted(set(prompts))
        maps = self.maps(x, unique)  # (B, P, g, g): every distinct prompt once per image
        own = maps[torch.arange(len(prompts)), [unique.index(p) for p in prompts]]
        out = own.new_zeros(len(prompts), out_size, out_size)
        for i, (h, w) in enumerate(input_sizes):
            hh, ww = max(1, round(h * out_size / frame_size)), max(1, round(w * out_size / frame_size))
            out[i, :hh, :ww] = upsample(own[i][None, None], (hh, ww))[0, 0]
        return out


def default_surgery_blocks(visual: VisionTransformer) -> int:
    """How many of the last blocks carry the surgery stream unless told: half the depth."""
    return len(visual.transformer.resblocks) // 2


def two_stream_forward(
    visual: VisionTransformer,
    images: torch.Tensor,
    surgery_blocks: int,
    positions: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ViT with the surgery stream in its last ``surgery_blocks`` blocks, differentiable (the
    tiny-clip recipe trains through it). (B, 3, S, S) -> CLIP's image feature (B, E) and the surgery
    stream's patch tokens (B, g*g, E), both projected and not normalised.

    ``positions`` (B, g*g) long: for images that are crops of the model's input size, the index of
    each crop token in the full token grid (row-major), so that a token gets the position embedding
    of the place it was cut from. None: the images are full size.
    """
    v = visual
    x = v.conv1(images).flatten(2).transpose(1, 2)  # (B, N, W)
    cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    embedding = v.positional_embedding.to(x.dtype)  # (1 + G*G, W), the class token's first
    if positions is not None:
        embedding = torch.cat([embedding[:1].expand(len(x), 1, -1), embedding[1 + positions]], dim=1)
    x = v.ln_pre(torch.cat([cls, x], dim=1) + embedding)
    blocks = list(v.transformer.resblocks)
    start = len(blocks) - surgery_blocks
    for block in blocks[:start]:
        x = block(x)
    original, surgery = x, x
    for block in blocks[start:]:
        attended, value_value = _two_stream_attention(block, block.ln_1(original))
        surgery = surgery + block.ls_1(value_value)  # the new stream skips the MLP
        original = original + block.ls_1(attended)
        original = original + block.ls_2(block.mlp(block.ln_2(original)))
    image_feature = v.ln_post(original[:, 0]) @ v.proj
    patches = v.ln_post(surgery[:, 1:]) @ v.proj
    return image_feature, patches


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, P, g, g) -> (B, P, H, W) bilinear, for display or to match another grid."""
    return F.interpolate(maps, size, mode="bilinear", align_corners=False)


def _two_stream_attention(
    block: ResidualAttentionBlock, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The block's attention on x (B, L, W) two ways, from its own weights: query-key (CLIP's) and
    value-value (the surgery stream's). Returns both outputs, each (B, L, W), after out_proj."""
    attn = block.attn
    b, n, w = x.shape
    heads = attn.num_heads
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.reshape(b, n, heads, w // heads).transpose(1, 2) for t in (q, k, v))  # (B, h, L, d)
    original = F.scaled_dot_product_attention(q, k, v)
    value_value = F.scaled_dot_product_attention(v, v, v)

    def merge(t: torch.Tensor) -> torch.Tensor:  # (B, h, L, d) -> (B, L, W), through out_proj
        return attn.out_proj(t.transpose(1, 2).reshape(b, n, w))

    return merge(original), merge(value_value)
