"""SAM: resizing, the batched predictor against segment_anything's own predictor, and loading weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor
from segment_anything.utils.transforms import ResizeLongestSide

from maskfactory.infra.checkpoints import read_header, save_checkpoint
from maskfactory.infra.settings import Settings
from maskfactory.models import registry
from maskfactory.models.predictor import BatchedSamPredictor
from maskfactory.models.sam import TINY_SAM, VIT_B, build_sam, load_sam, preprocess_shape, resize_longest_side


@pytest.fixture(scope="module")
def tiny_sam() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_sam(TINY_SAM)


def images(seed: int = 0) -> list[np.ndarray]:
    """Two images of different sizes and aspect ratios (landscape and portrait)."""
    rng = np.random.default_rng(seed)
    return [
        rng.integers(0, 256, (120, 200, 3), dtype=np.uint8),
        rng.integers(0, 256, (90, 60, 3), dtype=np.uint8),
    ]


def test_resize_uses_height_and_width() -> None:
    batch = torch.rand(2, 3, 120, 200)
    assert resize_longest_side(batch, 256).shape == (2, 3, 154, 256)
    assert resize_longest_side(torch.rand(1, 3, 90, 60), 256).shape == (1, 3, 256, 171)
    assert preprocess_shape(120, 200, 256) == (154, 256)
    # segment-anything 1.0 sizes the output from (batch, channels): this is why we resize ourselves.
    assert ResizeLongestSide(256).apply_image_torch(batch).shape[-2:] != (154, 256)


def test_resize_matches_the_reference_numpy_path() -> None:
    """Our torch resize agrees with SAM's own (PIL) resize of uint8 images to within rounding."""
    image = images()[0]
    ours = resize_longest_side(torch.from_numpy(image).permute(2, 0, 1)[None].float(), 256)[0]
    ref = torch.from_numpy(ResizeLongestSide(256).apply_image(image)).permute(2, 0, 1).float()
    assert ours.shape == ref.shape
    assert (ours - ref).abs().mean() < 3.0  # 0..255 scale; different filters, same picture


def test_encoder_runs_once_per_image_and_decoding_never_reencodes(tiny_sam: torch.nn.Module) -> None:
    calls: list[int] = []
    handle = tiny_sam.image_encoder.register_forward_hook(lambda m, inp, out: calls.append(inp[0].shape[0]))
    try:
        predictor = BatchedSamPredictor(tiny_sam)
        emb = predictor.encode(images())
        assert calls == [2]  # one batched pass over both images
        assert emb.features.shape == (2, TINY_SAM.prompt_embed_dim, 16, 16)
        for _ in range(5):  # five prompting steps
            predictor.decode(emb, [0, 1], torch.tensor([[[10.0, 10.0]], [[30.0, 40.0]]]), torch.ones(2, 1))
        assert calls == [2]
    finally:
        handle.remove()


