import math

import numpy as np
import pytest
import tensorflow as tf

from ondevice_vision.heads import anchors as anchors_lib

SQRT2 = math.sqrt(2.0)
SQRT3 = math.sqrt(3.0)


def _box(cy, cx, h, w):
    return [cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2]


def _od_api_tile_anchors(grid_h, grid_w, scales, aspect_ratios):
    """The OD API's grid_anchor_generator.tile_anchors (with its ops.meshgrid), in TF float32."""

    def meshgrid(x, y):
        x = tf.convert_to_tensor(x)
        y = tf.convert_to_tensor(y)
        x_exp_shape = tf.concat([tf.ones_like(tf.shape(y)), tf.shape(x)], 0)
        y_exp_shape = tf.concat([tf.shape(y), tf.ones_like(tf.shape(x))], 0)
        xgrid = tf.tile(tf.reshape(x, x_exp_shape), y_exp_shape)
        ygrid = tf.tile(tf.reshape(y, y_exp_shape), x_exp_shape)
        return xgrid, ygrid

    stride = (1.0 / tf.cast(grid_h, tf.float32), 1.0 / tf.cast(grid_w, tf.float32))
    offset = (0.5 * stride[0], 0.5 * stride[1])
    base = [tf.constant(1.0), tf.constant(1.0)]
    ratio_sqrts = tf.sqrt(tf.constant(aspect_ratios, tf.float32))
    scales = tf.constant(scales, tf.float32)
    heights = scales / ratio_sqrts * base[0]
    widths = scales * ratio_sqrts * base[1]
    y_centers = tf.cast(tf.range(grid_h), tf.float32) * stride[0] + offset[0]
    x_centers = tf.cast(tf.range(grid_w), tf.float32) * stride[1] + offset[1]
    x_centers, y_centers = meshgrid(x_centers, y_centers)
    widths_grid, x_centers_grid = meshgrid(widths, x_centers)
    heights_grid, y_centers_grid = meshgrid(heights, y_centers)
    centers = tf.reshape(tf.stack([y_centers_grid, x_centers_grid], axis=3), [-1, 2])
    sizes = tf.reshape(tf.stack([heights_grid, widths_grid], axis=3), [-1, 2])
    return tf.concat([centers - 0.5 * sizes, centers + 0.5 * sizes], 1).numpy()


def test_anchors_per_location():
    assert anchors_lib.anchors_per_location() == [3, 6, 6, 6, 6, 6]
    assert anchors_lib.anchors_per_location(reduce_boxes_in_lowest_layer=False) == [6] * 6
    assert anchors_lib.anchors_per_location(num_layers=4, interpolated_scale_aspect_ratio=0.0) == [
        3,
        5,
        5,
        5,
    ]


def test_feature_map_sizes_same_padding():
    assert anchors_lib.feature_map_sizes((320, 320)) == [
        (20, 20),
        (10, 10),
        (5, 5),
        (3, 3),
        (2, 2),
        (1, 1),
    ]
    # Repeated ceil(n / 2): 300 -> 150 -> 75 -> 38 -> 19 -> 10 -> 5 -> 3 -> 2.
    assert anchors_lib.feature_map_sizes((300, 640)) == [
        (19, 40),
        (10, 20),
        (5, 10),
        (3, 5),
        (2, 3),
        (1, 2),
    ]
    with pytest.raises(ValueError, match="positive"):
        anchors_lib.feature_map_sizes((0, 320))
    with pytest.raises(ValueError, match="powers of two"):
        anchors_lib.feature_map_sizes((320, 320), strides=(16, 24))


def test_anchor_count_at_320():
    boxes = anchors_lib.ssd_anchors(anchors_lib.feature_map_sizes((320, 320)))
    assert boxes.shape == (2034, 4)
    assert boxes.dtype == np.float32
    per_loc = anchors_lib.anchors_per_location()
    expected = sum(
        h * w * n
        for (h, w), n in zip(
            [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)], per_loc, strict=True
        )
    )
    assert expected == 2034


def test_lowest_layer_anchors_by_hand():
    boxes = anchors_lib.ssd_anchors(anchors_lib.feature_map_sizes((320, 320)))
    # Location (0, 0) of the 20x20 map: center 0.025; (0.1, 1), (0.2, 2), (0.2, 1/2).
    c = 0.025
    expected = [
        _box(c, c, 0.1, 0.1),
        _box(c, c, 0.2 / SQRT2, 0.2 * SQRT2),
        _box(c, c, 0.2 * SQRT2, 0.2 / SQRT2),
    ]
    np.testing.assert_allclose(boxes[0:3], expected, atol=1e-6)
    # Next anchor location is one column to the right (x varies fastest after the anchor index).
    np.testing.assert_allclose(boxes[3], _box(c, 0.075, 0.1, 0.1), atol=1e-6)
    # One row down: index 20 * 3.
    np.testing.assert_allclose(boxes[60], _box(0.075, c, 0.1, 0.1), atol=1e-6)
    # Last anchor of the layer: location (19, 19), ratio 1/2.
    np.testing.assert_allclose(boxes[1199], _box(0.975, 0.975, 0.2 * SQRT2, 0.2 / SQRT2), atol=1e-6)


