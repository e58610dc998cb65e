"""World datasets on disk: PNG images, PNG masks and a manifest, the same shape of input a user brings.

Layout under ``out`` (a local path or ``s3://`` URI)::

    images/000000.png      RGB image
    masks/000000.png       the task's target mask (0 / 255)
    instances/000000.png   instance label image: 0 = background, k = instance k (1-based)
    manifest.parquet       one row per item (schema: MANIFEST)

Videos (``write_videos``)::

    videos/<video_id>/frames/00000.png   RGB frame
    videos/<video_id>/masks/00000.png    object label image per frame: 0 = background, k = object k
    manifest.parquet                     one row per video (schema: VIDEO_MANIFEST)

Item ``i`` of a dataset made with seed ``s`` is generated from seed ``s * SEED_STRIDE + i``, so two
datasets with different seeds never share an image (held-out evaluation sets use other seeds).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from maskfactory.infra import storage
from maskfactory.infra.images import decode_image
from maskfactory.infra.settings import Settings
from maskfactory.simulators.video import make_video
from maskfactory.simulators.world import make_sample

SEED_STRIDE = 1_000_000
# Manifest metadata key: how the dataset was made (the `world make` command, or the call), so that
# what is fitted on it (an agent's confidence, say) can say where its data came from.
MADE_BY = b"maskfactory.made_by"

MANIFEST = pa.schema(
    [
        ("item", pa.string()),
        ("image_uri", pa.string()),
        ("mask_uri", pa.string()),
        ("instances_uri", pa.string()),
        ("task", pa.string()),
        ("domain", pa.string()),
        ("prompt", pa.string()),
        ("branch", pa.string()),
        ("seed", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("object_kinds", pa.list_(pa.string())),  # per instance, in label order (label k = index k-1)
        ("object_colors", pa.list_(pa.string())),
    ]
)

VIDEO_MANIFEST = pa.schema(
    [
        ("video_id", pa.string()),
        ("frames_uri", pa.string()),  # folder of frames 00000.png ...
        ("masks_uri", pa.string()),
        ("domain", pa.string()),
        ("seed", pa.int64()),
        ("n_frames", pa.int32()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("object_kinds", pa.list_(pa.string())),
        ("object_colors", pa.list_(pa.string())),
    ]
)


def png_bytes(array: np.ndarray) -> bytes:
    """Encode an (H, W, 3) uint8 image or an (H, W) uint8 label/mask image as PNG."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def label_image(masks: np.ndarray) -> np.ndarray:
    """(K, H, W) bool non-overlapping masks -> (H, W) uint8 labels, 0 = background, k = mask k-1."""
    if masks.shape[0] > 255:
        raise ValueError("at most 255 instances fit a uint8 label image")
    labels = np.zeros(masks.shape[1:], dtype=np.uint8)
    for k, m in enumerate(masks, start=1):
        labels[m] = k
    return labels


def instances_from_labels(labels: np.ndarray, count: int) -> np.ndarray:
    """(H, W) label image -> (count, H, W) bool masks (label k -> mask k-1)."""
    return labels[None] == np.arange(1, count + 1, dtype=labels.dtype)[:, None, None]


def write_dataset(
    out: str,
    task: str,
    domain: str = "natural",
    n: int = 200,
    seed: int = 0,
    size: tuple[int, int] = (256, 256),
    n_objects: int | None = None,
    settings: Settings | None = None,
    progress: Callable[[int], None] | None = None,
    made_by: str | None = None,
) -> str:
    """Generate ``n`` samples and write them under ``out``; returns the manifest URI.

    ``progress(k)`` is called after each written item (the CLI draws a bar with it). ``made_by``
    (default: this call and its arguments) goes into the manifest's metadata (``read_made_by``).
    """
    out = storage.normalize(out)
    made_by = made_by or (
        f"write_dataset(task={task!r}, domain={domain!r}, n={n}, seed={seed}, size={size}, "
        f"n_objects={n_objects})"
    )

    def write_one(i: int) -> dict[str, object]:
        item_seed = seed * SEED_STRIDE + i
        s = make_sample(task, domain, seed=item_seed, size=size, n_objects=n_objects)
        name = f"{i:06d}.png"
        uris = {k: storage.join(out, k, name) for k in ("images", "masks", "instances")}
        storage.write_bytes(uris["images"], png_bytes(s.image), settings)
        storage.write_bytes(uris["masks"], png_bytes(s.target.astype(np.uint8) * 255), settings)
        storage.write_bytes(uris["instances"], png_bytes(label_image(s.objects)), settings)
        return {
            "item": f"{task}-{domain}-{item_seed}",
            "image_uri": uris["images"],
            "mask_uri": uris["masks"],
            "instances_uri": uris["instances"],
            "task": task,
            "domain": domain,
            "prompt": s.prompt,
            "branch": s.branch,
            "seed": item_seed,
            "width": s.image.shape[1],
            "height": s.image.shape[0],
            "object_kinds": s.object_kinds,
            "object_colors": s.object_colors,
        }

    rows = list(_map_in_threads(write_one, range(n), progress))
    return _write_manifest(out, pa.Table.from_pylist(rows, schema=MANIFEST), made_by, settings)


