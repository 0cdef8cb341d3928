"""SSD training targets: IoU similarity + argmax matcher + Faster R-CNN box coder, per batch.

The matcher follows the TF Object Detection API's `ArgMaxMatcher` (negatives_lower_than_unmatched,
optional force match of each ground-truth row to its best anchor). `crowd_matches` decides what a
crowd box is: "positive" treats it as any other box, as the OD API's SSD loss does (it never reads
`is_crowd`); "ignore" keeps crowd boxes out of force matching and ignores the anchors they match,
so the detector is neither rewarded nor punished for firing inside a crowd region.

Pure TF ops, no Python control flow on tensor values, so it runs eagerly and inside
`tf.data.Dataset.map` with an unknown number of boxes (including zero).
"""

from __future__ import annotations

import tensorflow as tf

from ondevice_vision.configs import checks
from ondevice_vision.heads import box_coder

UNMATCHED = -1
IGNORED = -2
CROWD_MATCHES = checks.CROWD_MATCHES


def pairwise_iou(boxes1, boxes2):
    """IoU between every box in boxes1 [N, 4] and boxes2 [M, 4] -> [N, M] (OD API `iou`; 0 where
    nothing intersects, even for degenerate zero-area boxes)."""
    return _batch_iou(tf.convert_to_tensor(boxes1)[tf.newaxis], boxes2)[0]


