"""Binary masks <-> COCO run-length encoding (RLE), the form masks take in our Delta/Parquet tables.

Table columns and how they map onto this module:

- ``mask_rle_size``: int32[2] = ``[height, width]`` (COCO's order) -> ``RLE.size``
- ``mask_rle_counts``: binary, the compressed COCO RLE string -> ``RLE.counts`` (the exact bytes
  ``pycocotools.mask.encode`` returns, so COCO tools can read the column unchanged)
- ``area``: int, foreground pixel count -> ``area`` / ``areas``
- ``bbox``: COCO ``[x, y, w, h]`` in pixels as floats (COCO's own convention: pycocotools and the COCO
  evaluator use float xywh) -> ``bbox`` / ``bboxes``. ``x, y`` are the top-left pixel's column and row;
  ``w, h`` count pixels, so a single pixel at (row 2, col 3) has bbox ``(3, 2, 1, 1)``.

All pixel work happens inside pycocotools (C); the batch functions make one pycocotools call per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

# Kinds ``mask != 0`` is meaningful for: bool, signed/unsigned int, float.
_NUMERIC_KINDS = "biuf"


@dataclass(frozen=True)
class RLE:
    """A compressed COCO RLE: ``size`` is ``(height, width)`` in pixels, ``counts`` the RLE string's bytes.

    ``size`` accepts any length-2 sequence of ints and ``counts`` any bytes-like object, because Parquet
    readers hand back int32 arrays/lists and ``memoryview``s; both are normalised to ``tuple[int, int]``
    and ``bytes`` so that equality and hashing behave.
    """

    size: tuple[int, int]
    counts: bytes

    def __post_init__(self) -> None:
        if len(self.size) != 2:
            raise ValueError(f"RLE size must be (height, width), got {self.size!r}")
        h, w = (int(v) for v in self.size)
        if h <= 0 or w <= 0:
            raise ValueError(f"RLE size must be positive (height, width), got {(h, w)}")
        if isinstance(self.counts, str):
            raise TypeError("RLE counts must be bytes; use RLE.from_coco for a COCO dict with str counts")
        # Bypass the frozen guard only to store the normalised forms of the caller's own values.
        object.__setattr__(self, "size", (h, w))
        object.__setattr__(self, "counts", bytes(self.counts))

    def to_coco(self) -> dict[str, Any]:
        """The JSON-friendly COCO dict ``{"size": [h, w], "counts": str}`` (counts are ASCII)."""
        return {"size": list(self.size), "counts": self.counts.decode("ascii")}

    @classmethod
    def from_coco(cls, d: dict[str, Any]) -> RLE:
        """Build from a COCO RLE dict: compressed (``counts`` str or bytes) or uncompressed (list of ints).

        Uncompressed counts are column-major run lengths starting with a background run; they must sum
        to ``h * w`` (ValueError otherwise, since pycocotools would silently produce a corrupt mask).
        """
        h, w = (int(v) for v in d["size"])
        counts = d["counts"]
        if isinstance(counts, str):
            return cls((h, w), counts.encode("ascii"))
        if isinstance(counts, (bytes, bytearray, memoryview)):
            return cls((h, w), bytes(counts))
        total = int(np.sum(counts, dtype=np.int64))
        if total != h * w:
            raise ValueError(f"uncompressed RLE counts sum to {total}, expected h * w = {h * w}")
        compressed = mask_utils.frPyObjects({"size": [h, w], "counts": list(counts)}, h, w)
        return cls((h, w), compressed["counts"])


def _to_pyco(rle: RLE) -> dict[str, Any]:
    # pycocotools takes bytes counts as-is; str would be re-encoded on every call.
    return {"size": list(rle.size), "counts": rle.counts}


def _check_numeric(masks: np.ndarray) -> None:
    if masks.dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(f"mask dtype must be bool, integer or float, got {masks.dtype}")


def encode(mask: np.ndarray) -> RLE:
    """Encode one (H, W) mask; any nonzero value (NaN included) is foreground. Layout may be arbitrary."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    if mask.shape[0] == 0 or mask.shape[1] == 0:
        raise ValueError(f"mask must have positive height and width, got shape {mask.shape}")
    return encode_batch(mask[np.newaxis])[0]


