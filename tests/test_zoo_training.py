"""The zoo's training recipes: they learn, and the same seed gives the same weights."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from micro_models import MICRO_SAM
from scipy.ndimage import distance_transform_edt

from maskfactory.models.clip import (
    LoadedClip,
    build_clip,
    image_normalization,
    normalize_images,
    tokenizer_for,
)
from maskfactory.models.clip_surgery import ClipSurgery, default_surgery_blocks, two_stream_forward
from maskfactory.models.interactive import SamClickSegmenter
from maskfactory.models.predictor import BatchedSamPredictor
from maskfactory.models.sam import build_sam
from maskfactory.models.zoo import train_clip, train_sam
from maskfactory.models.zoo.common import WeightAverage, deterministic_algorithms, out_of_budget
from maskfactory.models.zoo.train_clip import (
    CaptionedImage,
    TinyClipTraining,
    _consistency_loss,
    _crop_offsets,
    _full_image_odds,
    _object_crops,
    _token_targets,
    dihedral_views,
    train_tiny_clip,
    zero_shot_accuracy,
)
from maskfactory.models.zoo.train_sam import (
    TinySamTraining,
    TrainingSample,
    _batch,
    _logits_at,
    _next_points,
    _point_loss,
    train_tiny_sam,
    zoom_crop,
)
from maskfactory.simulators.clicker import Click

COLORS = {"red": (230, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 230)}


def squares(n: int, seed: int, size: int = 64) -> list[tuple[np.ndarray, np.ndarray, list[str]]]:
    """Images with two or three coloured squares on grey noise: (image, instances, colour names)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        image = rng.integers(90, 150, (size, size, 3), dtype=np.uint8)
        masks, names = [], []
        taken = np.zeros((size, size), bool)
        for _ in range(int(rng.integers(2, 4))):
            side = int(rng.integers(12, 24))
            y, x = rng.integers(0, size - side, 2)
            m = np.zeros((size, size), bool)
            m[y : y + side, x : x + side] = True
            m &= ~taken  # later squares are occluded by earlier ones
            if m.sum() < 40:
                continue
            name = list(COLORS)[int(rng.integers(3))]
            image[m] = COLORS[name]
            taken |= m
            masks.append(m)
            names.append(name)
        out.append((image, np.stack(masks), names))
    return out


def one_click_iou(sam: torch.nn.Module, data: list[tuple[np.ndarray, np.ndarray, list[str]]]) -> float:
    """Mean IoU of the mask from one positive click at each instance's centre-most pixel."""
    segmenter = SamClickSegmenter(BatchedSamPredictor(sam))
    ious = []
    for image, masks, _ in data:
        segmenter.start(image)
        for m in masks:
            y, x = np.unravel_index(distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1].argmax(), m.shape)
            pred = segmenter.predict([Click(float(x), float(y), True)])
            ious.append((pred & m).sum() / (pred | m).sum())
            segmenter.start(image)
    return float(np.mean(ious))


def test_sam_recipe_learns_and_is_reproducible() -> None:
    """On held-out images, one-click IoU rises well above an untrained model's (0.07 -> 0.32 seen)."""
    torch.set_num_threads(2)
    pool = [TrainingSample(im, ms) for im, ms, _ in squares(48, seed=0)]
    held_out = squares(12, seed=1)
    training = TinySamTraining(
        steps=250, images_per_step=8, instances_per_image=2, correction_iters=1, warmup_steps=10, lr=3e-3
    )
    torch.manual_seed(0)
    before = one_click_iou(build_sam(MICRO_SAM), held_out)
    sam, summary = train_tiny_sam(MICRO_SAM, pool, training)
    after = one_click_iou(sam, held_out)
    assert summary["steps_run"] == summary["steps"] == 250
    assert after > before + 0.15, (before, after)
    again, _ = train_tiny_sam(MICRO_SAM, pool, TinySamTraining(**{**training.__dict__, "steps": 5}))
    twice, _ = train_tiny_sam(MICRO_SAM, pool, TinySamTraining(**{**training.__dict__, "steps": 5}))
    assert all(
        torch.equal(a, b)
        for a, b in zip(again.state_dict().values(), twice.state_dict().values(), strict=True)
    )


