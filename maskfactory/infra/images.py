"""Decode an image from any fsspec URI into an RGB ``uint8`` array of shape (H, W, 3).

Every image the pipeline labels goes through :func:`read_image`, so this is the one place that
decides what "an image" means: which modes are accepted, how transparency and high bit depths
become 8-bit RGB, and which files are refused. Refusals raise :class:`ImageError` with a short
machine-readable ``reason`` so a batch can record the item as ``status=error`` and keep going.
"""

from __future__ import annotations

import io
from enum import StrEnum

import fsspec
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from maskfactory.infra import storage
from maskfactory.infra.settings import Settings

__all__ = ["MAX_PIXELS", "ImageError", "ImageErrorReason", "decode_image", "read_image"]

# 64 megapixels (8192 x 8192) covers 8K frames (33 MP) and today's high-resolution camera
# sensors (~61 MP), yet bounds one decoded image at ~200 MB of RGB (about 1 GB transiently for the
# rare 32-bit modes), so a labelling worker decoding a batch in parallel cannot be pushed out of
# memory by one outlier. SAM resizes everything to 1024 px anyway, so larger inputs buy no quality.
# Pillow's own limit (178,956,970 pixels, an error at twice Image.MAX_IMAGE_PIXELS) is process-global
# state and only warns below that, so we check our own limit per call; a max_pixels raised above
# Pillow's limit is still capped by it (reported as "too_large" too).
MAX_PIXELS = 64 * 1024 * 1024


class ImageErrorReason(StrEnum):
    """Why an image was refused; the values are what error rows store."""

    UNREADABLE = "unreadable"  # not an image, corrupt or truncated, or the bytes could not be read
    EMPTY = "empty"  # zero bytes
    TOO_LARGE = "too_large"  # width * height above max_pixels
    UNSUPPORTED_MODE = "unsupported_mode"  # decoded, but no meaningful RGB rendering (e.g. LAB, HSV)
    NOT_FOUND = "not_found"  # no object at the URI
    TOO_THIN = "too_thin"  # decoded, but a side shrinks below a few pixels at the model's input (labelling)


class ImageError(Exception):
    """An image that cannot be turned into RGB pixels.

    ``reason`` is an :class:`ImageErrorReason` (a ``str``), ``uri`` the image's URI (``"<bytes>"``
    when decoding bytes with no URI given) and ``detail`` the underlying cause, for humans.
    """

    def __init__(self, reason: ImageErrorReason, uri: str, detail: str = "") -> None:
        self.reason = ImageErrorReason(reason)
        self.uri = uri
        self.detail = detail
        message = f"cannot read image {uri!r}: {self.reason}"
        super().__init__(f"{message} ({detail})" if detail else message)

    def __reduce__(self) -> tuple[type[ImageError], tuple[str, str, str]]:
        # Ray ships worker exceptions between processes by pickling; the default Exception pickling
        # would call ImageError(message) and fail, losing the reason.
        return (type(self), (str(self.reason), self.uri, self.detail))


# Pillow modes and how each becomes RGB. Everything else (LAB, HSV, the premultiplied La/RGBa, ...)
# is refused: converting them needs colour management or knowledge we do not have.
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_STRETCHED_MODES = frozenset({"I", "F"})
_ALPHA_MODES = frozenset({"LA", "PA", "RGBA"})
# CMYK uses Pillow's naive (profile-free) conversion; YCbCr is exact.
_CONVERTIBLE_MODES = frozenset({"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr"})
# Modes whose info["transparency"] (a palette index or a tRNS colour key) Pillow turns into alpha.
# A colour key on a 16-bit greyscale image is ignored: such files are rare and the key is exact-match.
_KEYED_MODES = frozenset({"1", "L", "P", "RGB"})

# Transparent pixels are composited over white rather than having alpha dropped: the RGB stored
# under fully transparent pixels is arbitrary (often black or leftover editing garbage), and a fixed
# background gives the model and the reviewer what an image viewer shows. White because that is how
# browsers and most viewers display transparency.
_BACKGROUND = 255


