"""Synthetic videos with per-frame instance masks, for video object segmentation and frame ranking.

:func:`make_video` renders 1 to 3 objects moving over a slowly panning ground in one of the image
domains. Objects follow smooth paths whose velocity changes every second or so, breathe and turn
(scale, aspect and rotation change), drift in colour and texture, pass in front of each other (a
fixed depth order) and sometimes leave the frame and come back: the appearance changes and
occlusions that make some frames harder to propagate masks to than others.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from maskfactory.simulators.world import (
    CLASSES,
    DOMAINS,
    STYLES,
    TASKS,
    Look,
    Outline,
    Style,
    check_scene_arguments,
    class_outline,
    field_of_view,
    finish,
    paint_object,
    sample_look,
    soften,
)

__all__ = ["Video", "make_video"]

VIDEO_STREAM = len(TASKS)  # random stream id of videos, distinct from every image task's
PAN = 24  # px of ground beyond each side of the frame, room for the camera to pan


@dataclass
class Video:
    """A rendered clip. Masks are the visible part of each object: empty when hidden or out of frame."""

    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    masks: np.ndarray  # (T, K, H, W) bool; objects never overlap within a frame
    object_kinds: list[str]  # CLASSES names, one per object
    object_colors: list[str]  # COLORS names ("" in grayscale domains)
    video_id: str  # f"{domain}-{seed:06d}"
    domain: str
    seed: int


@dataclass
class _Track:
    """One object's state over time: arrays have T rows. Positions in px, angles in rad."""

    kind: str
    colour: str
    outline: Outline  # local units, before any time-varying deformation
    centre: np.ndarray  # (T, 2) x, y
    radius: np.ndarray  # (T,)
    angle: np.ndarray  # (T,)
    aspect: np.ndarray  # (T,)
    wobble: np.ndarray  # (3,) radial deformation amplitudes (0 unless the domain is organic)
    wobble_phase: np.ndarray  # (T, 3)
    start: Look
    end: Look  # appearance drifts from ``start`` to ``end``


