"""DeepLab-style segmentation augmentation, in graph: random scale, crop-or-pad, horizontal flip.

Every op takes and returns an (image, mask) pair transformed identically. Images become float32 in
0..255 (the model normalises), masks stay uint8 [h, w, 1] with 255 = ignore. Images are resized
bilinearly, masks with nearest neighbour so no new (interpolated) class ids appear.
"""

from __future__ import annotations

import tensorflow as tf

# Mid-grey that MobileNet's [-1, 1] input scaling maps to 0: padded pixels then look like "nothing"
# to the network; their loss is masked out by the ignore label anyway.
IMAGE_PAD_VALUE = 127.5


def random_scale(image, mask, min_scale: float = 0.5, max_scale: float = 2.0):
    """Resizes both by one factor drawn uniformly from [min_scale, max_scale]."""
    image = tf.cast(image, tf.float32)
    if min_scale == max_scale == 1.0:
        return image, mask
    scale = tf.random.uniform([], min_scale, max_scale)
    size = tf.cast(tf.shape(image)[:2], tf.float32) * scale
    size = tf.maximum(tf.cast(tf.round(size), tf.int32), 1)
    image = tf.image.resize(image, size, method="bilinear")
    mask = tf.image.resize(mask, size, method="nearest")
    return image, mask


def random_crop_or_pad(
    image,
    mask,
    crop_size=(769, 769),
    ignore_label: int = 255,
    image_pad_value: float = IMAGE_PAD_VALUE,
):
    """Pads bottom/right up to crop_size (mask with ignore_label), then crops one random window.

    Output shapes are static: image float32 [crop_h, crop_w, 3], mask uint8 [crop_h, crop_w, 1].
    """
    crop_h, crop_w = (int(s) for s in crop_size)
    image = tf.cast(image, tf.float32)
    shape = tf.shape(image)
    pad_h = tf.maximum(crop_h - shape[0], 0)
    pad_w = tf.maximum(crop_w - shape[1], 0)
    paddings = [[0, pad_h], [0, pad_w], [0, 0]]
    image = tf.pad(image, paddings, constant_values=image_pad_value)
    mask = tf.pad(mask, paddings, constant_values=tf.cast(ignore_label, mask.dtype))

    padded = tf.shape(image)
    # maxval is exclusive; +1 makes the bottom/right-most window reachable.
    top = tf.random.uniform([], 0, padded[0] - crop_h + 1, dtype=tf.int32)
    left = tf.random.uniform([], 0, padded[1] - crop_w + 1, dtype=tf.int32)
    image = tf.slice(image, [top, left, 0], [crop_h, crop_w, 3])
    mask = tf.slice(mask, [top, left, 0], [crop_h, crop_w, 1])
    return tf.ensure_shape(image, [crop_h, crop_w, 3]), tf.ensure_shape(mask, [crop_h, crop_w, 1])


def _half_pixel_source(start, count, scale, in_size):
    """Source coordinates of output pixels start..start+count-1 under TF's half-pixel resize.

    `scale` is in_size / out_size. Returns (lower, upper, lerp) for bilinear and the nearest
    index, clamped as tf.image.resize clamps them.
    """
    out = tf.cast(tf.range(start, start + count), tf.float32) + 0.5
    source = out * scale - 0.5
    floor = tf.floor(source)
    lower = tf.maximum(tf.cast(floor, tf.int32), 0)
    upper = tf.minimum(tf.cast(tf.math.ceil(source), tf.int32), in_size - 1)
    nearest = tf.minimum(tf.cast(tf.floor(out * scale), tf.int32), in_size - 1)
    return lower, upper, source - floor, nearest