def assign_targets_batch(
    gt_boxes,
    gt_classes,
    gt_is_crowd,
    anchors,
    num_classes: int,
    matched_threshold: float = 0.5,
    unmatched_threshold: float = 0.5,
    force_match_for_each_row: bool = True,
    scale_factors=box_coder.DEFAULT_SCALE_FACTORS,
    crowd_matches: str = "ignore",
) -> dict:
    """Anchor targets of a padded batch of images, each image's as if matched alone.

    Args:
      gt_boxes: float [B, N, 4] normalised yxyx. gt_classes: int [B, N] contiguous 0..K-1, -1
        marks a padding row (padding rows follow an image's real rows; N >= 1).
      gt_is_crowd: bool [B, N]. anchors: float [A, 4].

    Returns a dict with cls_targets int32 [B, A] (0 background, k + 1 for class k; ignored anchors
    also carry 0 but have weight 0), cls_weights float32 [B, A] (0 for ignored anchors),
    box_targets float32 [B, A, 4] (encoded, zeros where not positive), box_weights float32 [B, A]
    (1 for positives), num_positives float32 [B]. One set of vectorised ops per batch instead of
    per image: in tf.data the per-op overhead of ~40 small ops per image cost more than the
    arithmetic. Rows are cut to the batch's largest box count first.
    """
    if crowd_matches not in CROWD_MATCHES:
        raise ValueError(f"crowd_matches must be one of {CROWD_MATCHES}, got {crowd_matches!r}")
    if unmatched_threshold > matched_threshold:
        raise ValueError(
            f"assign_targets: unmatched_threshold {unmatched_threshold} is above "
            f"matched_threshold {matched_threshold}"
        )
    gt_classes = tf.cast(gt_classes, tf.int32)
    rows = tf.shape(gt_boxes)[:2]
    shapes = [
        tf.debugging.assert_equal(
            tf.shape(gt_classes), rows, message="assign_targets: gt_classes length != boxes"
        ),
        tf.debugging.assert_equal(
            tf.shape(gt_is_crowd), rows, message="assign_targets: gt_is_crowd length != boxes"
        ),
    ]
    with tf.control_dependencies(shapes):
        valid = gt_classes >= 0
    # Padding rows come after an image's boxes, so the largest count of boxes covers them all.
    # At least one row: argmax over an empty axis fails (a padding row then matches nothing).
    rows_used = tf.maximum(tf.reduce_max(tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)), 1)
    valid = valid[:, :rows_used]
    gt_classes = gt_classes[:, :rows_used]
    gt_boxes = tf.cast(gt_boxes, tf.float32)[:, :rows_used]
    gt_is_crowd = tf.cast(gt_is_crowd, tf.bool)[:, :rows_used]
    if crowd_matches == "positive":
        gt_is_crowd = tf.zeros_like(gt_is_crowd)
    anchors = tf.reshape(tf.cast(anchors, tf.float32), [-1, 4])
    check = tf.debugging.assert_less(
        gt_classes, num_classes, message=f"assign_targets: class index >= {num_classes}"
    )
    with tf.control_dependencies([check]):
        similarity = _batch_iou(gt_boxes, anchors)  # [B, N, A]
    # Padding rows lose to every real row (IoU >= 0) and so never match.
    similarity = tf.where(valid[:, :, tf.newaxis], similarity, -1.0)

    matches = tf.argmax(similarity, axis=1, output_type=tf.int32)  # [B, A]
    best = tf.reduce_max(similarity, axis=1)
    below = tf.greater(unmatched_threshold, best)
    between = tf.logical_and(
        tf.greater_equal(best, unmatched_threshold), tf.greater(matched_threshold, best)
    )
    matches = tf.where(below, UNMATCHED, matches)
    matches = tf.where(between, IGNORED, matches)
    if force_match_for_each_row:
        num_anchors = tf.shape(anchors)[0]
        best_column = tf.argmax(similarity, axis=2, output_type=tf.int32)  # [B, N]
        force_rows = tf.logical_and(valid, tf.logical_not(gt_is_crowd))
        # Each anchor takes the first row that forces it, as the argmax over a one-hot [B, N, A]
        # of forcing rows does in the per-image matcher; a scatter-min of the [B, N] row indices
        # gives the same rows without the [B, N, A] tensors (a third of the batch's matching
        # time in tf.data). `none` (larger than any row) marks anchors no row forces.
        none = tf.shape(gt_boxes)[1]
        batch_index = tf.broadcast_to(
            tf.range(tf.shape(gt_boxes)[0])[:, tf.newaxis], tf.shape(best_column)
        )
        row_index = tf.broadcast_to(tf.range(none)[tf.newaxis, :], tf.shape(best_column))
        forced_row = tf.tensor_scatter_nd_min(
            tf.fill(tf.stack([tf.shape(gt_boxes)[0], num_anchors]), none),
            tf.stack([batch_index, best_column], axis=-1),
            tf.where(force_rows, row_index, none),
        )
        matches = tf.where(forced_row < none, forced_row, matches)

    batch = tf.shape(gt_boxes)[0]
    num_gt = tf.shape(gt_boxes)[1]
    padded_boxes = tf.concat([gt_boxes, tf.zeros([batch, 1, 4], tf.float32)], axis=1)
    padded_classes = tf.concat([gt_classes + 1, tf.zeros([batch, 1], tf.int32)], axis=1)
    padded_crowd = tf.concat([gt_is_crowd, tf.zeros([batch, 1], tf.bool)], axis=1)
    matched = matches >= 0
    matched_to_crowd = tf.gather(padded_crowd, tf.where(matched, matches, num_gt), batch_dims=1)
    positive = tf.logical_and(matched, tf.logical_not(matched_to_crowd))
    ignored = tf.logical_or(tf.equal(matches, IGNORED), matched_to_crowd)
    rows = tf.where(positive, matches, num_gt)
    encoded = box_coder.encode(tf.gather(padded_boxes, rows, batch_dims=1), anchors, scale_factors)
    box_weights = tf.cast(positive, tf.float32)
    return {
        "cls_targets": tf.gather(padded_classes, rows, batch_dims=1),
        "cls_weights": tf.where(ignored, 0.0, 1.0),
        "box_targets": tf.where(positive[..., tf.newaxis], encoded, tf.zeros_like(encoded)),
        "box_weights": box_weights,
        "num_positives": tf.reduce_sum(box_weights, axis=1),
    }


def _batch_iou(boxes, anchors):
    """`pairwise_iou` of every image's boxes [B, N, 4] with anchors [A, 4] -> [B, N, A].

    The same arithmetic in the same order, so the values are bit-identical.
    """
    ymin1, xmin1, ymax1, xmax1 = (t[..., tf.newaxis] for t in tf.unstack(boxes, axis=-1))
    ymin2, xmin2, ymax2, xmax2 = tf.unstack(anchors, axis=-1)
    heights = tf.maximum(0.0, tf.minimum(ymax1, ymax2) - tf.maximum(ymin1, ymin2))
    widths = tf.maximum(0.0, tf.minimum(xmax1, xmax2) - tf.maximum(xmin1, xmin2))
    intersections = heights * widths
    areas1 = (ymax1 - ymin1) * (xmax1 - xmin1)
    areas2 = (ymax2 - ymin2) * (xmax2 - xmin2)
    unions = areas1 + areas2 - intersections
    # `pairwise_iou`'s "0 where the intersection is 0" is what divide_no_nan gives there anyway
    # (0 / union, or 0 when the union is 0 too): two ops fewer on [B, N, A].
    return tf.math.divide_no_nan(intersections, unions)