def decode_image(data: bytes, *, uri: str = "<bytes>", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode encoded image bytes into a C-contiguous, writable ``uint8`` array of shape (H, W, 3).

    ``uri`` only labels errors. ``max_pixels`` caps width * height, checked from the header before
    any pixel data is decoded. Multi-frame files (GIF, TIFF, APNG, ...) yield their first frame.
    EXIF orientation is applied, so H and W are the displayed height and width.

    Raises :class:`ImageError` with reason ``empty``, ``too_large``, ``unreadable`` or
    ``unsupported_mode``.
    """
    if not data:
        raise ImageError(ImageErrorReason.EMPTY, uri, "zero bytes")
    try:
        # Image.open only parses the header, so the size check below runs before any pixel data
        # is decompressed: a small file claiming a huge size is refused without allocating for it.
        # A header claiming zero width or height never gets here: Pillow refuses to identify such a
        # file, so it is reported as "unreadable" (zero bytes are the only "empty" input).
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise ImageError(
                    ImageErrorReason.TOO_LARGE,
                    uri,
                    f"{width}x{height} = {width * height} pixels > max_pixels={max_pixels}",
                )
            # load() is where decoding (and so corruption or truncation) surfaces; truncated data
            # raises here because ImageFile.LOAD_TRUNCATED_IMAGES is left False: silently padding
            # a half image with grey would produce a wrong label rather than an error row.
            img.load()
            # Reads EXIF, which can be malformed too, so it stays inside the try.
            ImageOps.exif_transpose(img, in_place=True)
            return _to_rgb(img, uri)
    except Image.DecompressionBombError as exc:
        raise ImageError(ImageErrorReason.TOO_LARGE, uri, str(exc)) from exc
    except UnidentifiedImageError as exc:
        # Pillow's own message names the BytesIO object, which tells a reader nothing.
        raise ImageError(ImageErrorReason.UNREADABLE, uri, "not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError, EOFError, NotImplementedError) as exc:
        # Pillow signals corrupt and truncated data with these types; some plugins (DDS, BLP) raise
        # NotImplementedError for header variants they cannot decode, which is unreadable to us too.
        raise ImageError(ImageErrorReason.UNREADABLE, uri, f"{type(exc).__name__}: {exc}") from exc


def read_image(
    uri: str,
    *,
    max_pixels: int = MAX_PIXELS,
    storage_options: dict | None = None,
    settings: Settings | None = None,
) -> np.ndarray:
    """Read and decode the image at ``uri`` (a plain path, ``file://``, ``s3://``, any fsspec URI).

    Returns a C-contiguous ``uint8`` array of shape (H, W, 3); see :func:`decode_image`.
    ``storage_options`` go to :func:`fsspec.open`; by default they come from settings (the S3
    endpoint and credentials), as for every other URI the system opens.

    Raises :class:`ImageError`: ``not_found`` when nothing is at ``uri``, ``unreadable`` when it
    cannot be read (permissions, a directory, I/O errors), else as :func:`decode_image`. An unknown
    protocol or a missing filesystem package is a configuration error and propagates unchanged.
    """
    # Outside the try: fsspec.open only resolves the protocol and builds the filesystem, and what
    # fails there (unknown protocol, bad options) is wrong for every image, not just this one.
    if storage_options is None:
        storage_options = storage.fsspec_options(uri, settings)
    opened = fsspec.open(uri, "rb", **storage_options)
    try:
        with opened as f:
            data = f.read()
    except FileNotFoundError as exc:
        raise ImageError(ImageErrorReason.NOT_FOUND, uri, str(exc)) from exc
    except (OSError, ValueError) as exc:
        # OSError: PermissionError, IsADirectoryError and the OSErrors s3fs maps its failures to.
        # ValueError: s3fs's answer to a URI naming a bucket rather than an object.
        raise ImageError(ImageErrorReason.UNREADABLE, uri, f"{type(exc).__name__}: {exc}") from exc
    return decode_image(data, uri=uri, max_pixels=max_pixels)


def _to_rgb(img: Image.Image, uri: str) -> np.ndarray:
    """Turn a loaded Pillow image into a C-contiguous ``uint8`` array of shape (H, W, 3)."""
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES:
        # Keep the high byte: 0..65535 maps onto 0..255 across the type's whole range. Pillow's
        # convert("L") would instead clip every value above 255 to white.
        grey = (np.asarray(img, dtype=np.uint16) >> 8).astype(np.uint8)
    elif mode in _STRETCHED_MODES:
        # 32-bit integer and float images have no conventional white point (depth maps, HDR,
        # scientific data), so each is stretched by its own min/max to use all 256 levels.
        # float64 holds every int32 exactly; the dtype change makes a fresh array to work in place.
        grey = _stretch_to_uint8(np.asarray(img, dtype=np.float64))
    elif mode in _ALPHA_MODES or (mode in _KEYED_MODES and "transparency" in img.info):
        return _composite_over_background(np.asarray(img.convert("RGBA")))
    elif mode in _CONVERTIBLE_MODES:
        return np.array(img.convert("RGB"), dtype=np.uint8, order="C")
    else:
        raise ImageError(ImageErrorReason.UNSUPPORTED_MODE, uri, f"Pillow mode {mode!r}")
    return np.repeat(grey[:, :, np.newaxis], 3, axis=2)


def _stretch_to_uint8(values: np.ndarray) -> np.ndarray:
    """Linearly map (H, W) float64 ``values`` from their finite min..max onto 0..255 as ``uint8``.

    A constant image has no range to stretch and maps to 0. NaN maps to 0, +inf to 255, -inf to 0.
    ``values`` is overwritten: at the pixel limit every float64 temporary costs half a gigabyte.
    """
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, dtype=np.uint8)
    lo = values.min(where=finite, initial=np.inf)
    hi = values.max(where=finite, initial=-np.inf)
    if lo == hi:
        return np.zeros(values.shape, dtype=np.uint8)
    np.nan_to_num(values, copy=False, nan=lo, posinf=hi, neginf=lo)
    values -= lo
    values *= 255.0 / (hi - lo)
    return np.rint(values, out=values).astype(np.uint8)


def _composite_over_background(rgba: np.ndarray) -> np.ndarray:
    """Alpha-composite an (H, W, 4) ``uint8`` array over the background; returns (H, W, 3) ``uint8``."""
    rgb = rgba[:, :, :3].astype(np.uint16)
    alpha = rgba[:, :, 3:].astype(np.uint16)
    # Integer blend rounded to nearest; the largest intermediate, 255 * 255 + 127, fits in uint16.
    blended = (rgb * alpha + _BACKGROUND * (255 - alpha) + 127) // 255
    return blended.astype(np.uint8)