def encode_batch(masks: np.ndarray) -> list[RLE]:
    """Encode (N, H, W) masks (nonzero = foreground) in one pycocotools call; N = 0 gives ``[]``."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be 3-D (N, H, W), got shape {masks.shape}")
    _check_numeric(masks)
    n, h, w = masks.shape
    if n == 0:
        return []
    if h == 0 or w == 0:
        raise ValueError(f"masks must have positive height and width, got shape {masks.shape}")
    # pycocotools wants Fortran-ordered uint8 (H, W, N); writing the comparison straight into such a buffer
    # binarises and relayouts any input (bool, strided, transposed) in a single pass.
    hwn = np.empty((h, w, n), dtype=np.uint8, order="F")
    np.not_equal(masks.transpose(1, 2, 0), 0, out=hwn)
    return [RLE((h, w), d["counts"]) for d in mask_utils.encode(hwn)]


def decode(rle: RLE) -> np.ndarray:
    """Decode to an (H, W) C-contiguous bool mask."""
    # pycocotools returns Fortran uint8 holding only 0/1, so a bool view is exact; the copy makes it C-order.
    return np.ascontiguousarray(mask_utils.decode(_to_pyco(rle)).view(bool))


def decode_batch(rles: Sequence[RLE], size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode RLEs sharing one ``(H, W)`` into an (N, H, W) C-contiguous bool array, in one pycocotools call.

    An empty sequence cannot tell us (H, W): pass ``size`` to get a (0, H, W) array, otherwise ValueError.
    When ``size`` is given, every RLE must have it. Mixed sizes raise ValueError (pycocotools would
    otherwise decode every mask with the first one's size and corrupt memory).
    """
    if size is None:
        if not rles:
            raise ValueError("decode_batch of an empty sequence needs size=(height, width)")
        size = rles[0].size
    h, w = (int(v) for v in size)
    sizes = {r.size for r in rles}
    if sizes - {(h, w)}:
        raise ValueError(f"all RLEs must have size {(h, w)}, got sizes {sorted(sizes)}")
    if not rles:
        return np.zeros((0, h, w), dtype=bool)
    hwn = mask_utils.decode([_to_pyco(r) for r in rles])
    return np.ascontiguousarray(hwn.transpose(2, 0, 1).view(bool))


def areas(rles: Sequence[RLE]) -> np.ndarray:
    """Foreground pixel counts, shape (N,) int64 (pycocotools gives uint32, which overflows on arithmetic)."""
    if not rles:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(mask_utils.area([_to_pyco(r) for r in rles]), dtype=np.int64)


def bboxes(rles: Sequence[RLE]) -> np.ndarray:
    """COCO ``[x, y, w, h]`` boxes in pixels, shape (N, 4) float64; empty masks get all zeros."""
    if not rles:
        return np.zeros((0, 4), dtype=np.float64)
    return np.asarray(mask_utils.toBbox([_to_pyco(r) for r in rles]), dtype=np.float64).reshape(-1, 4)


def area(rle: RLE) -> int:
    """Foreground pixel count, computed on the RLE without decoding."""
    return int(areas([rle])[0])


def bbox(rle: RLE) -> tuple[float, float, float, float]:
    """COCO ``(x, y, w, h)`` in pixels, computed on the RLE without decoding; ``(0, 0, 0, 0)`` if empty."""
    x, y, w, h = bboxes([rle])[0].tolist()
    return x, y, w, h


def iou(a: RLE, b: RLE) -> float:
    """Intersection over union of two same-size masks (pycocotools, non-crowd).

    Two empty masks have IoU 1.0, not pycocotools' 0.0: they agree on every pixel, and a review queue
    comparing a proposal with a human's "nothing here" must count that as agreement, not total
    disagreement.
    """
    if a.size != b.size:
        raise ValueError(f"iou needs masks of one size, got {a.size} and {b.size}")
    if not areas([a, b]).any():
        return 1.0
    return float(mask_utils.iou([_to_pyco(a)], [_to_pyco(b)], [0])[0, 0])
