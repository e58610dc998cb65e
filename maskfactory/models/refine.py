"""Edge-aware refinement of a mask with the image as its guide: the guided filter.

SAM answers on a grid of mask cells (4 input px on a side: 64 x 64 for tiny-sam's 256 px input, 256 x 256
for SAM's 1024 px), upsampled bilinearly, so its edges are only as sharp as that grid. The guided filter
(He, Sun and Tang, "Guided Image Filtering", TPAMI 2013, colour version, section 3.5) fits, in every
window of ``2r + 1`` px, the mask's probabilities as a linear function of the pixel's colour, and
averages the fits of the windows that hold a pixel. Where the object and its surroundings differ in
colour, the refined edge follows the colour edge at the image's own resolution instead of the grid's.
The guide is the image smoothed a little (a Gaussian of 0.7 px), so that the edge does not also follow
the grain of single pixels. It needs no training and no ground truth; the refined probabilities are
thresholded at 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

TRUNCATE = 4.0  # the guide's Gaussian is cut at this many sigmas


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean of ``x`` (..., H, W) over each (2r+1)-px square window, clipped to the image (the divisor is the
    number of pixels inside it, as He et al.'s code does). Summed-area tables, so the cost does not grow
    with ``radius``."""

    def window_sums(t: torch.Tensor, dim: int) -> torch.Tensor:
        n = t.shape[dim]
        c = torch.cat([torch.zeros_like(t.narrow(dim, 0, 1)), t.cumsum(dim)], dim)  # c[k]: sum of t[:k]
        # Padded with its ends, c[k] for k out of range is c[0] or c[n]: windows clipped to the image.
        c = torch.cat(
            [
                c.narrow(dim, 0, 1).repeat_interleave(radius, dim),
                c,
                c.narrow(dim, n, 1).repeat_interleave(radius, dim),
            ],
            dim,
        )
        return c.narrow(dim, 2 * radius + 1, n) - c.narrow(dim, 0, n)  # sum of t[i - r : i + r + 1]

    ones = torch.ones(x.shape[-2:], dtype=x.dtype, device=x.device)
    return window_sums(window_sums(x, -2), -1) / window_sums(window_sums(ones, -2), -1)


def guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """He et al.'s colour guided filter. ``guide`` (C, H, W), ``src`` (H, W), both float64 (the window
    variances are differences of sums, and ``eps`` is small); returns (H, W).

    In each window: src ≈ a·guide + b, with a = (Σ + eps·I)⁻¹ cov(guide, src), Σ the guide's C x C
    covariance; the output is the mean a and b over the windows that hold the pixel, applied to its colour.
    """
    c = guide.shape[0]
    mean_i = box_mean(guide, radius)  # (C, H, W)
    mean_p = box_mean(src, radius)
    cov_ip = box_mean(guide * src, radius) - mean_i * mean_p
    products = guide[:, None] * guide[None]  # (C, C, H, W)
    sigma = box_mean(products, radius) - mean_i[:, None] * mean_i[None]
    sigma = sigma.permute(2, 3, 0, 1) + eps * torch.eye(c, dtype=src.dtype, device=src.device)
    a = torch.linalg.solve(sigma, cov_ip.permute(1, 2, 0))  # (H, W, C)
    b = mean_p - (a * mean_i.permute(1, 2, 0)).sum(-1)
    return (box_mean(a.permute(2, 0, 1), radius) * guide).sum(0) + box_mean(b, radius)