def test_second_layer_first_location_by_hand():
    boxes = anchors_lib.ssd_anchors(anchors_lib.feature_map_sizes((320, 320)))
    scale = 0.2 + (0.95 - 0.2) / 5  # 0.35
    next_scale = 0.2 + 2 * (0.95 - 0.2) / 5  # 0.5
    c = 0.05
    expected = [
        _box(c, c, scale, scale),
        _box(c, c, scale / SQRT2, scale * SQRT2),
        _box(c, c, scale * SQRT2, scale / SQRT2),
        _box(c, c, scale / SQRT3, scale * SQRT3),
        _box(c, c, scale * SQRT3, scale / SQRT3),
        _box(c, c, math.sqrt(scale * next_scale), math.sqrt(scale * next_scale)),
    ]
    np.testing.assert_allclose(boxes[1200:1206], expected, atol=1e-6)


def test_one_by_one_layer_by_hand():
    boxes = anchors_lib.ssd_anchors(anchors_lib.feature_map_sizes((320, 320)))
    s = 0.95
    interp = math.sqrt(0.95 * 1.0)
    expected = [
        [0.025, 0.025, 0.975, 0.975],
        _box(0.5, 0.5, s / SQRT2, s * SQRT2),
        _box(0.5, 0.5, s * SQRT2, s / SQRT2),
        _box(0.5, 0.5, s / SQRT3, s * SQRT3),
        _box(0.5, 0.5, s * SQRT3, s / SQRT3),
        _box(0.5, 0.5, interp, interp),
    ]
    np.testing.assert_allclose(boxes[-6:], expected, atol=1e-6)
    # Not clipped: wide boxes leave the image.
    assert boxes[-5, 1] < 0.0 and boxes[-5, 3] > 1.0


@pytest.mark.parametrize(
    "sizes,min_scale,max_scale",
    [
        ([(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)], 0.2, 0.95),
        ([(5, 4), (3, 2), (1, 1)], 0.2, 0.9),
    ],
)
def test_matches_od_api_tile_anchors_bit_for_bit(sizes, min_scale, max_scale):
    boxes = anchors_lib.ssd_anchors(sizes, min_scale=min_scale, max_scale=max_scale)
    # create_ssd_anchors' box specs, with its scale formula in Python floats.
    n = len(sizes)
    scales = [min_scale + (max_scale - min_scale) * i / (n - 1) for i in range(n)] + [1.0]
    specs = [[(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]] + [
        [(scales[i], ar) for ar in (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)]
        + [(float(np.sqrt(scales[i] * scales[i + 1])), 1.0)]
        for i in range(1, n)
    ]
    reference = np.concatenate(
        [
            _od_api_tile_anchors(h, w, [s for s, _ in spec], [a for _, a in spec])
            for (h, w), spec in zip(sizes, specs, strict=True)
        ]
    )
    assert boxes.shape == reference.shape
    np.testing.assert_array_equal(boxes, reference)


def test_order_matches_head_reshape():
    sizes = [(4, 3), (2, 2)]
    boxes = anchors_lib.ssd_anchors(sizes)
    layer0 = boxes[: 4 * 3 * 3].reshape(4, 3, 3, 4)  # [H, W, anchors, 4] as the head's output
    centers_y = (layer0[..., 0] + layer0[..., 2]) / 2
    centers_x = (layer0[..., 1] + layer0[..., 3]) / 2
    np.testing.assert_allclose(centers_y[:, 0, 0], (np.arange(4) + 0.5) / 4, atol=1e-6)
    np.testing.assert_allclose(centers_x[0, :, 0], (np.arange(3) + 0.5) / 3, atol=1e-6)
    np.testing.assert_allclose(
        centers_y, np.broadcast_to(centers_y[:, :1, :1], (4, 3, 3)), atol=1e-6
    )


def test_non_square_image_keeps_anchors_square_in_pixels():
    sizes = anchors_lib.feature_map_sizes((320, 640))
    boxes = anchors_lib.ssd_anchors(sizes, image_size=(320, 640))
    first = boxes[0]
    height, width = first[2] - first[0], first[3] - first[1]
    np.testing.assert_allclose([height, width], [0.1, 0.05], atol=1e-6)
    np.testing.assert_allclose(height * 320, width * 640, rtol=1e-5)


def test_bad_feature_map_sizes():
    with pytest.raises(ValueError, match="feature map sizes"):
        anchors_lib.ssd_anchors([])
    with pytest.raises(ValueError, match="feature map sizes"):
        anchors_lib.ssd_anchors([(0, 3)])