def test_weight_average_moves_a_fraction_of_the_way_each_update() -> None:
    """Each update moves the average ``1 - decay`` of the way to the weights; frozen ones are left alone."""
    layer = torch.nn.Linear(2, 1)
    frozen = torch.nn.Linear(2, 1).requires_grad_(False)
    frozen_weight = frozen.weight.clone()
    model = torch.nn.Sequential(layer, frozen)
    with torch.no_grad():
        layer.weight.zero_()
    average = WeightAverage(model, decay=0.75)
    assert len(average.params) == 2  # the frozen layer is not averaged
    for value in (4.0, 8.0):
        with torch.no_grad():
            layer.weight.fill_(value)
        average.update()
    average.write_to_model()
    # 0 -> 0.75 * 0 + 0.25 * 4 = 1 -> 0.75 * 1 + 0.25 * 8 = 2.75
    assert torch.allclose(layer.weight, torch.full((1, 2), 2.75))
    assert torch.equal(frozen.weight, frozen_weight)
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(model, decay=1.0)


def test_ema_decay_returns_the_average_of_the_same_run() -> None:
    """With ``ema_decay`` the run is the same step for step; only the weights it returns are averaged."""
    pool = [TrainingSample(im, ms) for im, ms, _ in squares(16, seed=0)]
    recipe = TinySamTraining(steps=4, images_per_step=4, instances_per_image=2, correction_iters=1)

    def weights(training: TinySamTraining) -> dict[str, torch.Tensor]:
        return dict(train_tiny_sam(MICRO_SAM, pool, training)[0].named_parameters())

    # The weights after 0..4 steps of one run: stop_after ends it early with the schedule unchanged.
    path = [weights(replace(recipe, stop_after=k)) for k in range(5)]
    averaged = weights(replace(recipe, ema_decay=0.75))
    for name, value in averaged.items():
        expected = path[0][name]
        for w in path[1:]:
            expected = 0.75 * expected + 0.25 * w[name]
        assert torch.allclose(value, expected, atol=1e-6), name
    token = "mask_decoder.iou_token.weight"
    assert not torch.equal(averaged[token], path[-1][token])  # not the last step's weights


