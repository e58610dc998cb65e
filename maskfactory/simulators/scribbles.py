"""The DAVIS interactive scribble robot: strokes a simulated annotator draws on a frame's errors.

After Caelles et al., "The 2018 DAVIS Challenge on Video Object Segmentation" and its robot in
``davisinteractive/robot/interactive_robot.py``, for one object's mask in one frame. For each error map
(misses -> positive strokes, false alarms -> negative strokes):

1. Morphological opening with a disk of radius ``min(max_kernel_radius, kernel_size * sqrt(area) / 2)``,
   ``area`` being the whole error map's pixel count, to drop thin slivers and specks. If the opening
   leaves nothing, the radius shrinks by 10 % and is tried again while it is above 1 px; at or below 1 px
   no opening is done. As in DAVIS, a large error map so thin that even the smallest tried disk empties
   it gets no stroke, so an empty answer does not mean the prediction is perfect.
2. Medial-axis skeleton (``skimage.morphology.medial_axis``, seeded from ``rng``), the image border
   counting as an edge.
3. A graph over skeleton pixels, edges between 8-neighbours weighted by their distance (1 or sqrt 2).
   Each connected component with at least ``min_nb_nodes`` pixels becomes a tree (minimum spanning tree:
   it breaks the skeleton's small loops by dropping diagonal edges first, where DAVIS drops the heaviest
   edge of each cycle found) and gives its longest path (two farthest-node sweeps, exact on a tree).
4. The path is smoothed and resampled to ``nb_points`` points evenly spaced along it. DAVIS fits one
   Bezier curve through all path pixels; that cuts corners by many pixels on bent paths (a Bezier curve
   only approximates its control polygon), so a Gaussian along the path (sigma ``SMOOTHING_SIGMA`` path
   pixels) is used instead. It keeps strokes inside their error region up to about 1 px.

Coordinates: ``x`` is the column and ``y`` the row of pixel centres, in pixels (as ``Click``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import networkx as nx
import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter1d
from skimage.morphology import medial_axis

# Gaussian sigma along the path, in path pixels: enough to remove the skeleton's 1-px staircase, small
# enough that a smoothed point stays within about 1 px of the skeleton pixels it averages.
SMOOTHING_SIGMA = 1.0

# 8-neighbour offsets (row, column) that cover each undirected pair once.
_HALF_NEIGHBOURHOOD = ((0, 1), (1, -1), (1, 0), (1, 1))


@dataclass(frozen=True)
class Stroke:
    """A scribble: ``points`` (N, 2) float (x, y) pixels in drawing order; ``positive`` on a miss."""

    points: np.ndarray
    positive: bool


def _open_with_disk(mask: np.ndarray, radius: float) -> np.ndarray:
    """Opening of (H, W) bool ``mask`` by the disk {x^2 + y^2 <= radius^2} (integer offsets).

    Distance transforms make it exact and O(H*W) whatever the radius. Outside the image counts as
    background for the erosion, so the border is an edge here as in the skeleton.
    """
    eroded = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1] > radius
    if not eroded.any():
        return eroded
    return distance_transform_edt(~eroded) <= radius


def _skeleton(
    error: np.ndarray, kernel_size: float, max_kernel_radius: float, rng: np.random.Generator
) -> np.ndarray:
    """(H, W) bool medial axis of the opened error map (step 1-2 of the module docstring)."""
    radius = min(kernel_size * np.sqrt(np.count_nonzero(error)) * 0.5, max_kernel_radius)
    opened = error
    while radius > 1.0:
        opened = _open_with_disk(error, radius)
        if opened.any():
            break
        radius *= 0.9
    if not opened.any():
        return opened
    return medial_axis(np.pad(opened, 1), rng=rng)[1:-1, 1:-1]


def _longest_paths(skeleton: np.ndarray, min_nb_nodes: int) -> list[np.ndarray]:
    """(K, 2) float (x, y) longest path of each large enough skeleton component, longest first."""
    rows, cols = np.nonzero(skeleton)
    index = np.full((skeleton.shape[0] + 2, skeleton.shape[1] + 2), -1)
    index[rows + 1, cols + 1] = np.arange(rows.size)
    graph = nx.Graph()
    graph.add_nodes_from(range(rows.size))
    for dr, dc in _HALF_NEIGHBOURHOOD:
        neighbour = index[rows + 1 + dr, cols + 1 + dc]
        has = neighbour >= 0
        weight = float(np.hypot(dr, dc))
        graph.add_weighted_edges_from(
            (u, v, weight) for u, v in zip(np.flatnonzero(has).tolist(), neighbour[has].tolist(), strict=True)
        )
    paths: list[tuple[float, np.ndarray]] = []
    for component in nx.connected_components(graph):
        if len(component) < min_nb_nodes:
            continue
        tree = nx.minimum_spanning_tree(graph.subgraph(component))
        # Farthest node from any node is one end of the tree's longest path; farthest from it, the other.
        first = nx.single_source_dijkstra_path_length(tree, min(component))
        end = max(first, key=first.__getitem__)
        lengths, routes = nx.single_source_dijkstra(tree, end)
        far = max(lengths, key=lengths.__getitem__)
        nodes = np.asarray(routes[far])
        paths.append((lengths[far], np.column_stack([cols[nodes], rows[nodes]]).astype(float)))
    # Stable sort: equal lengths keep the components' row-major order, so the output is deterministic.
    paths.sort(key=lambda item: -item[0])
    return [path for _, path in paths]


def _resample(points: np.ndarray, n: int) -> np.ndarray:
    """(n, 2) points evenly spaced by arc length along the polyline ``points`` (M, 2)."""
    steps = np.hypot(*np.diff(points, axis=0).T)
    keep = np.concatenate([[True], steps > 0])  # repeated points would stall the interpolation
    points, arc = points[keep], np.concatenate([[0.0], np.cumsum(steps[steps > 0])])
    if arc[-1] == 0.0:
        return np.repeat(points[:1], n, axis=0)
    at = np.linspace(0.0, arc[-1], n)
    return np.column_stack([np.interp(at, arc, points[:, 0]), np.interp(at, arc, points[:, 1])])


def scribble(
    pred: np.ndarray,
    gt: np.ndarray,
    rng: np.random.Generator,
    *,
    kernel_size: float = 0.15,
    max_kernel_radius: int = 16,
    min_nb_nodes: int = 4,
    nb_points: int = 1000,
) -> list[Stroke]:
    """The robot's strokes for prediction ``pred`` against ground truth ``gt``, both (H, W) bool.

    Positive strokes (on misses) come first, then negative ones (on false alarms), each longest first.
    ``kernel_size`` in [0, 1): opening radius as a fraction of sqrt(error area) / 2; ``max_kernel_radius``
    px caps it; components of fewer than ``min_nb_nodes`` skeleton pixels are dropped; every stroke has
    ``nb_points`` points. Returns [] for a perfect prediction. ``rng`` seeds the medial axis's tie-breaks:
    the same seed gives the same strokes.
    """
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.ndim != 2 or pred.shape != gt.shape:
        raise ValueError(f"pred and gt must be 2-D masks of one shape, got {pred.shape} and {gt.shape}")
    if not 0.0 <= kernel_size < 1.0:
        raise ValueError(f"kernel_size must be in [0, 1), got {kernel_size}")
    strokes: list[Stroke] = []
    for positive, error in ((True, gt & ~pred), (False, pred & ~gt)):
        if not error.any():
            continue
        skeleton = _skeleton(error, kernel_size, max_kernel_radius, rng)
        for path in _longest_paths(skeleton, min_nb_nodes):
            smooth = gaussian_filter1d(path, SMOOTHING_SIGMA, axis=0, mode="nearest")
            strokes.append(Stroke(points=_resample(smooth, nb_points), positive=positive))
    return strokes


def strokes_to_mask(
    strokes: Sequence[Stroke], shape: tuple[int, int], radius: float = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise strokes into (H, W) bool (positive, negative) masks.

    Each stroke is walked at <= 0.5 px spacing so no pixel along it is skipped, rounded to pixels, and
    thickened to every pixel within ``radius`` px (Euclidean; 0 keeps the 1-px line). Parts outside the
    image are dropped.
    """
    h, w = shape
    masks = {True: np.zeros(shape, dtype=bool), False: np.zeros(shape, dtype=bool)}
    for stroke in strokes:
        points = np.asarray(stroke.points, dtype=float)
        length = np.hypot(*np.diff(points, axis=0).T).sum()
        dense = _resample(points, int(np.ceil(length / 0.5)) + 1)
        cols, rows = np.rint(dense).astype(int).T
        inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        masks[stroke.positive][rows[inside], cols[inside]] = True
    if radius > 0:
        for key, mask in masks.items():
            if mask.any():
                masks[key] = distance_transform_edt(~mask) <= radius
    return masks[True], masks[False]
