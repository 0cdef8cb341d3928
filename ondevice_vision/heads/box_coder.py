"""Faster R-CNN box coder, as the TF Object Detection API's `faster_rcnn_box_coder`.

A box is encoded relative to its anchor as (ty, tx, th, tw) =
(dy / ha * sy, dx / wa * sx, log(h / ha) * sh, log(w / wa) * sw). Like the OD API, encode adds
EPSILON to every height and width (so degenerate boxes give finite codes) and decode does not.

Both functions take boxes/codes of shape [..., A, 4] and anchors [A, 4] (or anything broadcastable)
and broadcast over leading batch dimensions.
"""

from __future__ import annotations

import tensorflow as tf

EPSILON = 1e-8
DEFAULT_SCALE_FACTORS = (10.0, 10.0, 5.0, 5.0)


def _center_and_size(boxes):
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    height = ymax - ymin
    width = xmax - xmin
    return ymin + height / 2.0, xmin + width / 2.0, height, width


def _check_scale_factors(scale_factors):
    if scale_factors is not None and len(scale_factors) != 4:
        raise ValueError(f"box coder: scale_factors needs 4 values, got {scale_factors}")
    if scale_factors is not None and any(s <= 0 for s in scale_factors):
        raise ValueError(f"box coder: scale_factors must be positive, got {scale_factors}")


def encode(boxes, anchors, scale_factors=DEFAULT_SCALE_FACTORS):
    """Encodes yxyx boxes relative to anchors; returns float32 [..., 4] (ty, tx, th, tw)."""
    _check_scale_factors(scale_factors)
    boxes = tf.cast(boxes, tf.float32)
    anchors = tf.cast(anchors, tf.float32)
    ycenter_a, xcenter_a, ha, wa = _center_and_size(anchors)
    ycenter, xcenter, h, w = _center_and_size(boxes)
    # Avoid NaN in the division and log below (OD API behaviour).
    ha += EPSILON
    wa += EPSILON
    h += EPSILON
    w += EPSILON
    ty = (ycenter - ycenter_a) / ha
    tx = (xcenter - xcenter_a) / wa
    th = tf.math.log(h / ha)
    tw = tf.math.log(w / wa)
    if scale_factors:
        ty *= scale_factors[0]
        tx *= scale_factors[1]
        th *= scale_factors[2]
        tw *= scale_factors[3]
    return tf.stack([ty, tx, th, tw], axis=-1)


def decode(rel_codes, anchors, scale_factors=DEFAULT_SCALE_FACTORS):
    """Decodes (ty, tx, th, tw) codes back to yxyx boxes; returns float32 [..., 4]."""
    _check_scale_factors(scale_factors)
    rel_codes = tf.cast(rel_codes, tf.float32)
    anchors = tf.cast(anchors, tf.float32)
    ycenter_a, xcenter_a, ha, wa = _center_and_size(anchors)
    ty, tx, th, tw = tf.unstack(rel_codes, axis=-1)
    if scale_factors:
        ty /= scale_factors[0]
        tx /= scale_factors[1]
        th /= scale_factors[2]
        tw /= scale_factors[3]
    h = tf.exp(th) * ha
    w = tf.exp(tw) * wa
    ycenter = ty * ha + ycenter_a
    xcenter = tx * wa + xcenter_a
    return tf.stack(
        [ycenter - h / 2.0, xcenter - w / 2.0, ycenter + h / 2.0, xcenter + w / 2.0], axis=-1
    )
