"""Evaluation-time inference options of a segmenter: multi-scale, flip and sliding window.

`class_probabilities(model, images, ...)` returns softmax probabilities [B, H, W, K] at the input
resolution:

- `scales` (e.g. 0.75, 1.0, 1.25, 1.5, 1.75) and `flip`: the image is resized to each scale
  (DeepLab's `scale_dimension`: int((size - 1) * scale + 1)), also mirrored left-right with
  `flip`, run through the model, and each run's logits are resized back to the input size and
  mirrored back; the softmax probabilities of all runs are averaged. This is DeepLab's
  `predict_labels_multi_scale` (`eval_scales`, `add_flipped_images`), which averages
  probabilities, not raw logits. Resizes use the model's own convention (`align_corners` for the
  DeepLab variant, half-pixel centres otherwise).
- `window` (h, w) and `window_stride`: images larger than the window are cut into overlapping
  windows (the last one of a row / column flush with the border), each window runs on its own
  (with its scales and flips), and overlapping probabilities are averaged. For frames larger than
  what the network or the accelerator's memory takes at once.

Evaluation at another output stride (`eval.output_stride`) is not an inference option but another
network with the same weights: `tasks/segmentation.py`, `model_for_eval`.
"""

from __future__ import annotations

import tensorflow as tf


def _scaled(size, scale: float):
    return tf.cast((tf.cast(size, tf.float32) - 1.0) * scale + 1.0, tf.int32)


def _resize(x, size, align_corners: bool):
    if align_corners:
        return tf.compat.v1.image.resize_bilinear(x, size, align_corners=True)
    return tf.image.resize(x, size, method="bilinear")


def _model_align_corners(model) -> bool:
    return getattr(model, "lraspp_variant", "paper") == "deeplab"


def _probabilities_at(model, images, scales, flip: bool, align_corners: bool):
    size = tf.shape(images)[1:3]
    total = None
    runs = 0
    for scale in scales:
        if scale == 1.0:
            scaled = images
        else:
            scaled = _resize(
                images, [_scaled(size[0], scale), _scaled(size[1], scale)], align_corners
            )
        for mirrored in (False, True) if flip else (False,):
            x = tf.reverse(scaled, axis=[2]) if mirrored else scaled
            logits = tf.cast(model(x, training=False), tf.float32)
            if mirrored:
                logits = tf.reverse(logits, axis=[2])
            if scale != 1.0:
                logits = _resize(logits, size, align_corners)
            probabilities = tf.nn.softmax(logits)
            total = probabilities if total is None else total + probabilities
            runs += 1
    return total / float(runs)


def _window_starts(size, window: int, stride: int):
    """Starts of windows covering [0, size): every `stride`, the last flush with the end."""
    window = tf.minimum(window, size)
    count = (size - window + stride - 1) // stride + 1
    return tf.minimum(tf.range(count) * stride, size - window), window


def _sliding_window(model, images, scales, flip, align_corners, window, stride, num_classes):
    shape = tf.shape(images)
    rows, win_h = _window_starts(shape[1], window[0], stride[0])
    cols, win_w = _window_starts(shape[2], window[1], stride[1])
    n_cols = tf.size(cols)
    total = tf.zeros([shape[0], shape[1], shape[2], num_classes], tf.float32)
    count = tf.zeros([1, shape[1], shape[2], 1], tf.float32)

    def body(i, total, count):
        top, left = rows[i // n_cols], cols[i % n_cols]
        crop = images[:, top : top + win_h, left : left + win_w, :]
        probabilities = _probabilities_at(model, crop, scales, flip, align_corners)
        pad = [[0, 0], [top, shape[1] - top - win_h], [left, shape[2] - left - win_w], [0, 0]]
        total += tf.pad(probabilities, pad)
        count += tf.pad(tf.ones([1, win_h, win_w, 1]), pad)
        return i + 1, total, count

    _, total, count = tf.while_loop(
        lambda i, *_: i < tf.size(rows) * n_cols, body, (tf.constant(0), total, count)
    )
    return total / count


def class_probabilities(model, images, scales=(1.0,), flip=False, window=None, window_stride=None):
    """Softmax probabilities [B, H, W, K] at the input size (see module doc)."""
    scales = tuple(float(s) for s in scales) or (1.0,)
    if min(scales) <= 0:
        raise ValueError(f"eval.scales must be positive, got {scales}")
    images = tf.cast(images, tf.float32)
    align_corners = _model_align_corners(model)
    if not window:
        return _probabilities_at(model, images, scales, flip, align_corners)
    window = tuple(int(v) for v in window)
    stride = tuple(int(v) for v in (window_stride or window))
    if len(window) != 2 or len(stride) != 2 or min(window + stride) < 1:
        raise ValueError(
            f"eval.window and eval.window_stride must be two positive sizes, got {window}, {stride}"
        )
    num_classes = int(model.output_shape[-1])
    return _sliding_window(model, images, scales, flip, align_corners, window, stride, num_classes)


def eval_options(config) -> dict:
    """The keyword arguments of class_probabilities that config.eval asks for."""
    ev = config.get("eval", {})
    window = tuple(ev.get("window") or ())
    stride = tuple(ev.get("window_stride") or ())
    return {
        "scales": tuple(ev.get("scales") or (1.0,)),
        "flip": bool(ev.get("flip", False)),
        "window": window if any(window) else None,
        "window_stride": stride if any(stride) else None,
    }


def is_plain(options: dict) -> bool:
    """One run of the model at scale 1, no flip, no window: the plain forward pass."""
    return tuple(options["scales"]) == (1.0,) and not options["flip"] and not options["window"]