def _fold(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect ``x`` into [lo, hi], like a ball bouncing off the walls."""
    span = max(hi - lo, 1e-6)
    return lo + span - np.abs((x - lo) % (2 * span) - span)


def _wander(rng: np.random.Generator, n: int, lo: np.ndarray, hi: np.ndarray, speed: float) -> np.ndarray:
    """(n, 2) smooth path inside the box [lo, hi]: velocity interpolated between random knots."""
    step = int(rng.integers(8, 20))  # frames between velocity changes
    knots = np.arange(0, n + step, step)
    velocity = rng.normal(0, speed, (len(knots), 2))
    t = np.arange(n)
    v = np.stack([np.interp(t, knots, velocity[:, i]) for i in range(2)], axis=1)
    path = rng.uniform(lo, hi) + np.cumsum(v, axis=0)
    return np.stack([_fold(path[:, i], lo[i], hi[i]) for i in range(2)], axis=1)


def _bump(t: np.ndarray, start: float, stop: float) -> np.ndarray:
    """0 outside [start, stop], rising smoothly to a plateau of 1 over its middle part."""
    s = np.clip((t - start) / (stop - start), 0, 1)
    return np.clip(1.8 * np.sin(np.pi * s), 0, 1) ** 2


def _tracks(
    rng: np.random.Generator, style: Style, shape: tuple[int, int], n: int, ground: np.ndarray
) -> list[_Track]:
    """Random tracks for 1-3 objects, then staged events: a crossing and an exit-and-return."""
    h, w = shape
    scale = min(shape)
    k = int(rng.integers(1, 4))
    t = np.arange(n, dtype=np.float64)
    tracks = []
    for _ in range(k):
        kind = CLASSES[rng.integers(len(CLASSES))]
        r0 = rng.uniform(0.1, 0.18) * scale
        margin = 0.6 * r0
        if style.field_of_view:  # stay near the middle of the scanner's disc
            half = np.array([0.3 * scale, 0.3 * scale])
            lo, hi = np.array([w / 2, h / 2]) - half, np.array([w / 2, h / 2]) + half
        else:
            lo, hi = np.array([margin, margin]), np.array([w - margin, h - margin])
        centre = _wander(rng, n, lo, hi, rng.uniform(0.6, 2.5) * scale / 192)
        # Breathing: at most +-15 % in radius, so a drop in visible area below half means occlusion.
        radius = r0 * (
            1 + rng.uniform(0.05, 0.15) * np.sin(2 * np.pi * t / rng.uniform(25, 70) + rng.uniform(0, 6))
        )
        angle = (
            rng.uniform(0, 2 * np.pi) + rng.uniform(-0.05, 0.05) * t + 0.3 * np.sin(t / rng.uniform(8, 20))
        )
        aspect = np.exp(
            rng.uniform(0.05, 0.25) * np.sin(2 * np.pi * t / rng.uniform(20, 60) + rng.uniform(0, 6))
        )
        wobble = rng.uniform(0, style.wobble, 3)
        wobble_phase = rng.uniform(0, 2 * np.pi, 3) + np.outer(t, rng.uniform(-0.15, 0.15, 3))
        name, rgb = style.palette[rng.integers(len(style.palette))]
        start = sample_look(rng, style, rgb, ground.mean(axis=(0, 1)))
        # Appearance drift: brightness and hue change, the texture fades in or out, the light turns.
        end = replace(
            start,
            colour=np.clip(start.colour * rng.uniform(0.7, 1.3) + rng.normal(0, 0.06, 3), 0, 1).astype(
                np.float32
            ),
            pattern_amp=rng.choice([0.0, rng.uniform(*style.pattern_amp) * 1.5]),
            light_angle=start.light_angle + rng.uniform(-np.pi, np.pi),
            phase=start.phase + rng.uniform(-6, 6),
        )
        outline = class_outline(kind, rng)
        if style.smoothing:
            outline = soften(outline, np.zeros(3), np.zeros(3), style.smoothing)
        tracks.append(
            _Track(kind, name, outline, centre, radius, angle, aspect, wobble, wobble_phase, start, end)
        )

    middle = np.array([(w - 1) / 2, (h - 1) / 2])
    if k >= 2 and rng.random() < 0.75:
        # A crossing: object b is pulled onto object a's position around frame tc, so one hides the other.
        a, b = (tracks[i] for i in rng.permutation(k)[:2])
        tc = rng.uniform(0.2, 0.45) * n
        pull = np.exp(-(((t - tc) / rng.uniform(5, 9)) ** 2))[:, None]
        b.centre = b.centre + pull * (a.centre[int(tc)] - b.centre[int(tc)])
    if rng.random() < 0.6 and n >= 20:
        # An exit and return: pushed out past the nearest border (of the frame or the field of view).
        track = tracks[rng.integers(k)]
        t0 = rng.uniform(0.5, 0.7) * n
        t1 = min(t0 + rng.uniform(12, 24), n - 2)
        mid = track.centre[int((t0 + t1) / 2)]
        reach = 1.4 * track.radius.max() * max(track.aspect.max(), 1.25)
        if style.field_of_view:
            direction = (mid - middle) / (np.linalg.norm(mid - middle) + 1e-6)
            distance = 0.49 * scale - np.linalg.norm(mid - middle) + reach
        else:
            gaps = np.array([mid[0], w - mid[0], mid[1], h - mid[1]])
            side = int(np.argmin(gaps))
            direction = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]][side], dtype=np.float64)
            distance = gaps[side] + reach
        track.centre = track.centre + _bump(t, t0, t1)[:, None] * distance * direction
    return tracks


def make_video(
    seed: int, domain: str = "natural", size: tuple[int, int] = (192, 256), n_frames: int | None = None
) -> Video:
    """Render one clip of ``size`` (H, W) px; T = ``n_frames`` or 40-80 drawn from the seed.

    The same arguments give bit-identical frames and masks.
    """
    check_scene_arguments(domain, size, seed, "n_frames", n_frames)
    rng = np.random.default_rng([seed, VIDEO_STREAM, DOMAINS.index(domain)])
    style = STYLES[domain]
    h, w = int(size[0]), int(size[1])
    n = int(rng.integers(40, 81))  # drawn even when n_frames is given, so the rest stays the same
    n = n if n_frames is None else n_frames
    ground = style.ground(rng, (h + 2 * PAN, w + 2 * PAN), False)
    noise = ndimage.gaussian_filter(rng.standard_normal((h, w), dtype=np.float32), 1.2)
    noise /= noise.std()
    area = field_of_view((h, w)) if style.field_of_view else np.ones((h, w), bool)
    tracks = _tracks(rng, style, (h, w), n, ground)
    depth = rng.permutation(len(tracks))  # back to front
    # Camera: a slow pan from one corner of the margin towards another, plus a slight light flicker.
    pan_from, pan_to = rng.uniform(0, 2 * PAN, 2), rng.uniform(0, 2 * PAN, 2)
    flicker = 1 + rng.uniform(0, 0.06) * np.sin(np.arange(n) / rng.uniform(3, 9))

    frames = np.empty((n, h, w, 3), np.uint8)
    masks = np.zeros((n, len(tracks), h, w), bool)
    for f in range(n):
        progress = f / max(n - 1, 1)
        smooth = progress * progress * (3 - 2 * progress)
        ox, oy = np.rint(pan_from + smooth * (pan_to - pan_from)).astype(int)
        canvas = ground[oy : oy + h, ox : ox + w] * np.float32(flicker[f])
        owner = np.full((h, w), -1, np.int16)
        for k in depth:
            tr = tracks[k]
            outline = tr.outline
            if tr.wobble.any():
                outline = soften(outline, tr.wobble, tr.wobble_phase[f], 0)
            centre = tr.centre[f]
            mask = outline.placed(centre, tr.radius[f], tr.angle[f], tr.aspect[f]).rasterize((h, w)) & area
            look = replace(
                tr.start,
                colour=(tr.start.colour + smooth * (tr.end.colour - tr.start.colour)).astype(np.float32),
                pattern_amp=tr.start.pattern_amp + smooth * (tr.end.pattern_amp - tr.start.pattern_amp),
                light_angle=tr.start.light_angle + smooth * (tr.end.light_angle - tr.start.light_angle),
                phase=tr.start.phase + progress * (tr.end.phase - tr.start.phase),
            )
            paint_object(canvas, mask, look, centre, float(tr.angle[f]), noise)
            owner[mask] = k
        for k in range(len(tracks)):
            masks[f, k] = owner == k
        frames[f] = finish(canvas, style, rng)
    return Video(
        frames=frames,
        masks=masks,
        object_kinds=[tr.kind for tr in tracks],
        object_colors=[tr.colour for tr in tracks],
        video_id=f"{domain}-{seed:06d}",
        domain=domain,
        seed=seed,
    )
