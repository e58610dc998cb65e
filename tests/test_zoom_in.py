"""RITM's Zoom-In for the SAM click segmenter (models/interactive.py): the crop, and the frames it maps."""

from __future__ import annotations

import numpy as np
import pytest

from maskfactory.models.interactive import SamClickSegmenter, ZoomIn, box_iou
from maskfactory.models.metrics import mask_iou
from maskfactory.models.predictor import BatchedSamPredictor
from maskfactory.models.registry import load_sam_model
from maskfactory.simulators.clicker import Click, click_session, next_click
from maskfactory.simulators.world import TASKS, make_sample


def square(shape: tuple[int, int], y0: int, x0: int, side: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[y0 : y0 + side, x0 : x0 + side] = True
    return mask


def test_the_crop_is_a_grown_square_about_the_answer_and_clicks_inside_the_image() -> None:
    zoom = ZoomIn(expansion=1.5, min_crop=64)
    # A 40 px answer and a click inside it: 60 px grown, so the 64 px minimum, centred on (120, 120).
    assert zoom.box(square((256, 256), 100, 100, 40), [Click(110, 110, True)]) == (88, 88, 152, 152)
    # A click away from the answer widens the box: x spans 100..179, so 80 px * 1.5 = 120 on a side.
    assert zoom.box(square((256, 256), 100, 100, 40), [Click(179, 110, True)]) == (80, 60, 200, 180)
    # In a corner the box moves inside the image rather than shrinking.
    assert zoom.box(square((256, 256), 0, 250, 6), [Click(252, 2, True)]) == (192, 0, 256, 64)
    # Larger than the image: as large as the image allows, side by side.
    assert zoom.box(square((100, 300), 0, 0, 100), [Click(50, 50, True)]) == (0, 0, 150, 100)
    # An empty answer: the clicks alone.
    assert zoom.box(np.zeros((256, 256), bool), [Click(30, 200, False)]) == (0, 168, 64, 232)


def test_box_iou() -> None:
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0


@pytest.fixture(scope="module")
def predictor() -> BatchedSamPredictor:
    sam, _ = load_sam_model("tiny-sam")
    return BatchedSamPredictor(sam)


def test_a_crop_of_the_whole_image_answers_as_the_plain_segmenter(predictor: BatchedSamPredictor) -> None:
    """With crops never smaller than the image, zooming changes only the path the last answer takes
    into the mask prompt (upscaled, then sampled back on the low-res grid), so the same clicks get
    nearly the same answers."""
    for seed in range(7_200_000, 7_200_003):
        sample = make_sample("shadow", "natural", seed=seed)
        gt = sample.objects[0]
        plain = list(click_session(SamClickSegmenter(predictor), sample.image, gt, max_clicks=5))
        zoomed = SamClickSegmenter(predictor, ZoomIn(skip_clicks=1, min_crop=10_000))
        zoomed.start(sample.image)
        clicks = [step.click for step in plain]
        for k, step in enumerate(plain):
            answer = zoomed.predict(clicks[: k + 1])
            # Measured: 0.946 at worst (run 5; run 9: 0.947), on a 24-cell mask; area pooling instead of
            # sampling gave 0.881.
            assert mask_iou(answer, step.mask) > 0.93, (seed, k)
        assert zoomed._crop is not None and zoomed._crop[0] == (0, 0, 256, 256)


def test_small_objects_are_segmented_in_crops_that_hold_them(predictor: BatchedSamPredictor) -> None:
    """The smallest object of five saliency scenes (327-404 px), eight clicks each. Where the first answer
    lands on the object, the crop stays the smallest; where it is a large object nearby instead (one
    scene with tiny-sam run 5, none with run 9), the negative clicks on it spread, and the crop, which
    holds every click, grows with them."""
    best = {False: [], True: []}
    found = 0
    for seed in range(7_200_001, 7_200_006):
        sample = make_sample("saliency", "natural", seed=seed)
        gt = min(sample.objects, key=lambda m: m.sum())
        for zoom in (False, True):
            segmenter = SamClickSegmenter(predictor, ZoomIn() if zoom else None)
            steps = list(click_session(segmenter, sample.image, gt, max_clicks=8))
            best[zoom].append(max(s.iou for s in steps))
        assert segmenter._crop is not None
        x0, y0, x1, y1 = segmenter._crop[0]
        assert x1 - x0 == y1 - y0
        if steps[0].iou > 0.5:
            found += 1
            assert x1 - x0 == 128  # the smallest crop: magnified twice
        assert all(x0 <= s.click.x < x1 and y0 <= s.click.y < y1 for s in steps)
        last = steps[-1].mask
        assert (
            not last[:y0].any() and not last[y1:].any() and not last[:, :x0].any() and not last[:, x1:].any()
        )
    assert found >= 3  # measured: 5 of 5 with run 9, 4 with run 5
    # Measured: 0.773 zoomed against 0.614 whole-image with run 9 (run 5: 0.715 against 0.559; run 4: 0.737
    # against 0.588; there, with clicks not shifted by the crop's origin, put in the wrong place in the
    # crop, the zoomed figure fell to 0.217).
    assert np.mean(best[True]) > np.mean(best[False]) + 0.05, best


def test_skip_clicks_zero_answers_the_first_click_again_in_a_crop(predictor: BatchedSamPredictor) -> None:
    """Every object of two scenes per task (65 objects), one click each."""
    ious = {False: [], True: []}
    for i, task in enumerate(TASKS):
        for seed in (7_300_000 + 10 * i, 7_300_001 + 10 * i):
            sample = make_sample(task, "natural", seed=seed)
            for gt in sample.objects:
                click = next_click(np.zeros_like(gt), gt)
                for zoom in (False, True):
                    segmenter = SamClickSegmenter(predictor, ZoomIn(skip_clicks=0) if zoom else None)
                    segmenter.start(sample.image)
                    ious[zoom].append(mask_iou(segmenter.predict([click]), gt))
                    assert (segmenter._crop is not None) == zoom
    # Measured: 0.753 against 0.734 on the whole image alone with run 9 (run 5: 0.748 against 0.730).
    assert np.mean(ious[True]) > np.mean(ious[False]) + 0.01, ious


def test_a_wide_image_gets_crops_inside_it(predictor: BatchedSamPredictor) -> None:
    """A 192 x 320 image (SAM pads it to a square): every crop lies inside the image, and the answers
    keep the image's shape."""
    sample = make_sample("semantic", "natural", seed=7_200_010, size=(192, 320))
    gt = max(sample.objects, key=lambda m: m.sum())
    segmenter = SamClickSegmenter(predictor, ZoomIn())
    for step in click_session(segmenter, sample.image, gt, max_clicks=4):
        assert step.mask.shape == (192, 320)
        assert segmenter._crop is not None
        x0, y0, x1, y1 = segmenter._crop[0]
        assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 192
    assert step.iou > 0.85, step.iou  # measured: 0.907 with run 9 (0.807 without zoom); run 5: 0.957 (0.716)
