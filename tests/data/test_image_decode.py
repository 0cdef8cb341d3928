"""The one resize every pipeline, signature and runtime shares; EXIF orientation in-graph."""

import io

import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps

from ondevice_vision.data.image_decode import (
    EXIF_ORIENTATION,
    decode_upright,
    exif_orientation,
    resize_pixels,
)


def test_resize_pixels():
    image = np.random.default_rng(0).integers(0, 256, (37, 51, 3)).astype(np.uint8)
    out = resize_pixels(tf.constant(image), (20, 24)).numpy()
    assert out.dtype == np.float32 and out.shape == (20, 24, 3)
    assert out.min() >= 0.0 and out.max() <= 255.0
    constant = resize_pixels(tf.fill([7, 9, 3], tf.constant(200, tf.uint8)), (16, 16)).numpy()
    np.testing.assert_allclose(constant, 200.0)
    # Half-pixel-centre bilinear: each output column samples the input at (j + 0.5) / 2 - 0.5.
    row = np.array([0, 10, 40, 90, 160, 250], np.float64)
    ramp = np.tile(row.astype(np.uint8)[None, :, None], (3, 1, 3))
    up = resize_pixels(tf.constant(ramp), (3, 12)).numpy()
    centres = np.clip((np.arange(12) + 0.5) / 2 - 0.5, 0, len(row) - 1)
    np.testing.assert_allclose(up[1, :, 0], np.interp(centres, np.arange(len(row)), row), atol=1e-3)
    batch = resize_pixels(tf.constant(np.stack([image, image])), (20, 24)).numpy()
    np.testing.assert_array_equal(batch[1], out)  # a batch resizes like its images


def _with_exif(pixels, fmt, orientation):
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, exif=exif.tobytes())
    return buffer.getvalue()


def _big_endian_exif_jpeg(pixels, orientation):
    """A JPEG whose APP1 EXIF block is Motorola byte order ("MM"), which PIL does not write."""
    tiff = b"MM\x00\x2a\x00\x00\x00\x08" + b"\x00\x02"
    tiff += b"\x01\x0f\x00\x02\x00\x00\x00\x04\x00\x00\x00\x00"  # Make (ASCII), ignored
    tiff += b"\x01\x12\x00\x03\x00\x00\x00\x01" + bytes([0, orientation, 0, 0])
    tiff += b"\x00\x00\x00\x00"
    app1 = b"Exif\x00\x00" + tiff
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    jpeg = buffer.getvalue()
    return jpeg[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + jpeg[2:]


def test_exif_orientation_in_graph_is_pils():
    """Every orientation, JPEG (APP1) and PNG (eXIf), both byte orders, inside tf.function as a
    serving signature runs it; upright pixels equal PIL's exif_transpose (PNG: exactly)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    read = tf.function(lambda b: (exif_orientation(b), decode_upright(b)))
    for orientation in range(1, 9):
        for fmt in ("JPEG", "PNG"):
            encoded = _with_exif(pixels, fmt, orientation)
            with Image.open(io.BytesIO(encoded)) as im:
                assert im.getexif()[EXIF_ORIENTATION] == orientation
                want = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
            got_orientation, upright = read(tf.constant(encoded))
            assert int(got_orientation) == orientation, (fmt, orientation)
            assert upright.shape == want.shape, (fmt, orientation)
            if fmt == "PNG":
                np.testing.assert_array_equal(upright.numpy(), want)
        big_endian = _big_endian_exif_jpeg(pixels, orientation)
        with Image.open(io.BytesIO(big_endian)) as im:
            assert im.getexif()[EXIF_ORIENTATION] == orientation  # PIL reads it the same
        assert int(read(tf.constant(big_endian))[0]) == orientation


def test_exif_orientation_is_one_without_a_readable_block():
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buffer, "JPEG")
    plain = buffer.getvalue()
    for encoded in (
        plain,
        b"",
        b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00MM\x00",  # cut short
        plain[:2] + b"\xff\xe1\x00\x10Exif\x00\x00XX\x00\x2a\x00\x00\x00\x08" + plain[2:],
        _with_exif(np.zeros((4, 4, 3), np.uint8), "PNG", 9),  # out of range
    ):
        assert int(exif_orientation(tf.constant(encoded))) == 1
