import math

import numpy as np
import pytest
import tensorflow as tf

from ondevice_vision.heads import box_coder


def _random_boxes(rng, shape):
    ymin = rng.uniform(0.0, 0.7, shape)
    xmin = rng.uniform(0.0, 0.7, shape)
    h = rng.uniform(0.02, 0.3, shape)
    w = rng.uniform(0.02, 0.3, shape)
    return np.stack([ymin, xmin, ymin + h, xmin + w], axis=-1).astype(np.float32)


def _np_encode(boxes, anchors, scales, eps=1e-8):
    def center_size(b):
        h = b[..., 2] - b[..., 0]
        w = b[..., 3] - b[..., 1]
        return b[..., 0] + h / 2, b[..., 1] + w / 2, h, w

    yca, xca, ha, wa = center_size(anchors.astype(np.float64))
    yc, xc, h, w = center_size(boxes.astype(np.float64))
    ha, wa, h, w = ha + eps, wa + eps, h + eps, w + eps
    return np.stack(
        [
            (yc - yca) / ha * scales[0],
            (xc - xca) / wa * scales[1],
            np.log(h / ha) * scales[2],
            np.log(w / wa) * scales[3],
        ],
        axis=-1,
    )


def test_encode_by_hand():
    anchor = tf.constant([[0.0, 0.0, 1.0, 1.0]])
    box = tf.constant([[0.1, 0.2, 0.5, 0.6]])
    codes = box_coder.encode(box, anchor).numpy()
    # Centers (0.3, 0.4) vs (0.5, 0.5), sizes 0.4 vs 1.
    np.testing.assert_allclose(
        codes[0], [-2.0, -1.0, 5 * math.log(0.4), 5 * math.log(0.4)], rtol=1e-5
    )


def test_encode_matches_numpy_reference_with_batch_dims():
    rng = np.random.default_rng(0)
    anchors = _random_boxes(rng, (7,))
    boxes = _random_boxes(rng, (2, 3, 7))
    codes = box_coder.encode(boxes, anchors, scale_factors=(10.0, 10.0, 5.0, 5.0))
    assert codes.shape == (2, 3, 7, 4)
    assert codes.dtype == tf.float32
    expected = _np_encode(boxes, anchors, (10.0, 10.0, 5.0, 5.0))
    np.testing.assert_allclose(codes.numpy(), expected, rtol=1e-4, atol=1e-4)


def test_round_trip():
    rng = np.random.default_rng(1)
    anchors = _random_boxes(rng, (11,))
    boxes = _random_boxes(rng, (4, 11))
    for scales in [(10.0, 10.0, 5.0, 5.0), (1.0, 2.0, 3.0, 4.0), None]:
        decoded = box_coder.decode(box_coder.encode(boxes, anchors, scales), anchors, scales)
        np.testing.assert_allclose(decoded.numpy(), boxes, atol=1e-5)


def test_zero_codes_decode_to_anchors():
    rng = np.random.default_rng(2)
    anchors = _random_boxes(rng, (5,))
    decoded = box_coder.decode(tf.zeros([3, 5, 4]), anchors)
    np.testing.assert_allclose(decoded.numpy(), np.broadcast_to(anchors, (3, 5, 4)), atol=1e-6)


def test_degenerate_box_gives_finite_codes_via_epsilon():
    anchors = tf.constant([[0.2, 0.2, 0.4, 0.4], [0.5, 0.5, 0.5, 0.5]])
    boxes = tf.constant([[0.3, 0.3, 0.3, 0.3], [0.5, 0.5, 0.5, 0.5]])
    codes = box_coder.encode(boxes, anchors).numpy()
    assert np.all(np.isfinite(codes))
    # log((0 + eps) / (0.2 + eps)) * 5, and a zero-size anchor with an identical box gives 0.
    np.testing.assert_allclose(codes[0, 2], 5 * math.log(1e-8 / (0.2 + 1e-8)), rtol=1e-4)
    np.testing.assert_allclose(codes[1], [0.0, 0.0, 0.0, 0.0], atol=1e-6)


def test_half_precision_inputs_give_float32():
    anchors = tf.constant([[0.0, 0.0, 0.5, 0.5]], tf.float16)
    codes = tf.constant([[[0.5, -0.5, 0.1, 0.2]]], tf.bfloat16)
    assert box_coder.decode(codes, anchors).dtype == tf.float32


def test_bad_scale_factors():
    with pytest.raises(ValueError, match="scale_factors"):
        box_coder.encode(tf.zeros([1, 4]), tf.zeros([1, 4]), scale_factors=(1.0, 2.0))
    with pytest.raises(ValueError, match="positive"):
        box_coder.decode(tf.zeros([1, 4]), tf.zeros([1, 4]), scale_factors=(1.0, 0.0, 1.0, 1.0))