def random_scale_crop_or_pad(
    image,
    mask,
    crop_size=(769, 769),
    min_scale: float = 0.5,
    max_scale: float = 2.0,
    ignore_label: int = 255,
    image_pad_value: float = IMAGE_PAD_VALUE,
):
    """`random_scale` then `random_crop_or_pad`, computing only the pixels of the crop.

    The same draws (scale, then the window in the padded, scaled frame) and the same sample
    positions as resizing the whole frame with tf.image.resize and cutting the window out of
    it, so the output equals that composition up to float rounding; but a 1024x2048 frame at
    scale 2 no longer becomes a 2048x4096 float image first. Output shapes are static: image
    float32 [crop_h, crop_w, 3], mask uint8 [crop_h, crop_w, 1].
    """
    crop_h, crop_w = (int(s) for s in crop_size)
    shape = tf.shape(image)
    in_h, in_w = shape[0], shape[1]
    if min_scale == max_scale == 1.0:
        out_h, out_w = in_h, in_w
    else:
        scale = tf.random.uniform([], min_scale, max_scale)
        size = tf.cast(shape[:2], tf.float32) * scale
        size = tf.maximum(tf.cast(tf.round(size), tf.int32), 1)
        out_h, out_w = size[0], size[1]
    # maxval is exclusive; +1 makes the bottom/right-most window reachable.
    top = tf.random.uniform([], 0, tf.maximum(out_h, crop_h) - crop_h + 1, dtype=tf.int32)
    left = tf.random.uniform([], 0, tf.maximum(out_w, crop_w) - crop_w + 1, dtype=tf.int32)
    # The window's part inside the scaled frame; the rest is padding.
    rows = tf.minimum(crop_h, out_h - top)
    cols = tf.minimum(crop_w, out_w - left)
    y0, y1, wy, ny = _half_pixel_source(
        top, rows, tf.cast(in_h, tf.float32) / tf.cast(out_h, tf.float32), in_h
    )
    x0, x1, wx, nx = _half_pixel_source(
        left, cols, tf.cast(in_w, tf.float32) / tf.cast(out_w, tf.float32), in_w
    )

    # tf.image.resize's bilinear kernel: lerp along x on the two rows, then along y. Gathers run
    # on uint8 (a quarter of the bytes); only the window's pixels become float.
    wx = wx[tf.newaxis, :, tf.newaxis]
    wy = wy[:, tf.newaxis, tf.newaxis]

    def lerp_x(row_pixels):
        left_px = tf.cast(tf.gather(row_pixels, x0, axis=1), tf.float32)
        right_px = tf.cast(tf.gather(row_pixels, x1, axis=1), tf.float32)
        return left_px + (right_px - left_px) * wx

    top_row = lerp_x(tf.gather(image, y0, axis=0))
    bottom = lerp_x(tf.gather(image, y1, axis=0))
    pixels = top_row + (bottom - top_row) * wy
    labels = tf.gather(tf.gather(mask, ny, axis=0), nx, axis=1)

    paddings = [[0, crop_h - rows], [0, crop_w - cols], [0, 0]]
    pixels = tf.pad(pixels, paddings, constant_values=image_pad_value)
    labels = tf.pad(labels, paddings, constant_values=tf.cast(ignore_label, mask.dtype))
    return (
        tf.ensure_shape(pixels, [crop_h, crop_w, 3]),
        tf.ensure_shape(labels, [crop_h, crop_w, 1]),
    )


def random_horizontal_flip(image, mask):
    """Mirrors both left-right with probability 1/2."""
    flip = tf.random.uniform([]) < 0.5
    return tf.cond(
        flip,
        lambda: (tf.reverse(image, axis=[1]), tf.reverse(mask, axis=[1])),
        lambda: (image, mask),
    )


def preprocess_train(
    example: dict,
    crop_size=(769, 769),
    min_scale: float = 0.5,
    max_scale: float = 2.0,
    ignore_label: int = 255,
    flip: bool = True,
):
    """Decoded example -> (image float32 [crop_h, crop_w, 3] 0..255, mask uint8 [.., .., 1]).

    `random_scale` + `random_crop_or_pad` computed as one fused step, then (with `flip`)
    `random_horizontal_flip`.
    """
    image, mask = random_scale_crop_or_pad(
        example["image"], example["mask"], crop_size, min_scale, max_scale, ignore_label
    )
    return random_horizontal_flip(image, mask) if flip else (image, mask)


def preprocess_eval(example: dict):
    """Decoded example at full resolution -> (image float32 [h, w, 3] 0..255, mask uint8)."""
    return tf.cast(example["image"], tf.float32), tf.cast(example["mask"], tf.uint8)
