"""Tests for maskfactory.simulators.video: synthetic clips with per-frame visible masks."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from scipy import ndimage

from maskfactory.simulators.video import Video, make_video
from maskfactory.simulators.world import CLASSES, COLORS, DOMAINS, field_of_view

SEEDS = range(6)


@cache
def _video(seed: int, domain: str = "natural") -> Video:
    return make_video(seed, domain)


def _touches_border(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


@pytest.mark.parametrize("domain", DOMAINS)
def test_same_seed_gives_identical_video_and_other_seeds_differ(domain: str) -> None:
    first, again = _video(0, domain), make_video(0, domain)
    assert np.array_equal(first.frames, again.frames)
    assert np.array_equal(first.masks, again.masks)
    assert (first.object_kinds, first.object_colors) == (again.object_kinds, again.object_colors)
    other = _video(1, domain)
    assert first.frames.shape != other.frames.shape or not np.array_equal(first.frames, other.frames)


@pytest.mark.parametrize("domain", DOMAINS)
def test_video_layout(domain: str) -> None:
    for seed in SEEDS[:3]:
        v = _video(seed, domain)
        t, k = v.masks.shape[:2]
        assert 40 <= t <= 80 and 1 <= k <= 3
        assert v.frames.shape == (t, 192, 256, 3) and v.frames.dtype == np.uint8
        assert v.masks.shape == (t, k, 192, 256) and v.masks.dtype == bool
        assert v.masks.sum(axis=1).max() <= 1  # visible parts never overlap
        assert v.masks.any(axis=(2, 3)).any(axis=0).all()  # every object shows up at some point
        assert len(v.object_kinds) == len(v.object_colors) == k
        assert set(v.object_kinds) <= set(CLASSES) and set(v.object_colors) <= {*COLORS, ""}
        assert (v.video_id, v.domain, v.seed) == (f"{domain}-{seed:06d}", domain, seed)


def test_medical_video_is_gray_inside_its_field_of_view() -> None:
    v = _video(0, "medical")
    assert np.array_equal(v.frames[..., 0], v.frames[..., 2])
    outside = ~field_of_view((192, 256))
    assert not v.frames[:, outside].any() and not v.masks[:, :, outside].any()


def test_some_object_leaves_the_frame_and_comes_back() -> None:
    def leaves(v: Video) -> bool:
        for k in range(v.masks.shape[1]):
            shown = v.masks[:, k].any(axis=(1, 2))
            for f in range(1, len(shown) - 1):
                gone = shown[f - 1] and not shown[f]
                if gone and _touches_border(v.masks[f - 1, k]) and shown[f:].any():
                    return True
        return False

    assert any(leaves(_video(seed)) for seed in SEEDS)


def test_some_object_is_occluded_while_in_frame() -> None:
    def occluded(v: Video) -> bool:
        for k in range(v.masks.shape[1]):
            areas = v.masks[:, k].sum(axis=(1, 2))
            inside = np.array(
                [a > 0 and not _touches_border(m) for a, m in zip(areas, v.masks[:, k], strict=True)]
            )
            if inside.sum() < 2:
                continue
            # Breathing changes the area by at most ~30 %; a drop below 45 % next to another
            # object's mask is that object in front.
            for f in np.flatnonzero(inside & (areas < 0.45 * areas[inside].max())):
                others = np.delete(v.masks[f], k, axis=0).any(axis=0)
                if (ndimage.binary_dilation(v.masks[f, k], iterations=2) & others).any():
                    return True
        return False

    assert any(occluded(_video(seed)) for seed in SEEDS)


def test_frame_count_and_size_are_honoured() -> None:
    v = make_video(7, "aerial", size=(96, 128), n_frames=12)
    assert v.frames.shape == (12, 96, 128, 3) and v.masks.shape[0] == 12


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"domain": "space"}, "known: natural, aerial, medical"),
        ({"size": (32, 32)}, "at least 64"),
        ({"seed": -3}, "non-negative"),
        ({"n_frames": 0}, "at least 1"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_video(**{"seed": 0, **kwargs})