def test_deterministic_algorithms_are_on_inside_and_put_back_after() -> None:
    """The context turns torch's deterministic algorithms on and restores both settings, also on error."""
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_algorithms():
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()  # strict: fail, not warn
    assert not torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with pytest.raises(RuntimeError, match="inside"), deterministic_algorithms():
            raise RuntimeError("inside")
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def test_every_training_step_runs_with_deterministic_algorithms(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both recipes take each step with deterministic algorithms on (so a run repeats when other work
    shares the cores; benchmarks/RESULTS.md) and leave the setting off for the code that called them."""
    seen = []

    def spy(original):
        def call(*args, **kwargs):
            seen.append(torch.are_deterministic_algorithms_enabled())
            return original(*args, **kwargs)

        return call

    monkeypatch.setattr(train_sam, "_step_loss", spy(train_sam._step_loss))
    monkeypatch.setattr(train_clip, "two_stream_forward", spy(two_stream_forward))
    pool = [TrainingSample(im, ms) for im, ms, _ in squares(8, seed=0)]
    train_tiny_sam(MICRO_SAM, pool, TinySamTraining(steps=2, images_per_step=4, instances_per_image=2))
    assert seen == [True, True]
    train_tiny_clip(
        _micro_clip_config(64), _squares_pool(8), TinyClipTraining(steps=2, batch_size=4, crops=0)
    )
    assert seen == [True] * 4
    assert not torch.are_deterministic_algorithms_enabled()


def test_recipe_options_off_the_shipped_path_train_reproducibly() -> None:
    """The point loss, the full-resolution IoU target and zoom crops (probes, benchmarks/RESULTS.md): a
    short run changes the weights, and the same seed gives the same weights."""
    pool = [TrainingSample(im, ms) for im, ms, _ in squares(16, seed=0)]
    training = TinySamTraining(
        steps=5,
        images_per_step=4,
        instances_per_image=2,
        correction_iters=1,
        loss_points=256,
        full_res_iou=True,
        zoom_crop_prob=0.5,
    )
    torch.manual_seed(0)
    fresh = build_sam(MICRO_SAM).state_dict()
    again, twice = (train_tiny_sam(MICRO_SAM, pool, training)[0].state_dict() for _ in range(2))
    assert all(torch.equal(again[k], twice[k]) for k in again)
    assert not all(torch.equal(again[k], fresh[k]) for k in fresh)


def test_zoom_crop_magnifies_the_framed_instance_and_drops_what_it_cuts_to_slivers() -> None:
    """A 64 px image: an 8 px red square framed by a 16 px crop comes back 4 times as large and still
    red; a blue square the crop cuts to 8 px (the world's smallest object at 64 px is 16) is dropped; a
    green one outside it is gone. Framing the blue square keeps it alone."""
    image = torch.full((3, 64, 64), 100.0)
    masks = torch.zeros(3, 64, 64, dtype=torch.bool)
    masks[0, 20:28, 20:28] = True  # framed: its 16 px crop is rows and columns 16-31
    masks[1, 31:40, 20:28] = True  # one row inside that crop
    masks[2, 50:60, 50:60] = True
    for mask, colour in zip(masks, ([200.0, 0, 0], [0, 0, 200.0], [0, 200.0, 0]), strict=True):
        image[:, mask] = torch.tensor(colour)[:, None]
    training = TinySamTraining(zoom_crop_sides=(16, 16), zoom_crop_expansion=(1.0, 1.0))
    rng = np.random.default_rng(0)
    crop, kept = zoom_crop(image, masks, 0, training, rng)
    assert crop.shape == (3, 64, 64) and kept.shape == (1, 64, 64)
    assert abs(int(kept[0].sum()) - 32 * 32) <= 2 * 32 + 4  # bilinear edges: a pixel either way
    assert kept[0, 17:47, 17:47].all() and not kept[0, :15].any() and not kept[0, :, 49:].any()
    assert torch.allclose(crop[:, 24:40, 24:40], torch.tensor([200.0, 0, 0])[:, None, None])
    crop, kept = zoom_crop(image, masks, 1, training, rng)  # rows 28-43: red ends at 27
    assert kept.shape == (1, 64, 64) and int(kept[0].sum()) > 9 * 8 * 16 - 2 * 36 - 4
    assert torch.allclose(crop[:, 30:40, 24:40], torch.tensor([0, 0, 200.0])[:, None, None])


def test_batches_with_zoom_crops_show_the_instances_magnified() -> None:
    """With every image zoomed (crops of 32 to 48 px of 64), a batch's instances are well over twice as
    large as those of a batch drawn with the same seed and no zoom (2.7 times seen)."""
    pool = [TrainingSample(im, ms) for im, ms, _ in squares(16, seed=0)]
    images = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1).float() for s in pool])
    instances = [torch.from_numpy(s.instances) for s in pool]
    areas = {}
    for prob in (0.0, 1.0):
        training = TinySamTraining(images_per_step=16, zoom_crop_prob=prob, zoom_crop_sides=(32, 32))
        x, gt, index = _batch(images, instances, training, np.random.default_rng(0))
        assert x.shape == (16, 3, 64, 64) and gt.shape[1:] == (64, 64) and len(index) == len(gt)
        areas[prob] = gt.sum((1, 2)).mean().item()
    assert areas[1.0] > 2 * areas[0.0], areas


def test_train_only_refits_the_iou_head_and_holds_the_rest() -> None:
    """``train_only`` moves the named parameters alone; a prefix that names none is an error."""
    pool = [TrainingSample(im, ms) for im, ms, _ in squares(16, seed=0)]
    torch.manual_seed(0)
    start = build_sam(MICRO_SAM).state_dict()
    head = "mask_decoder.iou_prediction_head"
    training = TinySamTraining(
        steps=3, images_per_step=4, instances_per_image=2, correction_iters=1, train_only=head
    )
    after = train_tiny_sam(MICRO_SAM, pool, training, start=start)[0].state_dict()
    moved = {k for k in start if not torch.equal(after[k], start[k])}
    assert moved and all(k.startswith(head) for k in moved), moved
    with pytest.raises(ValueError, match="no parameter"):
        train_tiny_sam(MICRO_SAM, pool, replace(training, train_only="decoder"), start=start)


def test_point_loss_reads_the_logits_sam_upsamples_at_full_resolution() -> None:
    """The loss reads SAM's bilinear upsampling at full-resolution pixels; an edge one cell off costs."""
    gen = torch.Generator().manual_seed(0)
    low = torch.randn(3, 1, 16, 16, generator=gen) * 4
    up = torch.nn.functional.interpolate(low, (64, 64), mode="bilinear", align_corners=False)
    pixels = torch.randint(64 * 64, (3, 200), generator=gen)
    assert torch.allclose(_logits_at(low, pixels, 64), up.reshape(3, -1).gather(1, pixels), atol=1e-5)

    # A square object 22 px across whose edge falls inside 4 px cells: the grid sees fractions there.
    gt = torch.zeros(1, 64, 64)
    gt[0, 21:43, 21:43] = 1.0
    right = torch.where(gt[:, None] > 0, 8.0, -8.0)  # logits whose upsampled edge is the object's
    right = torch.nn.functional.avg_pool2d(right, 4)  # on the decoder's 16x16 grid
    shifted = right.roll(1, dims=-1)  # the same mask one cell (4 px) to the right
    training = TinySamTraining(loss_points=256)
    loss = _point_loss(torch.cat([right, shifted], dim=1), gt, training, gen)
    assert loss.shape == (1, 2) and loss[0, 0] < 0.5 * loss[0, 1], loss


def upsampled(logits_low: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A prediction as the training step hands it on: upsampled 4x as SAM does, and on its own grid."""
    up = torch.nn.functional.interpolate(logits_low[:, None], scale_factor=4, mode="bilinear")[:, 0]
    return up > 0, logits_low > 0


def test_training_clicks_follow_the_error() -> None:
    """Deepest-point clicks land where RITM's clicker clicks (on the 64x64 grid, at the cell centre);
    uniform ones land inside the error with its label; nothing to correct gives a padding point."""
    gt = torch.zeros(2, 256, 256)
    gt[:, 64:192, 96:160] = 1.0  # a 128 x 64 box
    gt_low = torch.nn.functional.avg_pool2d(gt[:, None], 4)[:, 0]
    empty = torch.full((2, 64, 64), -5.0)  # low-res logits of an empty prediction
    gen = torch.Generator().manual_seed(0)
    deepest = TinySamTraining(deepest_point_prob=1.0)
    coords, labels = _next_points(gt, gt_low, *upsampled(empty), deepest, gen)
    assert labels.tolist() == [[1.0], [1.0]]
    x, y = coords[0, 0].tolist()
    # On the box's central ridge: 32 px (8 cells) from both long sides, at least as far from the ends.
    assert 124 <= x <= 132 and 92 <= y <= 164, (x, y)

    too_big = empty.clone()
    too_big[:, 8:56, 16:48] = 5.0  # a prediction reaching 32 px beyond the box on every side
    uniform = TinySamTraining(deepest_point_prob=0.0)
    coords, labels = _next_points(gt, gt_low, *upsampled(too_big), uniform, gen)
    for (x, y), label in zip(coords[:, 0].long().tolist(), labels[:, 0].tolist(), strict=True):
        assert label == 0.0 and gt[0, y, x] == 0  # a negative click on the false alarm
        assert 32 <= y < 224 and 64 <= x < 192

    nothing = torch.zeros_like(gt)  # an empty target and an empty prediction: nothing to correct
    _, labels = _next_points(nothing, nothing[:, ::4, ::4], *upsampled(empty), deepest, gen)
    assert labels.tolist() == [[-1.0], [-1.0]]


def test_segmenter_encodes_each_image_once() -> None:
    torch.manual_seed(0)
    sam = build_sam(MICRO_SAM)
    calls: list[int] = []
    sam.image_encoder.register_forward_hook(lambda *_: calls.append(1))
    segmenter = SamClickSegmenter(BatchedSamPredictor(sam))
    image = squares(1, seed=3)[0][0]
    for _ in range(3):  # three objects of one image
        segmenter.start(image)
        first = segmenter.predict([Click(10, 10, True)])
        second = segmenter.predict([Click(10, 10, True), Click(40, 40, False)])
        assert first.shape == second.shape == (64, 64) and first.dtype == bool
    assert len(calls) == 1
    segmenter.start(image.copy())  # another image object: encoded again
    assert len(calls) == 2


def _micro_clip_config(image_size: int) -> dict:
    """An open_clip config small enough to train in seconds: 8 px patches, two layers."""
    return {
        "embed_dim": 32,
        "vision_cfg": {"image_size": image_size, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }


def test_clip_recipe_learns_colours() -> None:
    """A micro CLIP learns to tell three colours apart zero-shot from captions alone."""
    torch.set_num_threads(2)
    config = _micro_clip_config(32)
    rng = np.random.default_rng(0)

    def plain(name: str) -> np.ndarray:  # a noisy image of one colour
        noise = rng.integers(0, 60, (32, 32, 3))
        return (noise + np.array(COLORS[name]) // 2).clip(0, 255).astype(np.uint8)

    names = list(COLORS)
    pool = [CaptionedImage(plain(names[i % 3]), [f"a {names[i % 3]} image"]) for i in range(60)]
    model, _ = train_tiny_clip(
        config, pool, TinyClipTraining(steps=60, batch_size=24, warmup_steps=5, crops=0)
    )
    labels = [i % 3 for i in range(30)]
    test = normalize_images(np.stack([plain(names[k]) for k in labels]), *image_normalization(config))
    accuracy = zero_shot_accuracy(model, tokenizer_for(config), test, labels, names, template="a {} image")
    assert accuracy > 0.9, accuracy
    # Colours look the same turned or mirrored, so the averaged feature names them as well.
    averaged = zero_shot_accuracy(model, tokenizer_for(config), test, labels, names, "a {} image", views=8)
    assert averaged > 0.9, averaged


def _noise_pool() -> list[CaptionedImage]:
    """Eight noise images under two captions: enough to take training steps, nothing to learn."""
    rng = np.random.default_rng(0)
    return [
        CaptionedImage(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), [f"image {i % 2}"])
        for i in range(8)
    ]


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    weights = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return all(torch.equal(x, y) for x, y in weights)


def test_stop_after_ends_a_run_without_shortening_its_schedule() -> None:
    """``stop_after`` replays a run its time limit cut: the same steps at the full schedule's rates."""
    torch.set_num_threads(2)
    config = _micro_clip_config(32)
    pool = _noise_pool()
    full = TinyClipTraining(steps=6, batch_size=4, warmup_steps=0, crops=0)
    stopped, summary = train_tiny_clip(config, pool, replace(full, stop_after=3))
    again, _ = train_tiny_clip(config, pool, replace(full, stop_after=3))
    short, _ = train_tiny_clip(config, pool, replace(full, steps=3))
    assert summary["steps_run"] == 3 and summary["steps"] == 6
    assert _same_weights(stopped, again)
    assert not _same_weights(stopped, short)  # a 3-step schedule decays faster


def test_stop_after_lifts_the_time_limit() -> None:
    """A replay runs its steps however slow the machine; without ``stop_after`` the limit ends a run."""
    long_ago = time.perf_counter() - 100.0  # a run that started 100 s ago, with a 1 s limit
    assert not out_of_budget(4, long_ago, 1.0, stop_after=5)
    assert out_of_budget(5, long_ago, 1.0, stop_after=5)
    assert out_of_budget(4, long_ago, 1.0, stop_after=None)
    assert not out_of_budget(4, time.perf_counter(), 60.0, stop_after=None)


def test_consistency_is_zero_when_views_agree_and_positive_when_they_differ() -> None:
    logits = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(0))  # (views, B, V)
    assert _consistency_loss(logits[:1]).item() == 0.0
    assert _consistency_loss(torch.stack([logits[0], logits[0] + 3.0])).abs().item() < 1e-6  # same softmax
    assert _consistency_loss(logits).item() > 0.01


def test_views_split_the_batch_and_the_consistency_term_trains() -> None:
    """Two views each of 2 images make a batch of 4: their disagreement is logged, and weighting it
    changes the weights."""
    torch.set_num_threads(2)
    config = _micro_clip_config(32)
    pool = _noise_pool()
    two = TinyClipTraining(steps=50, batch_size=4, warmup_steps=0, views=2, crops=0)
    logged: list[dict[str, float]] = []
    plain, _ = train_tiny_clip(config, pool, two, log=logged.append)
    pulled, _ = train_tiny_clip(config, pool, replace(two, consistency_weight=1.0))
    assert logged[-1]["consistency"] > 0  # noise images look different turned
    assert not _same_weights(plain, pulled)
    with pytest.raises(ValueError, match="multiple of views"):
        train_tiny_clip(config, pool, replace(two, views=3))


def test_dihedral_views_are_the_eight_distinct_turns_and_mirrors() -> None:
    x = torch.arange(9.0).reshape(1, 1, 3, 3)  # no symmetry: every view differs
    views = dihedral_views(x)
    assert torch.equal(views[0], x) and len(views) == 8
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8
    with pytest.raises(ValueError, match="views"):
        zero_shot_accuracy(None, None, x, [0], ["a"], views=4)  # type: ignore[arg-type]


def test_region_targets_mark_object_background_and_edge_tokens() -> None:
    """A token is its region's when the region covers at least half of it, background when no region
    touches it, and has no target over an edge or in an image that brings no regions."""
    region = np.zeros((1, 32, 32), bool)
    region[0, :8, :10] = True  # all of token (0, 0) and a quarter of token (0, 1)
    pool = [
        CaptionedImage(np.zeros((32, 32, 3), np.uint8), ["a red image"], region, [["red"]]),
        CaptionedImage(np.zeros((32, 32, 3), np.uint8), ["a red image"]),
    ]
    index = {c: i for i, c in enumerate(["", "a red image", "red"])}
    token_region, region_truth = _token_targets(pool, 4, index)
    first = token_region[0].reshape(4, 4)
    assert first[0, 0] == 1 and first[0, 1] == -1
    assert (first.flatten()[2:] == 0).all() and first[1, 0] == 0
    assert (token_region[1] == -1).all()
    assert region_truth.tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]  # background, then "red"


def _squares_pool(n: int) -> list[CaptionedImage]:
    """:func:`squares` as tiny-clip trains on them: each square a region captioned with its colour."""
    return [
        CaptionedImage(image, sorted(set(names)), masks, [[name] for name in names])
        for image, masks, names in squares(n, seed=0)
    ]


def test_clip_recipe_learns_where_each_colour_is() -> None:
    """With region captions, CLIP Surgery's map for a colour is high on the squares of that colour."""
    torch.set_num_threads(2)
    config = _micro_clip_config(64)
    pool = _squares_pool(80)
    model, _ = train_tiny_clip(
        config, pool, TinyClipTraining(steps=80, batch_size=16, warmup_steps=5, crops=0)
    )
    surgery = ClipSurgery(LoadedClip(model, tokenizer_for(config), "test", 64, *image_normalization(config)))
    hits = []
    for image, masks, names in squares(10, seed=1):
        x = normalize_images(image[None], *image_normalization(config))
        maps = surgery.maps(x, list(COLORS))[0]  # (3, 8, 8)
        cover = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(masks).float(), 8)
        for name, c in zip(names, cover, strict=True):
            inside, outside = maps[list(COLORS).index(name)][c >= 0.5], maps[list(COLORS).index(name)][c == 0]
            if len(inside) and len(outside):
                hits.append(float(inside.mean() > outside.mean() + 0.3))
    assert np.mean(hits) > 0.9, hits


