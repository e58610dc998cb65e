"""Files that look like images but must become error rows: the pipeline's bad-input cases.

One per refusal reason of ``infra.images`` (plus a too-thin image, refused by the labelling stage).
Each is a few hundred bytes at most, made deterministically, so tests and the demo can mix them into
a source and check that each ends as ``status=error`` with its reason while the rest is labelled.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from maskfactory.infra import storage
from maskfactory.infra.settings import Settings


def patch_png_size(png: bytes, width: int, height: int) -> bytes:
    """Rewrite the IHDR width/height of a PNG and fix the chunk CRC, leaving the pixel data alone."""
    # Signature (8) + chunk length (4), then the IHDR chunk: type (4), 13 bytes of data, CRC (4).
    if png[12:16] != b"IHDR":
        raise ValueError("not a PNG with IHDR first")
    chunk = b"IHDR" + struct.pack(">II", width, height) + png[24:29]
    return png[:12] + chunk + struct.pack(">I", zlib.crc32(chunk)) + png[33:]


def _encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def bad_image_files() -> dict[str, tuple[bytes, str]]:
    """File name -> (bytes, the error reason the pipeline must record)."""
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    png = _encode(Image.fromarray(noise), "PNG")
    return {
        "truncated.png": (png[: len(png) // 2], "unreadable"),  # noise: the cut lands in pixel data
        "not-an-image.jpg": (b"this is a text file with an image suffix\n", "unreadable"),
        "empty.png": (b"", "empty"),
        # The header claims 9000 x 9000 (81 MP, above the 64 MP limit); only 16 x 16 pixels follow.
        "huge.png": (patch_png_size(_encode(Image.new("L", (16, 16)), "PNG"), 9000, 9000), "too_large"),
        "lab.tif": (_encode(Image.new("LAB", (8, 8), (50, 0, 0)), "TIFF"), "unsupported_mode"),
        "thin.png": (_encode(Image.new("RGB", (1000, 2)), "PNG"), "too_thin"),
    }


def write_bad_images(folder: str, settings: Settings | None = None) -> dict[str, str]:
    """Write every bad file under ``folder``; returns URI -> expected error reason."""
    out = {}
    for name, (data, reason) in bad_image_files().items():
        uri = storage.join(folder, name)
        storage.write_bytes(uri, data, settings)
        out[uri] = reason
    return out