def write_videos(
    out: str,
    domain: str = "natural",
    n: int = 10,
    seed: int = 0,
    settings: Settings | None = None,
    progress: Callable[[int], None] | None = None,
    made_by: str | None = None,
) -> str:
    """Generate ``n`` videos and write their frames and per-frame object labels; returns the manifest URI.

    ``made_by`` as in ``write_dataset``."""
    out = storage.normalize(out)
    made_by = made_by or f"write_videos(domain={domain!r}, n={n}, seed={seed})"

    def write_one(i: int) -> dict[str, object]:
        v = make_video(seed * SEED_STRIDE + i, domain)
        root = storage.join(out, "videos", v.video_id)
        for t in range(v.frames.shape[0]):
            storage.write_bytes(
                storage.join(root, "frames", f"{t:05d}.png"), png_bytes(v.frames[t]), settings
            )
            storage.write_bytes(
                storage.join(root, "masks", f"{t:05d}.png"), png_bytes(label_image(v.masks[t])), settings
            )
        return {
            "video_id": v.video_id,
            "frames_uri": storage.join(root, "frames"),
            "masks_uri": storage.join(root, "masks"),
            "domain": domain,
            "seed": v.seed,
            "n_frames": v.frames.shape[0],
            "width": v.frames.shape[2],
            "height": v.frames.shape[1],
            "object_kinds": v.object_kinds,
            "object_colors": v.object_colors,
        }

    rows = list(_map_in_threads(write_one, range(n), progress))
    return _write_manifest(out, pa.Table.from_pylist(rows, schema=VIDEO_MANIFEST), made_by, settings)


def _map_in_threads(
    fn: Callable[[int], dict[str, object]], items: range, progress: Callable[[int], None] | None
) -> Iterator[dict[str, object]]:
    # Threads overlap PNG encoding (which releases the GIL) and S3 round trips; results keep item order.
    with ThreadPoolExecutor(max_workers=4) as pool:
        for row in pool.map(fn, items):
            if progress:
                progress(1)
            yield row


def _write_manifest(out: str, table: pa.Table, made_by: str, settings: Settings | None) -> str:
    uri = storage.join(out, "manifest.parquet")
    buf = io.BytesIO()
    pq.write_table(table.replace_schema_metadata({MADE_BY: made_by.encode()}), buf)
    storage.write_bytes(uri, buf.getvalue(), settings)
    return uri


@dataclass
class Item:
    """One dataset item read back: image, target mask, instance masks and the manifest row."""

    image: np.ndarray  # (H, W, 3) uint8
    target: np.ndarray  # (H, W) bool
    instances: np.ndarray  # (K, H, W) bool
    row: dict[str, object]


def read_manifest(data: str, settings: Settings | None = None) -> pa.Table:
    """The manifest of a dataset folder (or a manifest file URI)."""
    uri = data if data.endswith(".parquet") else storage.join(data, "manifest.parquet")
    return pq.read_table(io.BytesIO(storage.read_bytes(uri, settings)))


def read_made_by(data: str, settings: Settings | None = None) -> str | None:
    """How the dataset at ``data`` was made, as its manifest says; None for a manifest that does not
    say (a user's own, or one written before 2026-12-02)."""
    metadata = read_manifest(data, settings).schema.metadata or {}
    return metadata[MADE_BY].decode() if MADE_BY in metadata else None


def read_item(row: dict[str, object], settings: Settings | None = None) -> Item:
    image = decode_image(storage.read_bytes(str(row["image_uri"]), settings), uri=str(row["image_uri"]))
    target = read_mask(str(row["mask_uri"]), settings)
    labels = _read_gray(str(row["instances_uri"]), settings)
    return Item(image, target, instances_from_labels(labels, len(row["object_kinds"])), row)  # type: ignore[arg-type]


def iter_items(data: str, settings: Settings | None = None, limit: int | None = None) -> Iterator[Item]:
    rows = read_manifest(data, settings).to_pylist()
    for row in rows[:limit]:
        yield read_item(row, settings)


def read_mask(uri: str, settings: Settings | None = None) -> np.ndarray:
    """A mask PNG (0 / 255) as an (H, W) bool array."""
    return _read_gray(uri, settings) > 127


def _read_gray(uri: str, settings: Settings | None) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(storage.read_bytes(uri, settings))))