def _one_region_image(rows: slice, cols: slice, size: int = 64) -> CaptionedImage:
    region = np.zeros((1, size, size), bool)
    region[0, rows, cols] = True
    image = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    return CaptionedImage(image, ["a red image"], region, [["red"]])


def test_crop_offsets_keep_every_region_whole_and_skip_images_that_cannot() -> None:
    """64 px images, 16 px tokens (a 4 x 4 grid), 2 x 2-token crops (32 px)."""
    pool = [
        _one_region_image(slice(20, 30), slice(40, 50)),  # fits: rows 20-29, columns 40-49
        _one_region_image(slice(0, 64), slice(0, 10)),  # taller than a crop
        CaptionedImage(np.zeros((64, 64, 3), np.uint8), ["a photo"]),  # no regions: nothing to keep whole
    ]
    indices, offsets = _crop_offsets(pool, grid=4, cut=2)
    assert indices.tolist() == [0]
    # Rows: a crop from token row 0 (pixels 0-31) or 1 (16-47) holds 20-29; columns: only from token
    # column 2 (pixels 32-63) holds 40-49.
    assert offsets.tolist() == [[[0, 1], [2, 2]]]


def test_object_crops_cut_pixels_targets_and_positions_from_one_place() -> None:
    pool = [_one_region_image(slice(20, 30), slice(40, 50))]
    token_region, _ = _token_targets(pool, 4, {"": 0, "a red image": 1, "red": 2})
    _, offsets = _crop_offsets(pool, grid=4, cut=2)
    images = np.stack([p.image for p in pool])
    rng = np.random.default_rng(0)
    which = np.zeros(20, dtype=np.int64)  # one image, cropped 20 times: both allowed rows come up
    crops, regions, positions = _object_crops(images, token_region, which, offsets[which], 2, rng)
    assert crops.shape == (20, 32, 32, 3) and regions.shape == (20, 2, 2) and positions.shape == (20, 4)
    starts = set()
    for crop, region, where in zip(crops, regions, positions, strict=True):
        r, c = divmod(int(where[0]), 4)  # the crop's first token in the full grid
        starts.add((r, c))
        assert where.tolist() == [r * 4 + c, r * 4 + c + 1, (r + 1) * 4 + c, (r + 1) * 4 + c + 1]
        assert np.array_equal(crop, images[0, 16 * r : 16 * r + 32, 16 * c : 16 * c + 32])
        assert torch.equal(region.flatten(), token_region[0][where])
    assert starts == {(0, 2), (1, 2)}