def test_batched_decoder_matches_segment_anythings_predictor(tiny_sam: torch.nn.Module) -> None:
    """Many prompt sets from two images in one decoder call give what SamPredictor gives per image."""
    predictor = BatchedSamPredictor(tiny_sam)
    ims = images()
    emb = predictor.encode(ims)
    # Three prompt sets: two on image 0 (one with a negative click), one on image 1.
    image_index = [0, 0, 1]
    coords = torch.tensor(
        [[[50.0, 60.0], [150.0, 30.0]], [[10.0, 100.0], [190.0, 110.0]], [[30.0, 45.0], [5.0, 80.0]]]
    )
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    boxes = torch.tensor([[40.0, 20.0, 160.0, 100.0], [0.0, 0.0, 199.0, 119.0], [10.0, 10.0, 50.0, 80.0]])
    for multimask in (True, False):
        got = predictor.decode(emb, image_index, coords, labels, boxes=boxes, multimask_output=multimask)
        masks = predictor.upscale(got, emb)
        for k, i in enumerate(image_index):
            ref = SamPredictor(tiny_sam)
            # Our resize for both (SamPredictor normalises and pads itself), so this compares the
            # encoders' inputs exactly and the decoders, not two resize filters.
            resized = resize_longest_side(torch.from_numpy(ims[i]).permute(2, 0, 1)[None].float(), 256)
            ref.set_torch_image(resized, ims[i].shape[:2])
            tr = ref.transform
            ref_masks, ref_iou, ref_low = ref.predict_torch(
                torch.as_tensor(tr.apply_coords(coords[k].numpy(), ims[i].shape[:2]))[None],
                labels[k][None],
                torch.as_tensor(tr.apply_boxes(boxes[k].numpy()[None], ims[i].shape[:2])),
                multimask_output=multimask,
                return_logits=True,
            )
            torch.testing.assert_close(got.low_res_logits[k], ref_low[0], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(got.iou_predictions[k], ref_iou[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(masks[k], ref_masks[0], atol=1e-3, rtol=1e-3)
            assert masks[k].shape[-2:] == ims[i].shape[:2]


def test_mask_input_and_stability_score(tiny_sam: torch.nn.Module) -> None:
    predictor = BatchedSamPredictor(tiny_sam)
    emb = predictor.encode(images())
    first = predictor.decode(emb, [0, 1], torch.tensor([[[20.0, 20.0]], [[20.0, 20.0]]]), torch.ones(2, 1))
    best = first.iou_predictions.argmax(1)
    prev = first.low_res_logits[torch.arange(2), best][:, None]  # (2, 1, 64, 64): SAM's refinement input
    second = predictor.decode(
        emb, [0, 1], torch.tensor([[[20.0, 20.0]], [[20.0, 20.0]]]), torch.ones(2, 1), mask_input=prev
    )
    assert not torch.allclose(first.low_res_logits, second.low_res_logits)
    score = predictor.stability_score(second.low_res_logits)
    assert score.shape == (2, 3) and bool(((score >= 0) & (score <= 1)).all())


def test_bad_images_and_prompts_are_refused(tiny_sam: torch.nn.Module) -> None:
    predictor = BatchedSamPredictor(tiny_sam)
    with pytest.raises(ValueError, match="uint8"):
        predictor.encode([np.zeros((10, 10, 3), dtype=np.float32)])
    with pytest.raises(ValueError, match="at least one"):
        predictor.encode([])
    emb = predictor.encode(images())
    with pytest.raises(ValueError, match="image embeddings"):
        predictor.decode(emb, [0], torch.zeros(2, 1, 2), torch.ones(2, 1))


@pytest.mark.slow
def test_official_vit_b_file_loads_identically_from_disk_and_s3(tmp_path: Path, s3_bucket: str) -> None:
    """vit_b with random weights, saved as the official file format (a bare ``torch.save`` of the state
    dict), loads back through the loader from a local path and from S3 with identical outputs."""
    torch.manual_seed(0)
    sam = build_sam(VIT_B)
    local = str(tmp_path / "sam_vit_b.pth")
    torch.save(sam.state_dict(), local)
    remote = f"{s3_bucket}/weights/sam_vit_b.pth"
    with open(local, "rb") as f:
        from maskfactory.infra import storage

        storage.write_bytes(remote, f.read())
    assert read_header(remote) is None  # an official file has no maskfactory header

    image = images()[0]
    point = (torch.tensor([[[100.0, 60.0]]]), torch.ones(1, 1))

    def run(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        p = BatchedSamPredictor(model)
        emb = p.encode([image])
        pred = p.decode(emb, [0], *point)
        return emb.features, pred.low_res_logits

    expected = run(sam)
    del sam
    for uri in (local, remote):
        loaded, version = load_sam(uri, VIT_B)
        got = run(loaded)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
        assert len(version) == 12
        del loaded
    with pytest.raises(ValueError, match="SamConfig"):
        load_sam(local)  # an official file does not say which architecture it is


def test_maskfactory_sam_checkpoint_carries_its_config(tmp_path: Path, tiny_sam: torch.nn.Module) -> None:
    uri = str(tmp_path / "tiny.pt")
    version = save_checkpoint(uri, "sam", TINY_SAM.to_dict(), tiny_sam.state_dict())
    loaded, got_version = load_sam(uri)  # no config needed: the header has it
    assert got_version == version
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), tiny_sam.state_dict().values(), strict=True)
    )
    with pytest.raises(ValueError, match="different SAM architecture"):
        load_sam(uri, VIT_B)


def test_registry_resolves_names_and_refuses_to_guess(tmp_path: Path, tiny_sam: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="nothing is downloaded"):
        registry.load_sam_model("vit_b")
    with pytest.raises(KeyError, match="unknown model"):
        registry.get_spec("vit_xxl")
    missing = str(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        registry.load_sam_model("tiny-sam", checkpoint=missing)
    uri = str(tmp_path / "tiny.pt")
    version = save_checkpoint(uri, "sam", TINY_SAM.to_dict(), tiny_sam.state_dict())
    # Settings choose the model and checkpoint when no name is given.
    model, got = registry.load_sam_model(
        settings=Settings(sam_model="tiny-sam", sam_checkpoint=uri, device="cpu")
    )
    assert got == version and model.image_encoder.img_size == 256
    with pytest.raises(ValueError, match="not a sam model"):
        registry.load_sam_model("tiny-clip", checkpoint=uri)
