"""The one resize every pipeline, signature and runtime shares."""

import numpy as np
import tensorflow as tf

from ondevice_vision.data.image_decode import resize_pixels


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
