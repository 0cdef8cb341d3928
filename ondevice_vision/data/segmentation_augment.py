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
):
    """Decoded example -> (image float32 [crop_h, crop_w, 3] 0..255, mask uint8 [.., .., 1])."""
    image, mask = random_scale(example["image"], example["mask"], min_scale, max_scale)
    image, mask = random_crop_or_pad(image, mask, crop_size, ignore_label)
    return random_horizontal_flip(image, mask)


def preprocess_eval(example: dict):
    """Decoded example at full resolution -> (image float32 [h, w, 3] 0..255, mask uint8)."""
    return tf.cast(example["image"], tf.float32), tf.cast(example["mask"], tf.uint8)
