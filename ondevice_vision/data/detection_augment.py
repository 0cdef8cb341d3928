"""Detection augmentations as in-graph TensorFlow ops (usable inside Dataset.map).

Boxes are normalised [ymin, xmin, ymax, xmax]. `ssd_random_crop` follows the TF Object Detection
API's `ssd_random_crop` / `random_crop_image` (object_detection/core/preprocessor.py), the
augmentation of the SSDLite MobileNetV3 / EdgeTPU configs: pick one of seven cases uniformly;
with probability `random_coef` keep the image as it is; otherwise sample a crop with
`tf.image.sample_distorted_bounding_box` (it covers at least `min_object_covered` of some box),
drop boxes completely outside the crop and boxes with less than `overlap_thresh` of their own area
inside it, re-express the rest in crop coordinates and clip them to it.

Randomness is plain stateful tf.random (not reproducible run to run; not needed here).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from ondevice_vision.data.image_decode import (
    apply_orientation,
    decode_rgb,
    decoded_or_placeholder,
)

SSD_MIN_OBJECT_COVERED = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
SSD_OVERLAP_THRESH = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
SSD_ASPECT_RATIO_RANGE = ((0.5, 2.0),) * 7
SSD_AREA_RANGE = ((0.1, 1.0),) * 7
SSD_CLIP_BOXES = (True,) * 7
SSD_RANDOM_COEF = (0.15,) * 7
_MAX_ATTEMPTS = 100


def flip_boxes_left_right(boxes: tf.Tensor) -> tf.Tensor:
    ymin, xmin, ymax, xmax = tf.unstack(boxes, num=4, axis=-1)
    return tf.stack([ymin, 1.0 - xmax, ymax, 1.0 - xmin], axis=-1)


def random_horizontal_flip(
    image: tf.Tensor, boxes: tf.Tensor, prob: float = 0.5
) -> tuple[tf.Tensor, tf.Tensor]:
    """Mirrors image [H, W, C] and boxes [N, 4] left-right together with probability `prob`."""
    image, boxes = tf.convert_to_tensor(image), tf.convert_to_tensor(boxes)
    flip = tf.random.uniform([]) < prob
    image = tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image)
    boxes = tf.cond(flip, lambda: flip_boxes_left_right(boxes), lambda: boxes)
    return image, boxes


def crop_boxes_to_window(
    boxes: tf.Tensor,
    classes: tf.Tensor,
    is_crowd: tf.Tensor,
    window: tf.Tensor,
    overlap_thresh: float | tf.Tensor,
    clip_boxes: bool = True,
):
    """Boxes of a crop `window` (normalised yxyx) the way the OD API's random_crop_image does it.

    Drops boxes completely outside the window and boxes with less than `overlap_thresh` of their
    own area inside it, re-expresses the rest in window coordinates and optionally clips them.
    Returns (boxes [M, 4], classes [M], is_crowd [M]).
    """
    wy0, wx0, wy1, wx1 = tf.unstack(tf.cast(window, tf.float32))
    ymin, xmin, ymax, xmax = tf.unstack(boxes, num=4, axis=1)
    # prune_completely_outside_window
    inside = (ymin < wy1) & (xmin < wx1) & (ymax > wy0) & (xmax > wx0)
    # prune_non_overlapping_boxes: intersection over the box's own area >= overlap_thresh
    inter_h = tf.maximum(tf.minimum(ymax, wy1) - tf.maximum(ymin, wy0), 0.0)
    inter_w = tf.maximum(tf.minimum(xmax, wx1) - tf.maximum(xmin, wx0), 0.0)
    ioa = tf.math.divide_no_nan(inter_h * inter_w, (ymax - ymin) * (xmax - xmin))
    keep = inside & (ioa >= overlap_thresh)
    # change_coordinate_frame
    origin = tf.stack([wy0, wx0, wy0, wx0])
    scale = tf.stack([wy1 - wy0, wx1 - wx0, wy1 - wy0, wx1 - wx0])
    kept = (tf.boolean_mask(boxes, keep) - origin) / scale
    if clip_boxes:
        kept = tf.clip_by_value(kept, 0.0, 1.0)
    return (
        tf.reshape(kept, [-1, 4]),
        tf.boolean_mask(classes, keep),
        tf.boolean_mask(is_crowd, keep),
    )


def _hashable(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _case_lists(
    min_object_covered, aspect_ratio_range, area_range, overlap_thresh, clip_boxes, random_coef
):
    num_cases = len(min_object_covered)
    for name, values in (
        ("aspect_ratio_range", aspect_ratio_range),
        ("area_range", area_range),
        ("overlap_thresh", overlap_thresh),
        ("clip_boxes", clip_boxes),
        ("random_coef", random_coef),
    ):
        if len(values) != num_cases:
            raise ValueError(
                f"ssd_random_crop: {name} has {len(values)} cases, expected {num_cases}"
            )
    return num_cases


def random_crop_window(
    image_shape: tf.Tensor,
    boxes: tf.Tensor,
    classes: tf.Tensor,
    is_crowd: tf.Tensor,
    min_object_covered: float | tf.Tensor = 1.0,
    aspect_ratio_range: Sequence[float] = (0.75, 1.33),
    area_range: Sequence[float] = (0.1, 1.0),
    overlap_thresh: float | tf.Tensor = 0.3,
    clip_boxes: bool = True,
    random_coef: float = 0.0,
):
    """One OD API `random_crop_image` draw, for an image known only by its shape [H, W, C].

    Returns (offset [2] int32 (y, x), size [2] int32 (h, w), boxes, classes, is_crowd): the pixels
    to keep and the boxes of that window, so the caller can decode only the window
    (`tf.image.decode_and_crop_jpeg`). The draw is `random_crop_image`'s, op for op.
    """
    image_shape = tf.cast(image_shape, tf.int32)
    classes, is_crowd = tf.convert_to_tensor(classes), tf.convert_to_tensor(is_crowd)
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])

    def crop():
        begin, size, window = tf.image.sample_distorted_bounding_box(
            image_shape,
            bounding_boxes=tf.expand_dims(tf.clip_by_value(boxes, 0.0, 1.0), 1),
            min_object_covered=min_object_covered,
            aspect_ratio_range=list(aspect_ratio_range),
            area_range=list(area_range),
            max_attempts=_MAX_ATTEMPTS,
            use_image_if_no_bounding_boxes=True,
        )
        new_boxes, new_classes, new_crowd = crop_boxes_to_window(
            boxes, classes, is_crowd, tf.reshape(window, [4]), overlap_thresh, clip_boxes
        )
        return begin[:2], size[:2], new_boxes, new_classes, new_crowd

    def keep():
        return tf.zeros([2], tf.int32), image_shape[:2], boxes, classes, is_crowd

    if random_coef <= 0.0:
        return crop()
    return tf.cond(tf.random.uniform([]) <= random_coef, keep, crop)


def random_crop_image(
    image: tf.Tensor,
    boxes: tf.Tensor,
    classes: tf.Tensor,
    is_crowd: tf.Tensor,
    min_object_covered: float = 1.0,
    aspect_ratio_range: Sequence[float] = (0.75, 1.33),
    area_range: Sequence[float] = (0.1, 1.0),
    overlap_thresh: float = 0.3,
    clip_boxes: bool = True,
    random_coef: float = 0.0,
):
    """One OD API `random_crop_image` draw; returns (image, boxes, classes, is_crowd)."""
    image = tf.convert_to_tensor(image)
    offset, size, boxes, classes, is_crowd = random_crop_window(
        tf.shape(image),
        boxes,
        classes,
        is_crowd,
        min_object_covered,
        aspect_ratio_range,
        area_range,
        overlap_thresh,
        clip_boxes,
        random_coef,
    )
    image = tf.slice(image, tf.concat([offset, [0]], 0), tf.concat([size, [-1]], 0))
    return image, boxes, classes, is_crowd


def ssd_random_crop_window(
    image_shape: tf.Tensor,
    boxes: tf.Tensor,
    classes: tf.Tensor,
    is_crowd: tf.Tensor,
    min_object_covered: Sequence[float] = SSD_MIN_OBJECT_COVERED,
    aspect_ratio_range: Sequence[Sequence[float]] = SSD_ASPECT_RATIO_RANGE,
    area_range: Sequence[Sequence[float]] = SSD_AREA_RANGE,
    overlap_thresh: Sequence[float] = SSD_OVERLAP_THRESH,
    clip_boxes: Sequence[bool] = SSD_CLIP_BOXES,
    random_coef: Sequence[float] = SSD_RANDOM_COEF,
):
    """The OD API's SSD crop for an image of shape [H, W, C]: one case chosen uniformly, then
    `random_crop_window`. Returns (offset [2], size [2], boxes [M, 4], classes [M], is_crowd [M])."""
    num_cases = _case_lists(
        min_object_covered, aspect_ratio_range, area_range, overlap_thresh, clip_boxes, random_coef
    )
    index = tf.random.uniform([], maxval=num_cases, dtype=tf.int32)
    if all(
        len(set(map(_hashable, v))) == 1
        for v in (aspect_ratio_range, area_range, clip_boxes, random_coef)
    ):
        # The recipes' cases differ only in the two thresholds: one draw with the case's
        # thresholds picked by index is the same random process as the switch over seven
        # copies of the crop graph, at a third of the cost in tf.data (op count, not arithmetic).
        offset, size, boxes, classes, is_crowd = random_crop_window(
            image_shape,
            boxes,
            classes,
            is_crowd,
            min_object_covered=tf.gather(tf.constant(min_object_covered, tf.float32), index),
            aspect_ratio_range=aspect_ratio_range[0],
            area_range=area_range[0],
            overlap_thresh=tf.gather(tf.constant(overlap_thresh, tf.float32), index),
            clip_boxes=clip_boxes[0],
            random_coef=random_coef[0],
        )
        boxes.set_shape([None, 4])
        return offset, size, boxes, classes, is_crowd

    def case(i):
        return lambda: random_crop_window(
            image_shape,
            boxes,
            classes,
            is_crowd,
            min_object_covered=min_object_covered[i],
            aspect_ratio_range=aspect_ratio_range[i],
            area_range=area_range[i],
            overlap_thresh=overlap_thresh[i],
            clip_boxes=clip_boxes[i],
            random_coef=random_coef[i],
        )

    offset, size, boxes, classes, is_crowd = tf.switch_case(
        index, [case(i) for i in range(num_cases)]
    )
    boxes.set_shape([None, 4])
    return offset, size, boxes, classes, is_crowd


def ssd_random_crop(
    image: tf.Tensor, boxes: tf.Tensor, classes: tf.Tensor, is_crowd: tf.Tensor, **cases
):
    """The OD API's SSD crop of a decoded image (case lists as in `ssd_random_crop_window`).

    Returns (image [h, w, C] same dtype, boxes [M, 4], classes [M], is_crowd [M]).
    """
    image = tf.convert_to_tensor(image)
    offset, size, boxes, classes, is_crowd = ssd_random_crop_window(
        tf.shape(image), boxes, classes, is_crowd, **cases
    )
    image = tf.slice(image, tf.concat([offset, [0]], 0), tf.concat([size, [-1]], 0))
    image.set_shape([None, None, image.shape[-1]])
    return image, boxes, classes, is_crowd


def ssd_random_crop_encoded(
    encoded: tf.Tensor,
    boxes,
    classes,
    is_crowd,
    orientation=1,
    skip_undecodable: bool = False,
    **cases,
):
    """`ssd_random_crop` of an encoded image that decodes only the crop window of a JPEG.

    Returns (image uint8 [h, w, 3] RGB, boxes, classes, is_crowd, original (height, width)), and
    with `skip_undecodable` also whether the decoder took the bytes (if not, the image is a
    placeholder: `image_decode.decoded_or_placeholder`; the JPEG header is read unguarded, as
    the folders' up-front check has read it).

    The window is drawn from the JPEG header's shape (the same draw as for the decoded image);
    libjpeg then skips the rows above and below the window and the IDCT of the columns beside
    it. Pixels differ from decode-then-slice by a few levels at most, along the window's
    edges (chroma upsampling sees no neighbours there). Other formats, and JPEGs with an EXIF
    `orientation` other than 1 (boxes refer to the upright picture), are decoded whole, turned
    upright and sliced.
    """

    def attempt(decode, *inputs):
        if skip_undecodable:
            return decoded_or_placeholder(decode, *inputs)
        return decode(*inputs), tf.constant(True)

    def jpeg():
        shape = tf.image.extract_jpeg_shape(encoded)
        offset, size, b, c, k = ssd_random_crop_window(shape, boxes, classes, is_crowd, **cases)
        window = tf.concat([offset, size], 0)
        image, ok = attempt(_decode_jpeg_window, encoded, window)
        return image, b, c, k, shape[:2], ok

    def other():
        image, ok = attempt(decode_rgb, encoded)
        image = apply_orientation(image, orientation)
        cropped = ssd_random_crop(image, boxes, classes, is_crowd, **cases)
        return (*cropped, tf.shape(image)[:2], ok)

    upright_jpeg = tf.logical_and(tf.io.is_jpeg(encoded), tf.equal(orientation, 1))
    image, boxes, classes, is_crowd, original_size, ok = tf.cond(upright_jpeg, jpeg, other)
    image.set_shape([None, None, 3])
    boxes.set_shape([None, 4])
    if skip_undecodable:
        return image, boxes, classes, is_crowd, original_size, ok
    return image, boxes, classes, is_crowd, original_size


def _decode_jpeg_window(encoded, window):
    return tf.image.decode_and_crop_jpeg(encoded, window, channels=3)
