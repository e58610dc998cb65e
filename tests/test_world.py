"""Tests for maskfactory.simulators.world: the synthetic labelled images of the five AlignSAM tasks."""

from __future__ import annotations

import itertools
from functools import cache

import numpy as np
import pytest
from scipy import ndimage

from maskfactory.simulators.world import (
    BRANCH,
    CLASSES,
    COLORS,
    DOMAINS,
    PROMPTS,
    TASKS,
    Sample,
    field_of_view,
    make_sample,
    min_instance_area,
    seen_shadows,
)

SEEDS = range(4)
CASES = list(itertools.product(TASKS, DOMAINS))
REGION_KINDS = ("shadow", "blur", "glass")


@cache
def _samples(task: str, domain: str) -> tuple[Sample, ...]:
    return tuple(make_sample(task, domain, seed) for seed in SEEDS)


def _saturation(image: np.ndarray) -> float:
    """Mean HSV saturation of a uint8 RGB image."""
    rgb = image.astype(np.float64)
    top, bottom = rgb.max(axis=-1), rgb.min(axis=-1)
    return float(np.mean((top - bottom) / np.maximum(top, 1)))


@pytest.mark.parametrize(("task", "domain"), CASES)
def test_same_arguments_give_identical_samples(task: str, domain: str) -> None:
    first, again = _samples(task, domain)[0], make_sample(task, domain, 0)
    assert np.array_equal(first.image, again.image)
    assert np.array_equal(first.target, again.target)
    assert np.array_equal(first.objects, again.objects)
    assert (first.object_kinds, first.object_colors, first.prompt) == (
        again.object_kinds,
        again.object_colors,
        again.prompt,
    )
    images = [s.image for s in _samples(task, domain)]
    assert all(not np.array_equal(a, b) for a, b in itertools.combinations(images, 2))


@pytest.mark.parametrize(("task", "domain"), CASES)
def test_sample_layout_and_instances(task: str, domain: str) -> None:
    for s in _samples(task, domain):
        k = len(s.objects)
        assert s.image.shape == (256, 256, 3) and s.image.dtype == np.uint8
        assert s.target.shape == (256, 256) and s.target.dtype == bool
        assert s.objects.shape == (k, 256, 256) and s.objects.dtype == bool and k >= 1
        assert len(s.object_kinds) == len(s.object_colors) == k
        assert (s.task, s.domain, s.branch) == (task, domain, BRANCH[task])
        assert set(s.object_kinds) <= {*CLASSES, *REGION_KINDS}
        assert set(s.object_colors) <= {*COLORS, ""}
        # Every instance is big enough to click, and no pixel belongs to two of them.
        assert s.objects.sum(axis=(1, 2)).min() >= min_instance_area((256, 256))
        assert s.objects.sum(axis=0).max() <= 1
        assert s.target.any()


@pytest.mark.parametrize("domain", DOMAINS)
def test_semantic_target_is_every_instance_of_the_prompted_class(domain: str) -> None:
    same_colour_distractor = False
    for s in _samples("semantic", domain):
        assert s.prompt in CLASSES
        is_target = np.array([kind == s.prompt for kind in s.object_kinds])
        assert 1 <= is_target.sum() <= 3 and (~is_target).any()
        assert np.array_equal(s.target, s.objects[is_target].any(axis=0))
        target_colours = {c for c, t in zip(s.object_colors, is_target, strict=True) if t}
        same_colour_distractor |= any(
            c in target_colours for c, t in zip(s.object_colors, is_target, strict=True) if not t
        )
    assert same_colour_distractor  # colour alone must not identify the class


@pytest.mark.parametrize("domain", DOMAINS)
def test_saliency_target_is_one_large_instance(domain: str) -> None:
    for s in _samples("saliency", domain):
        assert s.prompt == PROMPTS["saliency"] == "saliency object"
        matches = [i for i, m in enumerate(s.objects) if np.array_equal(m, s.target)]
        assert len(matches) == 1
        areas = s.objects.sum(axis=(1, 2))
        assert areas[matches[0]] == areas.max() and len(s.objects) >= 2


@pytest.mark.parametrize("domain", DOMAINS)
def test_shadow_target_is_ground_in_shadow_not_objects(domain: str) -> None:
    dark_distractor = False
    for s in _samples("shadow", domain):
        assert s.prompt == "shadow"
        kinds = np.array(s.object_kinds)
        assert np.array_equal(s.target, s.objects[kinds == "shadow"].any(axis=0))
        assert not (s.target & s.objects[np.isin(kinds, CLASSES)].any(axis=0)).any()
        # Shadows darken the ground: inside them the image is darker than just outside them.
        gray = s.image.mean(axis=-1)
        ring = ndimage.binary_dilation(s.target, iterations=4) & ~s.target & ~s.objects.any(axis=0)
        assert gray[s.target].mean() < gray[ring].mean()
        dark_distractor |= domain == "natural" and "black" in s.object_colors
    assert dark_distractor or domain != "natural"


