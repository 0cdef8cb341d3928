"""Segmentation loss: softmax cross-entropy with class weights and hard-pixel mining.

`config.loss` (configs/base_segmentation.py):

- `class_weights`: "" (every class 1), a list (or comma-separated string) with one weight per
  class, or "inverse_frequency": w_c = P / (K * n_c), with n_c the labelled pixels of class c in
  the training masks, P their total and K the classes present (absent classes keep 1). Computed
  once per process from the training source, before the first step, and logged as a table.
- `top_k_percent_pixels`: DeepLab's hard-pixel mining (`train_utils.py`,
  `add_softmax_cross_entropy_loss_for_each_scale`; Model Garden's segmentation loss has the same
  field): only the k = int(fraction * H * W) largest weighted pixel losses of each image count.
  1.0: every pixel.

Normalisation follows DeepLab (`train_utils.py`): the weighted loss sum is divided by the number
of labelled pixels (not by their weights, so weights change the loss's scale as well as its
balance); with top-k, by the number of selected pixels whose weighted loss is not zero. Pixels with the ignore label (255; `data.ignore_label` of mask
folders is mapped to it when they are read) weigh 0, so they are never selected by the top-k
either. One difference from DeepLab: the top k are chosen per image, not over the whole batch
(one image's share of the loss does not depend on the other images of its batch or replica).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from absl import logging

from ondevice_vision.data.label_map import IGNORE_LABEL

INVERSE_FREQUENCY = "inverse_frequency"


def parse_class_weights(value, num_classes: int):
    """config.loss.class_weights -> None (all 1), INVERSE_FREQUENCY, or a float list of K."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        if value.strip() == INVERSE_FREQUENCY:
            return INVERSE_FREQUENCY
        try:
            value = [float(v) for v in value.replace("(", "").replace(")", "").split(",") if v]
        except ValueError as e:
            raise ValueError(
                f"config.loss.class_weights: expected '{INVERSE_FREQUENCY}' or one number per "
                f"class, got {value!r}"
            ) from e
    weights = [float(v) for v in value]
    if len(weights) != num_classes:
        raise ValueError(
            f"config.loss.class_weights: {len(weights)} weights for {num_classes} classes "
            "(model.num_classes)"
        )
    if not all(np.isfinite(w) and w >= 0 for w in weights):
        raise ValueError(f"config.loss.class_weights: weights must be >= 0, got {weights}")
    return weights


def check_top_k(fraction) -> float:
    fraction = float(fraction)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"config.loss.top_k_percent_pixels: must be in (0, 1], got {fraction}")
    return fraction


def class_pixel_counts(masks, num_classes: int) -> np.ndarray:
    """Labelled pixels per class over an iterable of uint8 masks (255 = ignore)."""
    counts = np.zeros(num_classes, np.int64)
    for mask in masks:
        values = np.asarray(mask).reshape(-1)
        values = values[values != IGNORE_LABEL]
        counts += np.bincount(values, minlength=num_classes)[:num_classes]
    return counts


def inverse_frequency_weights(counts) -> list[float]:
    """w_c = P / (K * n_c) over the K classes with pixels; 1.0 for classes without any."""
    counts = np.asarray(counts, np.float64)
    present = counts > 0
    if not present.any():
        raise ValueError("inverse_frequency class weights: the training masks label no pixel")
    weights = np.ones_like(counts)
    weights[present] = counts[present].sum() / (present.sum() * counts[present])
    return [float(w) for w in weights]


def log_class_weights(weights, names, counts=None) -> None:
    lines = []
    for i, (name, w) in enumerate(zip(names, weights, strict=True)):
        pixels = "" if counts is None else f"  {int(counts[i]):>12,d} px"
        lines.append(f"  {i:>3} {name:<28} {w:9.4f}{pixels}")
    logging.info("Loss class weights:\n%s", "\n".join(lines))


def pixel_cross_entropy(
    logits, mask, class_weights=None, top_k_percent_pixels: float = 1.0
) -> tuple[tf.Tensor, tf.Tensor]:
    """Per-image weighted loss sums [B] and normalisers [B] (see module doc).

    logits: [B, H, W, K]; mask: [B, H, W] or [B, H, W, 1] integer, IGNORE_LABEL = unlabelled.
    """
    logits = tf.cast(logits, tf.float32)
    mask = tf.cast(mask, tf.int32)
    if mask.shape.rank == 4:
        mask = mask[..., 0]
    valid = tf.not_equal(mask, IGNORE_LABEL)
    safe = tf.where(valid, mask, 0)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe, logits=logits)
    if class_weights is None:
        weights = tf.cast(valid, tf.float32)
    else:
        table = tf.constant(class_weights, tf.float32)
        weights = tf.where(valid, tf.gather(table, safe), 0.0)
    losses = ce * weights
    batch = tf.shape(losses)[0]
    if top_k_percent_pixels >= 1.0:
        return tf.reduce_sum(losses, axis=[1, 2]), tf.reduce_sum(tf.cast(valid, tf.float32), [1, 2])
    flat = tf.reshape(losses, [batch, -1])
    num_pixels = tf.cast(tf.shape(flat)[1], tf.float32)
    k = tf.maximum(tf.cast(top_k_percent_pixels * num_pixels, tf.int32), 1)
    top, _ = tf.math.top_k(flat, k=k, sorted=False)
    present = tf.reduce_sum(tf.cast(tf.not_equal(top, 0.0), tf.float32), axis=1)
    return tf.reduce_sum(top, axis=1), present
