"""What TFLite_Detection_PostProcess computes, in NumPy, for exports that leave the op out.

An export with `--postprocess=none` ends in the raw box encodings and class scores (the OD API's
`add_postprocessing_op=false`), for runtimes that lack the custom op (OpenCV DNN, GPU delegates,
NNAPI, an Edge TPU graph with no CPU part). Our runner decodes them here with the op's own
arithmetic, so that such a file gives the detections the op would have given:

- decoding (center-size anchors, OD API box coder): for encodings (ty, tx, th, tw) and anchors
  (ycenter, xcenter, h, w), ycenter' = ty / y_scale * h + ycenter, height' = exp(th / h_scale) * h
  (x and width alike), computed in double and stored as float32 corners; not clipped;
- "fast" NMS (use_regular_nms=false, one class per detection): each anchor keeps its best
  non-background class score (the first on ties); anchors scoring at least the score threshold
  are visited by decreasing score (ties in anchor order); an anchor is kept unless it overlaps a
  kept one by IoU above the threshold (IoU 0 when either box has no area); at most
  max_detections.

The behaviour is that of TensorFlow Lite's `kernels/detection_postprocess.cc` (its
DecodeCenterSizeBoxes, NonMaxSuppressionMultiClassFastHelper); tests compare the two on real
exports, float and int8.
"""

from __future__ import annotations

import numpy as np


def decode_center_size(encodings, anchors, scales) -> np.ndarray:
    """[A, 4] (ty, tx, th, tw) and [A, 4] (ycenter, xcenter, h, w) -> float32 [A, 4] yxyx."""
    e = np.asarray(encodings, np.float32).astype(np.float64)
    a = np.asarray(anchors, np.float32).astype(np.float64)
    y_scale, x_scale, h_scale, w_scale = (float(np.float32(s)) for s in scales)
    ycenter = (e[:, 0] / y_scale * a[:, 2] + a[:, 0]).astype(np.float32)
    xcenter = (e[:, 1] / x_scale * a[:, 3] + a[:, 1]).astype(np.float32)
    half_h = (0.5 * np.exp(e[:, 2] / h_scale) * a[:, 2]).astype(np.float32)
    half_w = (0.5 * np.exp(e[:, 3] / w_scale) * a[:, 3]).astype(np.float32)
    return np.stack(
        [ycenter - half_h, xcenter - half_w, ycenter + half_h, xcenter + half_w], axis=1
    ).astype(np.float32)


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """float32 IoU of one yxyx box with each of `others` (0 where either has no area)."""
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    height = np.maximum(
        np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), np.float32(0)
    )
    width = np.maximum(
        np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), np.float32(0)
    )
    intersection = height * width
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = intersection / (area + areas - intersection)
    return np.where((area <= 0) | (areas <= 0), np.float32(0), iou).astype(np.float32)


def fast_nms(
    boxes,
    scores,
    num_classes: int,
    max_detections: int,
    score_threshold: float,
    iou_threshold: float,
) -> dict:
    """Decoded boxes [A, 4] and scores [A, K (+1 background first)] -> the op's four outputs
    for one image: detection_boxes [M, 4], detection_classes [M] (float class index, background
    removed), detection_scores [M], num_detections; M = max_detections, zero padded."""
    boxes = np.asarray(boxes, np.float32)
    scores = np.asarray(scores, np.float32)
    offset = scores.shape[1] - num_classes
    if offset not in (0, 1):
        raise ValueError(f"scores have {scores.shape[1]} columns for {num_classes} classes")
    class_scores = scores[:, offset:]
    best = np.argmax(class_scores, axis=1)
    best_scores = class_scores[np.arange(len(best)), best]
    kept = np.nonzero(best_scores >= np.float32(score_threshold))[0]
    order = kept[np.argsort(-best_scores[kept], kind="stable")]
    active = np.ones(len(order), bool)
    selected = []
    for i in range(len(order)):
        if len(selected) >= max_detections:
            break
        if not active[i]:
            continue
        selected.append(order[i])
        active[i] = False
        rest = np.nonzero(active[i + 1 :])[0] + i + 1
        if len(rest):
            overlaps = _iou(boxes[order[i]], boxes[order[rest]])
            active[rest[overlaps > np.float32(iou_threshold)]] = False
    out_boxes = np.zeros((max_detections, 4), np.float32)
    out_classes = np.zeros(max_detections, np.float32)
    out_scores = np.zeros(max_detections, np.float32)
    n = len(selected)
    if n:
        index = np.asarray(selected)
        out_boxes[:n] = boxes[index]
        out_classes[:n] = best[index]
        out_scores[:n] = best_scores[index]
    return {
        "detection_boxes": out_boxes,
        "detection_classes": out_classes,
        "detection_scores": out_scores,
        "num_detections": np.float32(n),
    }


def postprocess(encodings, scores, anchors, attributes: dict) -> dict:
    """One image's raw outputs -> the op's outputs, with the op's attributes (export.json)."""
    if attributes.get("use_regular_nms"):
        raise ValueError("raw-output exports are decoded with the fast NMS only")
    scales = [attributes[k] for k in ("y_scale", "x_scale", "h_scale", "w_scale")]
    boxes = decode_center_size(encodings, anchors, scales)
    return fast_nms(
        boxes,
        scores,
        int(attributes["num_classes"]),
        int(attributes["max_detections"]),
        float(attributes["nms_score_threshold"]),
        float(attributes["nms_iou_threshold"]),
    )