def test_full_grid_positions_are_the_plain_forward() -> None:
    """Giving every token its own place in the grid is what a full-size image gets without positions."""
    torch.manual_seed(0)
    model = build_clip(_micro_clip_config(32)).eval()
    x = torch.randn(2, 3, 32, 32)
    blocks = default_surgery_blocks(model.visual)
    plain = two_stream_forward(model.visual, x, blocks)
    placed = two_stream_forward(model.visual, x, blocks, torch.arange(16).expand(2, 16))
    assert all(torch.allclose(a, b) for a, b in zip(plain, placed, strict=True))


def test_crops_join_the_batch_reproducibly() -> None:
    """Crops change what a run learns, and a seed still fixes it."""
    torch.set_num_threads(2)
    config = _micro_clip_config(64)
    fits = _one_region_image(slice(20, 30), slice(40, 50))  # surely fits a 32 px crop
    pool = [*_squares_pool(16), fits]
    plain = TinyClipTraining(steps=4, batch_size=4, warmup_steps=0, crops=0)
    cropped = replace(plain, crops=4, crop_size=32)
    a, _ = train_tiny_clip(config, pool, cropped)
    b, _ = train_tiny_clip(config, pool, cropped)
    c, _ = train_tiny_clip(config, pool, plain)
    assert _same_weights(a, b) and not _same_weights(a, c)
    with pytest.raises(ValueError, match="crop_size"):
        train_tiny_clip(config, pool, replace(plain, crops=4, crop_size=36))  # not whole 8 px patches