def test_seen_shadows_end_where_the_ground_is_half_dark() -> None:
    """A cast shadow with a spike narrower than its penumbra, and a patch too small to click: the label
    keeps the straight edges where they were cast, drops the washed-out spike's end, and the patch."""
    cast = np.zeros((96, 96), bool)
    cast[20:60, 20:50] = True  # the body, 1200 px
    cast[38:40, 50:80] = True  # a 2-px spike, 30 px long
    cast[75:85, 70:80] = True  # 100 px, under the 200 px minimum
    ground = np.ones_like(cast)
    ground[20:60, 10:20] = False  # an object standing on the shadow's left edge
    shade = ndimage.gaussian_filter(cast.astype(np.float32), 2.0)
    (seen,) = seen_shadows(shade, ground, min_area=200)
    # Mid-way along the straight edges on open ground the label stops exactly where the cast outline
    # does; on the left it stops at the object.
    assert seen[59, 35] and seen[20, 35] and seen[50, 49] and seen[40, 20]
    assert not seen[60, 35] and not seen[19, 35] and not seen[50, 50] and not (seen & ~ground).any()
    # The spike's 2-px width never gets half dark: past the body's edge it is not labelled, nor is the
    # patch. Elsewhere only the body's four corners are rounded off, a few pixels each.
    lost = cast & ~seen
    assert lost[38:40, 52:80].all() and not seen[36:42, 52:].any()
    assert lost[75:85, 70:80].all() and not seen[70:90, 65:85].any()
    assert lost[20:60, 20:50].sum() <= 16


@pytest.mark.parametrize(("task", "domain"), list(itertools.product(("blur", "glass"), DOMAINS)))
def test_blur_and_glass_targets_are_their_regions(task: str, domain: str) -> None:
    for s in _samples(task, domain):
        assert s.prompt == PROMPTS[task]
        kinds = np.array(s.object_kinds)
        assert (kinds == task).any() and np.isin(kinds, CLASSES).any()
        assert np.array_equal(s.target, s.objects[kinds == task].any(axis=0))


def test_blur_regions_are_smoother_than_the_sharp_rest() -> None:
    for s in _samples("blur", "natural"):
        gray = s.image.astype(np.float64).mean(axis=-1)
        detail = np.abs(np.diff(gray, axis=1))
        inner = ndimage.binary_erosion(s.target, iterations=4)[:, 1:]
        sharp = ndimage.binary_erosion(~s.target, iterations=4)[:, 1:]
        assert detail[inner].mean() < detail[sharp].mean()


def test_medical_images_are_gray_with_a_black_outside() -> None:
    fov = field_of_view((256, 256))
    for task in TASKS:
        for s in _samples(task, "medical"):
            assert np.array_equal(s.image[..., 0], s.image[..., 1])
            assert np.array_equal(s.image[..., 0], s.image[..., 2])
            assert not s.image[~fov].any()
            assert not s.objects[:, ~fov].any()
            assert set(s.object_colors) == {""}


def test_domains_differ_in_image_statistics() -> None:
    images = {d: [s.image for task in TASKS for s in _samples(task, d)] for d in DOMAINS}
    assert max(_saturation(i) for i in images["medical"]) == 0
    assert min(_saturation(i) for i in images["natural"] + images["aerial"]) > 0.05
    # Aerial views share one palette of greens and browns; natural scenes range over every hue.
    means = {d: np.array([i.reshape(-1, 3).mean(axis=0) for i in imgs]) for d, imgs in images.items()}
    assert means["natural"].std(axis=0).mean() > 1.5 * means["aerial"].std(axis=0).mean()
    assert (means["aerial"][:, 1] > means["aerial"][:, 0]).mean() > 0.8  # green over red


def test_size_and_object_count_are_honoured() -> None:
    s = make_sample("semantic", "natural", 5, size=(192, 320), n_objects=3)
    assert s.image.shape == (192, 320, 3) and s.objects.shape[1:] == (192, 320)
    assert 1 <= len(s.objects) <= 3
    assert s.objects.sum(axis=(1, 2)).min() >= min_instance_area((192, 320))
    shadow = make_sample("shadow", "aerial", 5, n_objects=2)
    assert sum(kind in CLASSES for kind in shadow.object_kinds) <= 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "depth"}, "known: semantic, saliency, shadow, blur, glass"),
        ({"task": "shadow", "domain": "space"}, "known: natural, aerial, medical"),
        ({"task": "shadow", "size": (32, 256)}, "at least 64"),
        ({"task": "shadow", "seed": -1}, "non-negative"),
        ({"task": "shadow", "n_objects": 0}, "at least 1"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_sample(**kwargs)
