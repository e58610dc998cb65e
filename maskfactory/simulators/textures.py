"""Pixel-level building blocks of the synthetic world: noise fields, patterns and domain ground textures.

Scalar fields are float32 arrays of shape (H, W); colour images are float32 (H, W, 3) RGB with values
roughly in [0, 1] (callers clip when they quantise). Everything random is drawn from the
``numpy.random.Generator`` passed in, so a seeded generator gives bit-identical textures. Nothing here
knows about objects or tasks; :mod:`maskfactory.simulators.world` composes these into scenes.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from PIL import Image

__all__ = [
    "GROUNDS",
    "aerial_ground",
    "desaturate",
    "fractal_noise",
    "grid",
    "hsv",
    "luminance",
    "natural_ground",
    "smooth_noise",
    "tissue_ground",
]

# Rec. 601 luma weights: what a grayscale scanner or display would show for an RGB colour.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@lru_cache(maxsize=16)
def grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates ``(yy, xx)``, each (H, W) float32; cached and read-only."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def hsv(hue: float, saturation: float, value: float) -> np.ndarray:
    """One colour from HSV (hue in turns, all in [0, 1]) as a (3,) float32 RGB array."""
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, saturation, value), dtype=np.float32)


def luminance(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB -> (H, W) luma."""
    return image @ LUMA


def desaturate(image: np.ndarray, amount: float) -> np.ndarray:
    """Blend (H, W, 3) RGB towards its own luma; ``amount`` 1 gives gray."""
    return image + amount * (luminance(image)[..., None] - image)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: float) -> np.ndarray:
    """(H, W) band-limited noise with features about ``max(H, W) / cells`` pixels across.

    A coarse grid of standard normal values is upsampled bicubically, which is far cheaper than
    filtering white noise at full size (about 0.2 ms at 256 x 256).
    """
    h, w = shape
    longest = max(h, w)
    gh = max(2, round(cells * h / longest)) + 1
    gw = max(2, round(cells * w / longest)) + 1
    coarse = rng.standard_normal((gh, gw), dtype=np.float32)
    return np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC))


def fractal_noise(
    rng: np.random.Generator, shape: tuple[int, int], cells: float, octaves: int = 4, gain: float = 0.5
) -> np.ndarray:
    """(H, W) sum of ``octaves`` noise octaves (each twice as fine, ``gain`` times as strong).

    Normalised to zero mean and unit standard deviation so callers choose the contrast.
    """
    total = np.zeros(shape, np.float32)
    for octave in range(octaves):
        total += gain**octave * smooth_noise(rng, shape, cells * 2**octave)
    return (total - total.mean()) / (total.std() + 1e-6)


def _pattern(rng: np.random.Generator, shape: tuple[int, int], kind: str) -> np.ndarray:
    """(H, W) periodic pattern in [0, 1]: stripes, checker, rings (wood grain) or bricks."""
    yy, xx = grid(*shape)
    scale = min(shape) / 256  # periods are chosen for 256 px images
    angle = rng.uniform(0, np.pi)
    u = xx * math.cos(angle) + yy * math.sin(angle)
    v = -xx * math.sin(angle) + yy * math.cos(angle)
    period = rng.uniform(7, 26) * scale
    if kind == "stripes":
        # Sharpened sine: crisp edges keep high frequencies, which the blur and glass tasks need.
        return np.clip(0.5 + 1.5 * np.sin(2 * np.pi * u / period), 0, 1)
    if kind == "checker":
        return (np.sin(np.pi * u / period) * np.sin(np.pi * v / period) > 0).astype(np.float32)
    if kind == "rings":
        cy, cx = (float(c) for c in rng.uniform(-0.5, 1.5, 2) * shape)
        wobble = 3 * scale * smooth_noise(rng, shape, 4)
        radius = np.hypot(yy - cy, xx - cx) + wobble
        return np.clip(0.5 + 1.5 * np.sin(2 * np.pi * radius / period), 0, 1)
    # Bricks: rows of rectangles, every other row offset by half a brick, thin mortar lines.
    row = np.floor(v / period)
    col = (u / (2 * period) + 0.5 * (row % 2)) % 1.0
    mortar = (v / period % 1.0 < 0.15) | (col < 0.07)
    return mortar.astype(np.float32)


NATURAL_PATTERNS = ("stripes", "checker", "rings", "bricks")


def natural_ground(rng: np.random.Generator, shape: tuple[int, int], structured: bool = False) -> np.ndarray:
    """(H, W, 3) colourful textured ground: two mottled colours, a pattern, grain and a light gradient.

    ``structured`` forces a periodic pattern with crisp edges (for refraction to bend and defocus to
    blur); otherwise the pattern is sometimes replaced by fine mottling.
    """
    hue = rng.random()
    first = hsv(hue, rng.uniform(0.15, 0.7), rng.uniform(0.3, 0.85))
    second = hsv(hue + rng.uniform(-0.3, 0.3), rng.uniform(0.1, 0.7), rng.uniform(0.25, 0.9))
    mix = 1 / (1 + np.exp(-rng.uniform(1, 3) * fractal_noise(rng, shape, rng.uniform(2, 5))))
    image = first + mix[..., None] * (second - first)

    kinds = NATURAL_PATTERNS if structured else (*NATURAL_PATTERNS, "mottle")
    kind = kinds[rng.integers(len(kinds))]
    if kind == "mottle":
        pattern = np.clip(0.5 + 0.35 * fractal_noise(rng, shape, rng.uniform(16, 40), octaves=2), 0, 1)
    else:
        pattern = _pattern(rng, shape, kind)
    ink = hsv(rng.random(), rng.uniform(0, 0.6), rng.uniform(0.1, 0.9))
    image += rng.uniform(0.15, 0.45) * pattern[..., None] * (ink - image)

    # Per-pixel grain: real photos are never smooth, and sharpness is the cue of the blur task.
    image *= 1 + rng.uniform(0.03, 0.08) * rng.standard_normal(shape, dtype=np.float32)[..., None]
    yy, xx = grid(*shape)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = ((xx - shape[1] / 2) * math.cos(angle) + (yy - shape[0] / 2) * math.sin(angle)) / max(shape)
    image *= (1 + rng.uniform(0, 0.5) * ramp)[..., None]
    return image


