"""Batched SAM prediction: one encoder pass per image, many prompt sets (from many images) per decoder call.

``segment_anything.SamPredictor`` holds one image at a time, and ``MaskDecoder.predict_masks`` repeats a
single image embedding for every prompt set, so neither can decode prompt sets of several images in one
call. Here every prompt set names its image (``image_index``), embeddings are gathered per prompt set,
and the decoder's own modules (two-way transformer, upscaling, hypernetworks, IoU head) run once on the
whole batch. An auto-labeller stepping T prompts over B images makes T decoder calls, not T x B.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from segment_anything.modeling import Sam
from segment_anything.utils.amg import calculate_stability_score

from maskfactory.models.sam import HighRes, image_features, pick_high_res, resize_longest_side, uses_high_res


@dataclass
class ImageEmbeddings:
    """Encoder output for a batch of images."""

    features: torch.Tensor  # (B, C, g, g) SAM image embeddings, g = image_size / patch_size
    input_sizes: list[tuple[int, int]]  # (h, w) of each image after resizing, before padding
    original_sizes: list[tuple[int, int]]  # (H, W) of each image as given
    high_res: HighRes | None = None  # the stem's maps for a SAM with high_res_features (models/sam.py)

    def __len__(self) -> int:
        return self.features.shape[0]

    def input_scales(self) -> torch.Tensor:
        """(B, 2): per image, x and y factors from original pixels to the resized input frame
        (x by resized width / original width, y by the heights: SAM's apply_coords)."""
        return torch.tensor(
            [
                [iw / ow, ih / oh]
                for (ih, iw), (oh, ow) in zip(self.input_sizes, self.original_sizes, strict=True)
            ],
            device=self.features.device,
        )


@dataclass
class Prediction:
    """Decoder output for M prompt sets, K masks each (K = 3 with multimask output, else 1)."""

    low_res_logits: torch.Tensor  # (M, K, 4g, 4g) mask logits on the padded input frame
    iou_predictions: torch.Tensor  # (M, K) SAM's own estimate of each mask's IoU
    image_index: torch.Tensor  # (M,) which image each prompt set belongs to


class BatchedSamPredictor:
    """Encode images once, then decode any number of prompt sets per call.

    Coordinates in and masks out are in each image's original pixels; points are (x, y) and labels
    are 1 (positive), 0 (negative) or -1 (padding, so prompt sets of unequal length can share a batch).
    """

    def __init__(self, sam: Sam, bf16_encoder: bool = False) -> None:
        """``bf16_encoder``: run the image encoder under bfloat16 autocast (about 2.5x faster for vit_b
        on CPU, with small numeric differences); the decoder always runs in float32."""
        self.sam = sam.eval()
        self.bf16_encoder = bf16_encoder

    @property
    def device(self) -> torch.device:
        return self.sam.device

    @property
    def image_size(self) -> int:
        return self.sam.image_encoder.img_size

    def preprocess(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """(H, W, 3) uint8 RGB -> ((3, S, S) normalised and padded input, (h, w) resized size)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1)[None].float()
        x = resize_longest_side(x, self.image_size)
        input_size = (int(x.shape[-2]), int(x.shape[-1]))
        return self.sam.preprocess(x)[0], input_size

    @torch.no_grad()
    def encode(self, images: Sequence[np.ndarray]) -> ImageEmbeddings:
        """Run the image encoder once per image, all images in one batch."""
        if not images:
            raise ValueError("encode() needs at least one image")
        inputs, input_sizes = zip(*(self.preprocess(im) for im in images), strict=True)
        autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16_encoder else nullcontext()
        )
        with autocast:
            features, high_res = image_features(self.sam, torch.stack(inputs))
        return ImageEmbeddings(
            features=features.float(),
            input_sizes=list(input_sizes),
            original_sizes=[(im.shape[0], im.shape[1]) for im in images],
            high_res=None if high_res is None else (high_res[0].float(), high_res[1].float()),
        )

    @torch.no_grad()
    def decode(
        self,
        embeddings: ImageEmbeddings,
        image_index: torch.Tensor | Sequence[int],
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> Prediction:
        """Decode M prompt sets in one call.

        image_index: (M,) image of each prompt set. point_coords: (M, P, 2) x/y in original pixels;
        point_labels: (M, P). boxes: (M, 4) x0, y0, x1, y1 in original pixels. mask_input: (M, 1, 4g, 4g)
        low-res logits from an earlier step (SAM's iterative refinement).
        """
        idx = torch.as_tensor(image_index, dtype=torch.long, device=self.device)
        points = None
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_coords needs point_labels")
            coords = self._to_input_frame(point_coords.to(self.device, torch.float32), embeddings, idx)
            points = (coords, point_labels.to(self.device, torch.float32))
        if boxes is not None:
            corners = boxes.to(self.device, torch.float32).reshape(-1, 2, 2)
            boxes = self._to_input_frame(corners, embeddings, idx).reshape(-1, 4)
        if mask_input is not None:
            mask_input = mask_input.to(self.device, torch.float32)
        high_res = pick_high_res(embeddings.high_res, idx)
        logits, iou = decode_masks(self.sam, embeddings.features[idx], points, boxes, mask_input, high_res)
        keep = slice(1, None) if multimask_output else slice(0, 1)
        return Prediction(logits[:, keep], iou[:, keep], idx)

    def _to_input_frame(
        self, coords: torch.Tensor, embeddings: ImageEmbeddings, idx: torch.Tensor
    ) -> torch.Tensor:
        """(M, P, 2) original-pixel coordinates -> the resized input frame, per prompt set's image."""
        return coords * embeddings.input_scales().to(self.device)[idx][:, None, :]

    def upscale(self, prediction: Prediction, embeddings: ImageEmbeddings) -> list[torch.Tensor]:
        """Mask logits at original resolution: one (K, H, W) tensor per prompt set."""
        out = []
        for logits, i in zip(prediction.low_res_logits, prediction.image_index.tolist(), strict=True):
            out.append(
                self.sam.postprocess_masks(
                    logits[None], embeddings.input_sizes[i], embeddings.original_sizes[i]
                )[0]
            )
        return out

    def stability_score(self, low_res_logits: torch.Tensor, offset: float = 1.0) -> torch.Tensor:
        """SAM's stability score (IoU of the masks thresholded at +offset and -offset), same leading shape."""
        return calculate_stability_score(low_res_logits, self.sam.mask_threshold, offset)


def decode_masks(
    sam: Sam,
    features: torch.Tensor,
    points: tuple[torch.Tensor, torch.Tensor] | None = None,
    boxes: torch.Tensor | None = None,
    mask_input: torch.Tensor | None = None,
    high_res: HighRes | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's prompt encoder and mask decoder with one image embedding per prompt set (differentiable).

    features: (M, C, g, g) image embedding of each prompt set's image. points: ((M, P, 2) x/y in the
    encoder's input frame, (M, P) labels). boxes: (M, 4) in the input frame. mask_input: (M, 1, 4g, 4g).
    high_res: the stem maps of each prompt set's image, required by (and only by) a SAM built with
    ``high_res_features``; they are added in the two upscaling steps, as SAM 2's decoder does.
    Returns every mask token's logits (M, 1 + num_multimask_outputs, 4g, 4g) and IoU predictions
    (M, 1 + num_multimask_outputs); token 0 is the single-mask answer, the rest the multimask ones.
    """
    sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
    dec = sam.mask_decoder
    m = features.shape[0]
    if sparse.shape[0] != m:
        raise ValueError(f"{sparse.shape[0]} prompt sets but {m} image embeddings")
    output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    tokens = torch.cat([output_tokens.unsqueeze(0).expand(m, -1, -1), sparse], dim=1)
    src = features + dense
    pos = sam.prompt_encoder.get_dense_pe().expand(m, -1, -1, -1)
    b, c, h, w = src.shape
    hs, src = dec.transformer(src, pos, tokens)
    iou_token, mask_tokens = hs[:, 0], hs[:, 1 : 1 + dec.num_mask_tokens]
    if (high_res is not None) != uses_high_res(sam):
        raise ValueError("high_res features are needed by, and only by, a SAM built with high_res_features")
    src = src.transpose(1, 2).reshape(b, c, h, w)
    if high_res is None:
        upscaled = dec.output_upscaling(src)
    else:
        up1, norm1, act1, up2, act2 = dec.output_upscaling
        upscaled = act2(up2(act1(norm1(up1(src) + high_res[1]))) + high_res[0])
    hyper = torch.stack(
        [mlp(mask_tokens[:, i]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], dim=1
    )
    b, c, h, w = upscaled.shape
    masks = (hyper @ upscaled.reshape(b, c, h * w)).reshape(b, -1, h, w)
    return masks, dec.iou_prediction_head(iou_token)
