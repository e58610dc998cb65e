"""A trained SAM rebuilt with patches half as large (``finer_grid``), the capacity probe for tiny-sam."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from micro_models import MICRO_SAM

from maskfactory.models.predictor import decode_masks
from maskfactory.models.sam import SamConfig, build_sam, finer_grid, finer_grid_weights
from maskfactory.models.stem import ConvStem

COARSE = dataclasses.replace(MICRO_SAM, conv_stem=(8, 16))  # 64 px, 16 px patches: a 4x4 grid


def test_a_stem_with_a_larger_patchify_conv_ends_at_stride_one_and_samples_the_same_features() -> None:
    torch.manual_seed(0)
    coarse = ConvStem([16, 32], 48, patch_size=16)
    fine = ConvStem([16, 32], 48, patch_size=8, patchify=4)
    fine.load_state_dict(coarse.state_dict())  # the same layers and shapes; only a stride differs
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        dense = fine(x)
        assert dense.shape == (2, 48, 8, 8)
        assert torch.allclose(dense[..., ::2, ::2], coarse(x), atol=1e-6)
    for patchify in (3, 16):  # no power of two away from the patch; larger than the patch
        with pytest.raises(ValueError, match="cannot make"):
            ConvStem([16, 32], 48, patch_size=8, patchify=patchify)


def test_finer_grid_halves_the_patches_and_keeps_windows_and_stem_in_pixels() -> None:
    fine = finer_grid(COARSE)
    assert (fine.patch_size, fine.embedding_size) == (8, 8)
    assert fine.encoder_window_size == 2 * COARSE.encoder_window_size
    assert fine.conv_stem_patchify == 4  # the coarse stem's own patchify conv
    assert SamConfig.from_dict(fine.to_dict()) == fine
    with pytest.raises(ValueError, match="conv stem"):
        finer_grid(MICRO_SAM)  # SAM's single patch projection has no conv to run at stride 1
    with pytest.raises(ValueError, match="stride 2"):
        finer_grid(fine)  # once only: its last conv already has stride 1
    with pytest.raises(ValueError, match="high_res_features"):
        build_sam(dataclasses.replace(fine, high_res_features=True))


def test_a_coarse_models_weights_load_into_the_finer_grid_and_decode_twice_as_fine_masks() -> None:
    torch.manual_seed(0)
    coarse_sam, fine = build_sam(COARSE), finer_grid(COARSE)
    for name, p in coarse_sam.image_encoder.named_parameters():  # SAM starts these tables at zero
        if "rel_pos" in name or name == "pos_embed":
            p.data.normal_()
    state = finer_grid_weights(coarse_sam.state_dict(), COARSE, fine)
    fine_sam = build_sam(fine)
    fine_sam.load_state_dict(state, strict=True)
    # Relative position tables: a distance of 2d fine tokens reads the coarse entry of d tokens.
    global_block = COARSE.encoder_global_attn_indexes[0]
    key = f"image_encoder.blocks.{global_block}.attn.rel_pos_h"
    old, new = coarse_sam.state_dict()[key], state[key]
    assert new.shape[0] == 2 * fine.embedding_size - 1
    centre_old, centre_new = (old.shape[0] - 1) // 2, (new.shape[0] - 1) // 2
    for d in range(-(old.shape[0] // 2), old.shape[0] // 2 + 1):
        assert torch.allclose(new[centre_new + 2 * d], old[centre_old + d])
    # Held at the ends: distances beyond the coarse table's read its last entry.
    assert torch.equal(new[-1], old[-1]) and torch.equal(new[0], old[0])
    assert state["image_encoder.pos_embed"].shape == (1, 8, 8, COARSE.encoder_embed_dim)
    with pytest.raises(ValueError, match="finer_grid"):
        finer_grid_weights(coarse_sam.state_dict(), COARSE, COARSE)
    with pytest.raises(ValueError, match="not of a 4x4 grid"):  # converting twice would misread the tables
        finer_grid_weights(state, COARSE, fine)
    with torch.no_grad():
        features = fine_sam.image_encoder(torch.rand(1, 3, 64, 64))
        assert features.shape == (1, COARSE.prompt_embed_dim, 8, 8)
        points = (torch.tensor([[[32.0, 32.0]]]), torch.tensor([[1.0]]))
        logits, iou = decode_masks(fine_sam, features, points=points)
    assert logits.shape == (1, 4, 32, 32) and iou.shape == (1, 4)  # 4g x 4g: twice the coarse 16x16