def aerial_ground(rng: np.random.Generator, shape: tuple[int, int], structured: bool = False) -> np.ndarray:
    """(H, W, 3) top-down ground: meadow, crop fields with rows, hedges, tree clumps and roads.

    ``structured`` is accepted for a uniform signature; fields and roads are structure enough.
    """
    del structured
    h, w = shape
    scale = min(shape) / 256
    yy, xx = grid(h, w)
    grass = hsv(rng.uniform(0.18, 0.3), rng.uniform(0.3, 0.5), rng.uniform(0.35, 0.5))
    image = grass * (1 + 0.12 * fractal_noise(rng, shape, 6))[..., None]

    # Fields: a rotated grid of parcels of random widths, each a crop colour with rows along one axis.
    angle = rng.uniform(0, np.pi)
    u = xx * math.cos(angle) + yy * math.sin(angle)
    v = -xx * math.sin(angle) + yy * math.cos(angle)
    borders = []
    for coord in (u, v):
        start = coord.min() - rng.uniform(0, 60) * scale
        widths = rng.uniform(40, 110, 12) * scale
        borders.append((start + np.concatenate([[0], np.cumsum(widths)])).astype(np.float32))
    iu = np.searchsorted(borders[0], u).clip(1, 12)
    iv = np.searchsorted(borders[1], v).clip(1, 12)
    is_field = rng.random((13, 13)) < 0.6
    crop = np.stack(
        [hsv(rng.uniform(0.07, 0.3), rng.uniform(0.2, 0.55), rng.uniform(0.35, 0.7)) for _ in range(169)]
    ).reshape(13, 13, 3)
    along_u = rng.random((13, 13)) < 0.5
    row_period = rng.uniform(3, 6) * scale
    row_depth = rng.uniform(0, 0.25, (13, 13))  # ploughed furrows to smooth pasture
    rows = 0.5 + 0.5 * np.sin(2 * np.pi * np.where(along_u[iu, iv], v, u) / row_period)
    fields = crop[iu, iv] * (1 - row_depth[iu, iv] * rows)[..., None]
    image = np.where(is_field[iu, iv][..., None], fields, image)
    # Hedges: dark green lines along the parcel borders.
    edge = np.minimum(
        np.minimum(u - borders[0][iu - 1], borders[0][iu] - u),
        np.minimum(v - borders[1][iv - 1], borders[1][iv] - v),
    )
    image[edge < 1.5 * scale] = (0.16, 0.24, 0.12)

    trees = fractal_noise(rng, shape, 14, octaves=3) > rng.uniform(1.0, 1.6)
    image[trees] = np.array((0.12, 0.2, 0.1), np.float32) * (1 + 0.3 * rng.random((int(trees.sum()), 1)))

    # Roads: gently curving asphalt bands with a dashed centre line.
    for _ in range(rng.integers(1, 3)):
        road_angle = rng.uniform(0, np.pi)
        normal = (math.cos(road_angle), math.sin(road_angle))
        cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        along = -(xx - cx) * normal[1] + (yy - cy) * normal[0]
        bend = rng.uniform(0, 12) * scale * np.sin(2 * np.pi * along / (rng.uniform(150, 400) * scale))
        across = np.abs((xx - cx) * normal[0] + (yy - cy) * normal[1] + bend)
        half_width = rng.uniform(3, 7) * scale
        image[across < half_width] = rng.uniform(0.38, 0.52)
        dashes = (across < 0.8 * scale) & (np.sin(2 * np.pi * along / (10 * scale)) > 0)
        image[dashes & (half_width > 4 * scale)] = 0.85

    image *= 1 + 0.05 * rng.standard_normal(shape, dtype=np.float32)[..., None]
    return image


def tissue_ground(rng: np.random.Generator, shape: tuple[int, int], structured: bool = False) -> np.ndarray:
    """(H, W, 3) gray soft tissue: organ-like regions, thin vessels and fine texture (3 equal channels).

    ``structured`` is accepted for a uniform signature; vessels give the structure.
    """
    del structured
    level = rng.uniform(0.35, 0.5)
    organs = np.tanh(2 * fractal_noise(rng, shape, rng.uniform(2, 4), octaves=3))
    gray = level + rng.uniform(0.05, 0.12) * organs
    # Vessels: the zero level set of a smooth noise field is a network of thin curves.
    vessels = np.abs(fractal_noise(rng, shape, rng.uniform(3, 6), octaves=2)) < 0.06
    gray += rng.choice([-1.0, 1.0]) * rng.uniform(0.04, 0.1) * vessels
    gray += 0.04 * fractal_noise(rng, shape, 40, octaves=2)
    # Tissue speckle (gamma, mean 1). It is part of the scene, so a defocused region loses it; the
    # scanner adds a weaker speckle of its own over everything.
    looks = 1 / 0.25**2
    gray *= rng.gamma(looks, 1 / looks, shape).astype(np.float32)
    return np.repeat(gray[..., None], 3, axis=2).astype(np.float32)


GroundFn = Callable[[np.random.Generator, tuple[int, int], bool], np.ndarray]
GROUNDS: dict[str, GroundFn] = {"natural": natural_ground, "aerial": aerial_ground, "medical": tissue_ground}
