"""Tests for maskfactory.infra.images: real files written with Pillow or as raw bytes, no mocks."""

from __future__ import annotations

import io
import os
import pickle
import struct
import time
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest
from PIL import Image

from maskfactory.infra.images import MAX_PIXELS, ImageError, ImageErrorReason, decode_image, read_image
from maskfactory.simulators.bad_images import patch_png_size

RED = (255, 0, 0)


def _encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _assert_rgb(out: np.ndarray, height: int, width: int) -> None:
    assert out.shape == (height, width, 3)
    assert out.dtype == np.uint8
    assert out.flags.c_contiguous
    assert out.flags.writeable


def _grey(values: np.ndarray) -> np.ndarray:
    """(H, W) grey levels as the (H, W, 3) uint8 image they should decode to."""
    return np.repeat(np.asarray(values, dtype=np.uint8)[:, :, np.newaxis], 3, axis=2)


def _over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Reference compositing in floating point: (H, W, 3) colour, (H, W) alpha -> (H, W, 3) uint8."""
    a = alpha[:, :, np.newaxis] / 255.0
    return np.rint(rgb * a + 255.0 * (1.0 - a)).astype(np.uint8)


def _noise_image(size: int = 64) -> Image.Image:
    # Noise does not compress, so cutting the file in half really cuts into the pixel data.
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


# --- refusals: one real file per reason -------------------------------------------------------


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    path = tmp_path / "missing.png"
    for uri in (str(path), path.as_uri()):
        with pytest.raises(ImageError) as info:
            read_image(uri)
        assert info.value.reason == ImageErrorReason.NOT_FOUND == "not_found"
        assert info.value.uri == uri


def test_zero_byte_file_is_empty(tmp_path: Path) -> None:
    path = _write(tmp_path, "empty.png", b"")
    with pytest.raises(ImageError) as info:
        read_image(str(path))
    assert info.value.reason == "empty"


def test_random_bytes_are_unreadable(tmp_path: Path) -> None:
    path = _write(tmp_path, "noise.jpg", np.random.default_rng(0).bytes(4096))
    with pytest.raises(ImageError) as info:
        read_image(str(path))
    assert info.value.reason == "unreadable"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "TIFF", "BMP", "WEBP"])
def test_file_truncated_halfway_is_unreadable_not_padded(tmp_path: Path, fmt: str) -> None:
    data = _encode(_noise_image(), fmt)
    path = _write(tmp_path, f"half.{fmt.lower()}", data[: len(data) // 2])
    with pytest.raises(ImageError) as info:
        read_image(str(path))
    assert info.value.reason == "unreadable"


def test_file_variant_pillow_cannot_decode_is_unreadable() -> None:
    # A DDS texture whose pixel format (FourCC "ZZZZ") Pillow does not implement: its plugin raises
    # NotImplementedError, which must not escape as anything but an ImageError.
    dds = bytearray(_encode(Image.new("RGB", (4, 4)), "DDS"))
    dds[84:92] = struct.pack("<I", 0x4) + b"ZZZZ"  # pixel format flags = DDPF_FOURCC, then the FourCC
    with pytest.raises(ImageError) as info:
        decode_image(bytes(dds))
    assert info.value.reason == "unreadable"


def test_directory_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ImageError) as info:
        read_image(str(tmp_path))
    assert info.value.reason == "unreadable"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions")
def test_unreadable_permissions(tmp_path: Path) -> None:
    path = _write(tmp_path, "locked.png", _encode(Image.new("RGB", (4, 4)), "PNG"))
    path.chmod(0)
    with pytest.raises(ImageError) as info:
        read_image(str(path))
    assert info.value.reason == "unreadable"


def test_zero_sized_header_is_unreadable() -> None:
    # Pillow refuses to identify any file whose header says width or height 0, so such a file cannot
    # reach a decoded state; it is reported as unreadable, and "empty" is reserved for zero bytes.
    png = _encode(Image.new("L", (8, 8)), "PNG")
    for width, height in ((0, 8), (8, 0)):
        with pytest.raises(ImageError) as info:
            decode_image(patch_png_size(png, width, height))
        assert info.value.reason == "unreadable"


@pytest.mark.parametrize("pillow_limit", [Image.MAX_IMAGE_PIXELS, None], ids=["pillow-default", "pillow-off"])
def test_decompression_bomb_is_too_large_and_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pillow_limit: int | None
) -> None:
    # With Pillow's process-global limit switched off, our own per-call check still catches it.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)
    bomb = patch_png_size(_encode(Image.new("L", (16, 16)), "PNG"), 100_000, 100_000)
    path = _write(tmp_path, "bomb.png", bomb)
    start = time.perf_counter()
    with pytest.raises(ImageError) as info:
        read_image(str(path))
    assert time.perf_counter() - start < 0.5
    assert info.value.reason == "too_large"


def test_pixel_limit_is_checked_before_decoding() -> None:
    # 9000 x 9000 is above MAX_PIXELS but below Pillow's own limits. The IDAT holds 16 x 16 pixels,
    # so decoding first would fail as "unreadable" (truncated); "too_large" shows the header decided.
    assert MAX_PIXELS < 9000 * 9000
    bomb = patch_png_size(_encode(Image.new("L", (16, 16)), "PNG"), 9000, 9000)
    with pytest.raises(ImageError) as info:
        decode_image(bomb)
    assert info.value.reason == "too_large"
    assert "9000x9000" in str(info.value)


def test_max_pixels_can_be_overridden(tmp_path: Path) -> None:
    path = _write(tmp_path, "square.png", _encode(Image.new("RGB", (100, 100)), "PNG"))
    with pytest.raises(ImageError) as info:
        read_image(str(path), max_pixels=5000)
    assert info.value.reason == "too_large"
    # The limit is inclusive.
    _assert_rgb(read_image(str(path), max_pixels=100 * 100), 100, 100)


def test_lab_tiff_is_unsupported_mode(tmp_path: Path) -> None:
    # CIELAB TIFFs decode to Pillow mode "LAB", which has no RGB conversion without colour management.
    path = _write(tmp_path, "lab.tif", _encode(Image.new("LAB", (4, 3), (50, 0, 0)), "TIFF"))
    with pytest.raises(ImageError) as info:
        read_image(str(path))
    assert info.value.reason == "unsupported_mode"
    assert "LAB" in str(info.value)


@pytest.mark.filterwarnings("ignore:Truncated File Read")  # Pillow's TIFF plugin warns, then raises
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "TIFF", "BMP", "WEBP"])
def test_damaged_files_only_ever_raise_image_error(fmt: str) -> None:
    data = _encode(_noise_image(32), fmt)
    rng = np.random.default_rng(0)
    damaged = [data[:cut] for cut in rng.integers(1, len(data), 8)]
    for offset in rng.integers(0, len(data), 8):
        flipped = bytearray(data)
        flipped[offset] ^= 0xFF
        damaged.append(bytes(flipped))
    for blob in damaged:
        try:
            out = decode_image(blob)
        except ImageError as exc:
            assert exc.reason in {"unreadable", "too_large", "unsupported_mode"}
        else:
            assert out.dtype == np.uint8
            assert out.ndim == 3
            assert out.shape[2] == 3


# --- modes: every supported mode decodes to the right RGB values -------------------------------


def test_rgb_png_round_trips_exactly(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = read_image(str(_write(tmp_path, "rgb.png", _encode(Image.fromarray(rgb), "PNG"))))
    _assert_rgb(out, 5, 7)
    np.testing.assert_array_equal(out, rgb)


def test_greyscale_l() -> None:
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = decode_image(_encode(Image.fromarray(ramp), "PNG"))
    _assert_rgb(out, 16, 16)
    np.testing.assert_array_equal(out, _grey(ramp))


def test_one_bit() -> None:
    checker = (np.indices((6, 8)).sum(axis=0) % 2).astype(bool)
    out = decode_image(_encode(Image.fromarray(checker), "PNG"))
    _assert_rgb(out, 6, 8)
    np.testing.assert_array_equal(out, _grey(np.where(checker, 255, 0)))


def test_greyscale_with_alpha_la_is_composited_over_white() -> None:
    grey = np.full((1, 4), 200, dtype=np.uint8)
    alpha = np.array([[0, 64, 128, 255]], dtype=np.uint8)
    img = Image.fromarray(np.stack([grey, alpha], axis=2))
    assert img.mode == "LA"
    out = decode_image(_encode(img, "PNG"))
    _assert_rgb(out, 1, 4)
    np.testing.assert_array_equal(out, _over_white(np.repeat(grey[:, :, None], 3, axis=2), alpha))
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[0, 3]) == (200, 200, 200)


def test_rgba_transparent_pixels_hide_the_colour_underneath() -> None:
    # Fully transparent pixels carry bright green "garbage": it must not leak into the result.
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[:, :, :3] = (0, 255, 0)
    rgba[0, :, 3] = (0, 100, 255)
    rgba[1, :, :] = (10, 20, 30, 255)
    out = decode_image(_encode(Image.fromarray(rgba), "PNG"))
    _assert_rgb(out, 2, 3)
    np.testing.assert_array_equal(out, _over_white(rgba[:, :, :3].astype(float), rgba[:, :, 3]))
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[0, 2]) == (0, 255, 0)
    assert (out[1] == (10, 20, 30)).all()


def _palette_image() -> Image.Image:
    img = Image.fromarray(np.array([[0, 1], [2, 3]], dtype=np.uint8), mode="L").convert("P")
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    return img


def test_palette_p() -> None:
    out = decode_image(_encode(_palette_image(), "PNG"))
    _assert_rgb(out, 2, 2)
    np.testing.assert_array_equal(out, [[[0, 0, 0], [255, 0, 0]], [[0, 255, 0], [0, 0, 255]]])


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparent_index(fmt: str) -> None:
    out = decode_image(_encode(_palette_image(), fmt, transparency=0))
    _assert_rgb(out, 2, 2)
    # Index 0 is black in the palette but transparent, so it shows the white background.
    np.testing.assert_array_equal(out, [[[255, 255, 255], [255, 0, 0]], [[0, 255, 0], [0, 0, 255]]])


def test_palette_with_alpha_pa() -> None:
    img = Image.new("PA", (2, 1))
    img.putpalette([0, 255, 0])
    img.putdata([(0, 0), (0, 255)])
    out = decode_image(_encode(img, "TIFF"))
    _assert_rgb(out, 1, 2)
    np.testing.assert_array_equal(out, [[[255, 255, 255], [0, 255, 0]]])


def test_greyscale_and_rgb_colour_keys_become_transparent() -> None:
    grey_img = Image.fromarray(np.array([[10, 20]], dtype=np.uint8))
    grey = decode_image(_encode(grey_img, "PNG", transparency=10))
    np.testing.assert_array_equal(grey, [[[255, 255, 255], [20, 20, 20]]])
    rgb = np.array([[[1, 2, 3], [4, 5, 6]]], dtype=np.uint8)
    out = decode_image(_encode(Image.fromarray(rgb), "PNG", transparency=(1, 2, 3)))
    np.testing.assert_array_equal(out, [[[255, 255, 255], [4, 5, 6]]])


_CMYK_PATCHES = {
    (0, 0, 0, 0): (255, 255, 255),
    (0, 255, 255, 0): (255, 0, 0),
    (255, 0, 0, 0): (0, 255, 255),
    (0, 0, 0, 255): (0, 0, 0),
}


def _cmyk_image(block: int) -> Image.Image:
    cmyk = np.concatenate([np.full((block, block, 4), c, dtype=np.uint8) for c in _CMYK_PATCHES], axis=1)
    return Image.fromarray(cmyk, mode="CMYK")


def test_cmyk_tiff() -> None:
    out = decode_image(_encode(_cmyk_image(1), "TIFF"))
    _assert_rgb(out, 1, 4)
    np.testing.assert_array_equal(out[0], list(_CMYK_PATCHES.values()))


def test_cmyk_jpeg() -> None:
    # Pillow writes Adobe CMYK JPEGs (inverted channels); decoding must undo that. Lossy, so the
    # centre of each 16 px block is compared with a tolerance.
    out = decode_image(_encode(_cmyk_image(16), "JPEG", quality=95))
    _assert_rgb(out, 16, 64)
    centres = out[8, 8::16].astype(int)
    assert np.abs(centres - np.array(list(_CMYK_PATCHES.values()))).max() <= 8


def test_ycbcr_tiff() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    img = Image.fromarray(rgb).convert("YCbCr")
    out = decode_image(_encode(img, "TIFF"))
    _assert_rgb(out, 4, 6)
    # The RGB -> YCbCr -> RGB round trip itself rounds, so allow a few levels.
    assert np.abs(out.astype(int) - rgb.astype(int)).max() <= 3


@pytest.mark.parametrize(("mode", "fmt"), [("I;16", "PNG"), ("I;16", "TIFF"), ("I;16B", "TIFF")])
def test_sixteen_bit_ramp_spans_the_full_eight_bit_range(mode: str, fmt: str) -> None:
    ramp16 = np.arange(0, 65536, 257, dtype=np.uint16).reshape(16, 16)  # 0, 257, ..., 65535
    # Built from a big-endian array: Pillow's convert("I;16B") itself squeezes values through 8 bits.
    img = Image.fromarray(ramp16.astype(">u2" if mode == "I;16B" else "<u2"))
    data = _encode(img, fmt)
    assert Image.open(io.BytesIO(data)).mode == mode
    out = decode_image(data)
    _assert_rgb(out, 16, 16)
    flat = out[:, :, 0].ravel()
    assert flat[0] == 0
    assert flat[-1] == 255
    assert (np.diff(flat.astype(int)) > 0).all()
    np.testing.assert_array_equal(out, _grey(np.arange(256).reshape(16, 16)))


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    # Pillow's convert("L") would clip 300 and 40000 to 255; scaling keeps them dark and mid-grey.
    out = decode_image(_encode(Image.fromarray(np.array([[300, 40000]], dtype=np.uint16)), "PNG"))
    np.testing.assert_array_equal(out[0, :, 0], [300 >> 8, 40000 >> 8])


def test_thirty_two_bit_int_tiff_is_stretched_by_its_own_range() -> None:
    values = np.array([[-1000, 0, 1000, 1_000_000]], dtype=np.int32)
    img = Image.fromarray(values)
    assert img.mode == "I"
    out = decode_image(_encode(img, "TIFF"))
    _assert_rgb(out, 1, 4)
    expected = np.rint((values - values.min()) * 255.0 / (values.max() - values.min()))
    np.testing.assert_array_equal(out[:, :, 0], expected)
    assert out[0, 0, 0] == 0
    assert out[0, 3, 0] == 255


def test_float_tiff_is_stretched_and_non_finite_values_are_clamped() -> None:
    values = np.array([[-1.5, 0.0, 1.5, np.nan, np.inf, -np.inf]], dtype=np.float32)
    img = Image.fromarray(values)
    assert img.mode == "F"
    out = decode_image(_encode(img, "TIFF"))
    _assert_rgb(out, 1, 6)
    np.testing.assert_array_equal(out[0, :, 0], [0, 128, 255, 0, 255, 0])


def test_constant_float_image_maps_to_black() -> None:
    out = decode_image(_encode(Image.fromarray(np.full((2, 3), 7.25, dtype=np.float32)), "TIFF"))
    np.testing.assert_array_equal(out, np.zeros((2, 3, 3), dtype=np.uint8))


@pytest.mark.parametrize("fmt", ["GIF", "TIFF"])
def test_multi_frame_files_yield_the_first_frame(fmt: str) -> None:
    frames = [Image.new("RGB", (4, 3), colour) for colour in (RED, (0, 255, 0), (0, 0, 255))]
    data = _encode(frames[0], fmt, save_all=True, append_images=frames[1:])
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    out = decode_image(data)
    _assert_rgb(out, 3, 4)
    assert (out == RED).all()


# --- EXIF orientation --------------------------------------------------------------------------


def _with_red_corner(height: int, width: int, corner: int) -> np.ndarray:
    arr = np.zeros((height, width, 3), dtype=np.uint8)
    arr[:corner, :corner] = RED
    return arr


def _exif_orientation(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = value  # Orientation
    return exif


def test_exif_orientation_is_applied_png() -> None:
    stored = _with_red_corner(20, 40, 5)
    out = decode_image(_encode(Image.fromarray(stored), "PNG", exif=_exif_orientation(6)))
    _assert_rgb(out, 40, 20)
    # Orientation 6: display = stored rotated 90 degrees clockwise, so the red top-left corner
    # ends up top-right.
    np.testing.assert_array_equal(out, np.rot90(stored, k=-1))
    assert (out[:5, -5:] == RED).all()


def test_exif_orientation_is_applied_jpeg() -> None:
    stored = _with_red_corner(32, 64, 16)
    out = decode_image(_encode(Image.fromarray(stored), "JPEG", quality=95, exif=_exif_orientation(6)))
    _assert_rgb(out, 64, 32)
    assert np.abs(out[8, -8].astype(int) - RED).max() <= 10  # centre of the red block, now top-right
    assert np.abs(out[-8, 8].astype(int)).max() <= 10  # the opposite corner stays black


# --- URIs --------------------------------------------------------------------------------------


def test_plain_paths_and_file_uris_agree(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    path = _write(tmp_path, "img.png", _encode(Image.fromarray(rgb), "PNG"))
    for uri in (str(path), path.as_uri()):
        np.testing.assert_array_equal(read_image(uri), rgb)


def test_other_fsspec_protocols_and_storage_options(tmp_path: Path) -> None:
    # memory:// stands in for remote stores: the protocol is dispatched by fsspec, not by us.
    uri = f"memory://images-test-{uuid.uuid4().hex}/img.png"
    fs = fsspec.filesystem("memory")
    fs.pipe(uri, _encode(Image.new("RGB", (3, 2), RED), "PNG"))
    try:
        assert (read_image(uri) == RED).all()
    finally:
        fs.rm(uri)
    with pytest.raises(ImageError) as info:
        read_image(uri)
    assert info.value.reason == "not_found"
    # storage_options reach the filesystem: dir:// resolves paths under the root given as an option.
    _write(tmp_path, "img.png", _encode(Image.new("RGB", (3, 2), RED), "PNG"))
    options = {"path": str(tmp_path), "target_protocol": "file"}
    assert (read_image("dir://img.png", storage_options=options) == RED).all()


def test_unknown_protocol_is_a_configuration_error_not_an_image_error() -> None:
    with pytest.raises(ValueError, match="not known"):
        read_image("nosuchprotocol://bucket/img.png")


def test_s3_uris(s3_endpoint: str, s3_bucket: str) -> None:
    # s3_endpoint / s3_bucket (conftest.py): moto's S3 server on loopback and a fresh bucket in it.
    import boto3

    bucket = s3_bucket.removeprefix("s3://")
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.put_object(Bucket=bucket, Key="img.png", Body=_encode(Image.new("RGB", (3, 2), RED), "PNG"))
    client.put_object(Bucket=bucket, Key="empty.png", Body=b"")
    out = read_image(f"{s3_bucket}/img.png")  # endpoint and credentials from settings
    _assert_rgb(out, 2, 3)
    assert (out == RED).all()
    # "" names the bucket itself, which is not an object.
    expected = {"missing.png": "not_found", "empty.png": "empty", "": "unreadable"}
    for key, reason in expected.items():
        with pytest.raises(ImageError) as info:
            read_image(f"{s3_bucket}/{key}")
        assert info.value.reason == reason, key


# --- the error object --------------------------------------------------------------------------


def test_image_error_carries_reason_and_uri(tmp_path: Path) -> None:
    path = _write(tmp_path, "broken.png", b"not an image at all")
    with pytest.raises(ImageError) as info:
        read_image(path.as_uri())
    err = info.value
    assert err.reason == "unreadable"
    assert isinstance(err.reason, str)
    assert err.uri == path.as_uri()
    assert "unreadable" in str(err)
    assert path.as_uri() in str(err)


def test_image_error_survives_pickling() -> None:
    # Ray moves worker exceptions between processes by pickling them.
    err = ImageError(ImageErrorReason.TOO_LARGE, "s3://bucket/huge.tif", "100000x100000")
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.reason, copy.uri, copy.detail, str(copy)) == (err.reason, err.uri, err.detail, str(err))


def test_decode_image_without_uri_names_bytes() -> None:
    with pytest.raises(ImageError) as info:
        decode_image(b"")
    assert info.value.uri == "<bytes>"
    assert "<bytes>" in str(info.value)
    assert "empty" in str(info.value)