@dataclass(frozen=True)
class GuidedRefinement:
    """Refines a mask's logits with the guided filter, the image as guide.

    ``radius`` is in the model's input pixels, so it spans the same number of mask cells whatever the size
    of the frame the model answered on (the whole image, or a Zoom-In crop); :meth:`refine` converts it to
    image pixels. ``eps`` is the regulariser on colours scaled to [0, 1]: colour changes whose variance is
    well below it are smoothed over, not followed. ``guide_sigma`` (image px; 0: none) smooths the guide
    with a Gaussian first, so the edge follows the colour edge but not the grain of single pixels (He et al.
    filter with the image itself; smoothing the guide is our choice). It is in image pixels, not input
    pixels, because grain (the world's texture grain, a camera's sensor noise) is a property of the pixels
    whatever the frame. All three were chosen on held-out world data with Zoom-In (benchmarks/RESULTS.md,
    "The guided filter" and "A smoothed guide"): 16 input px (4 mask cells) took fewer clicks than 8, 12 or
    24; 1e-5 (a standard deviation of 0.003, under one grey level) a few fewer than 1e-4; a guide smoothed
    at 0.5 to 0.85 px fewer than the raw image (0.7 the fewest) or 1.0 and 1.5. The world's objects have hard
    edges; photos with softer edges may want other values, which have not been measured here.
    """

    radius: float = 16.0
    eps: float = 1e-5
    guide_sigma: float = 0.7

    def refine(self, image: np.ndarray, logits: torch.Tensor, scale: float) -> torch.Tensor:
        """``image`` (H, W, 3) uint8, ``logits`` (H, W) of a mask at the image's resolution, ``scale`` image
        px per input px of the frame the model answered on -> (H, W) refined probabilities in [0, 1]."""
        radius = max(1, round(self.radius * scale))
        src = logits.detach().to(torch.float64).sigmoid()
        box = edge_box(src, 2 * radius)
        if box is None:
            return src
        y0, y1, x0, x1 = box
        guide = torch.from_numpy(smoothed_guide(image, box, self.guide_sigma)).to(src.device)
        out = src.clone()
        out[y0:y1, x0:x1] = guided_filter(guide, src[y0:y1, x0:x1], radius, self.eps).clamp(0, 1)
        return out

    def mask(self, image: np.ndarray, logits: torch.Tensor, scale: float) -> np.ndarray:
        """The refined mask: :meth:`refine`'s probabilities above one half, as (H, W) bool."""
        return (self.refine(image, logits, scale) > 0.5).cpu().numpy()


def edge_box(p: torch.Tensor, margin: int, sure: float = 0.1) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1), ends exclusive: the box around every pixel of ``p`` (H, W) in [0, 1] that is not
    within ``sure`` of 0 or 1, or where p crosses 0.5 between neighbours, grown by ``margin`` px and kept
    inside the image; None if there is no such pixel.

    A pixel's output depends on p within 2r of it only, and where p is constant there, it is that
    constant. So with margin 2r, filtering the box alone changes the mask only where the whole image's
    filter would have lifted a sure pixel (p < ``sure`` or > 1 - ``sure`` all around) across 0.5, and it
    costs the object's surroundings instead of the whole image. SAM's background logits are rarely
    far below zero, hence a band of 0.1, not a hair's breadth.
    """
    inside = p > 0.5
    edge = (p > sure) & (p < 1 - sure)
    edge[1:] |= inside[1:] != inside[:-1]
    edge[:, 1:] |= inside[:, 1:] != inside[:, :-1]
    ys, xs = torch.nonzero(edge, as_tuple=True)
    if ys.numel() == 0:
        return None
    h, w = p.shape
    y0, y1 = max(0, int(ys.min()) - margin), min(h, int(ys.max()) + 1 + margin)
    x0, x1 = max(0, int(xs.min()) - margin), min(w, int(xs.max()) + 1 + margin)
    return y0, y1, x0, x1


def smoothed_guide(image: np.ndarray, box: tuple[int, int, int, int], sigma: float) -> np.ndarray:
    """(3, y1 - y0, x1 - x0) float64 in [0, 1]: ``image`` (H, W, 3) uint8 inside ``box`` (y0, y1, x0, x1),
    smoothed by a Gaussian of ``sigma`` px (0: not at all). The box is read with the Gaussian's reach
    around it, so it holds the same values as smoothing the whole image would give."""
    reach = int(TRUNCATE * sigma + 0.5)  # the kernel's radius, as scipy computes it
    h, w = image.shape[:2]
    y0, y1, x0, x1 = box
    oy, ox = max(0, y0 - reach), max(0, x0 - reach)
    window = image[oy : min(h, y1 + reach), ox : min(w, x1 + reach)] / 255.0
    if sigma > 0:
        window = gaussian_filter(window, (sigma, sigma, 0), mode="reflect", truncate=TRUNCATE)
    return np.ascontiguousarray(window[y0 - oy : y1 - oy, x0 - ox : x1 - ox].transpose(2, 0, 1))