def test_full_image_odds_lean_away_from_cropped_images() -> None:
    """Weight 1 keeps the plain uniform draw; below it, cropped images are drawn that much less often."""
    assert _full_image_odds(4, np.array([1, 3]), 1.0) is None
    assert _full_image_odds(4, np.array([1, 3]), 0.5).tolist() == [1 / 3, 1 / 6, 1 / 3, 1 / 6]
    assert _full_image_odds(3, np.array([0, 2]), 0.0).tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="no full images"):
        _full_image_odds(2, np.array([0, 1]), 0.0)
    with pytest.raises(ValueError, match="negative"):
        _full_image_odds(2, np.array([0]), -0.5)


def test_full_images_can_leave_cropped_images_to_crops() -> None:
    """With ``cropped_at_full_size`` 0 the full images come from the others alone: a run differs from one
    that draws every image, a seed still fixes it, and a pool crops cover entirely has none to draw."""
    torch.set_num_threads(2)
    config = _micro_clip_config(64)
    fits = _one_region_image(slice(20, 30), slice(40, 50))  # the only image a 32 px crop can show
    pool = [*_squares_pool(16), fits]
    both = TinyClipTraining(
        steps=4, batch_size=4, warmup_steps=0, crops=4, crop_size=32, cropped_at_full_size=1.0
    )
    apart = replace(both, cropped_at_full_size=0.0)
    a, _ = train_tiny_clip(config, pool, apart)
    b, _ = train_tiny_clip(config, pool, apart)
    c, _ = train_tiny_clip(config, pool, both)
    assert _same_weights(a, b) and not _same_weights(a, c)
    with pytest.raises(ValueError, match="no full images"):
        train_tiny_clip(config, [fits, fits], apart)
