"""SSD post-processing: decode boxes, sigmoid scores, per-class NMS (OD API SSDLite settings)."""

from __future__ import annotations

import tensorflow as tf

from ondevice_vision.heads import box_coder


def postprocess(
    box_outputs,
    class_outputs,
    anchors,
    score_threshold: float = 1e-8,
    iou_threshold: float = 0.6,
    max_detections_per_class: int = 100,
    max_total_detections: int = 100,
    scale_factors=box_coder.DEFAULT_SCALE_FACTORS,
) -> dict:
    """Detections from raw head outputs.

    Args:
      box_outputs: [B, A, 4] encoded boxes. class_outputs: [B, A, K + 1] logits, background in
        column 0 (dropped here). anchors: [A, 4] normalised yxyx.

    Returns dict(detection_boxes float32 [B, M, 4] clipped to [0, 1], detection_scores float32
    [B, M], detection_classes int32 [B, M] contiguous 0..K-1, num_detections int32 [B]) with
    M = max_total_detections; entries past num_detections are zero padding.
    """
    boxes = box_coder.decode(box_outputs, anchors, scale_factors)
    scores = tf.sigmoid(tf.cast(class_outputs, tf.float32))[..., 1:]
    nms = tf.image.combined_non_max_suppression(
        boxes[:, :, tf.newaxis, :],  # one box per anchor, shared by all classes
        scores,
        max_output_size_per_class=max_detections_per_class,
        max_total_size=max_total_detections,
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
        pad_per_class=False,
        clip_boxes=True,
    )
    return {
        "detection_boxes": nms.nmsed_boxes,
        "detection_scores": nms.nmsed_scores,
        "detection_classes": tf.cast(nms.nmsed_classes, tf.int32),
        "num_detections": tf.cast(nms.valid_detections, tf.int32),
    }
