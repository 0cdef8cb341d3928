"""Detection confusion matrix: which class each object was detected as, or missed.

Per image, the detections scoring at least `score_threshold` are paired with ground-truth boxes
of any class, highest IoU first, each box used once, pairs below `iou_threshold` left out (the
matching Ultralytics' `ConfusionMatrix` describes). A pair adds one to [true class, detected
class]; a ground-truth box left alone adds one to [true class, background] (a missed object); a
detection left alone to [background, detected class] (a false alarm). Crowd regions are neither:
a detection on one is not counted, as COCOeval ignores it.
"""

from __future__ import annotations

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of yxyx boxes a [N, 4] x b [M, 4] -> [N, M]."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


class DetectionConfusion:
    """Accumulates a [K + 1, K + 1] matrix: rows the true class, columns the detected class,
    index K the background (last row: false alarms; last column: missed objects)."""

    def __init__(self, num_classes: int, iou_threshold: float = 0.5, score_threshold: float = 0.3):
        self.num_classes = int(num_classes)
        self.iou_threshold = float(iou_threshold)
        self.score_threshold = float(score_threshold)
        self.matrix = np.zeros((num_classes + 1, num_classes + 1), np.int64)

    def add_image(self, gt_boxes, gt_classes, gt_is_crowd, boxes, classes, scores) -> dict:
        """Adds one image (normalised or pixel yxyx boxes, both alike); returns its counts
        {"missed", "false_alarms", "confused", "objects"}."""
        gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
        gt_classes = np.asarray(gt_classes, np.int64).reshape(-1)
        crowd = np.asarray(gt_is_crowd, bool).reshape(-1)
        keep = np.asarray(scores, np.float64).reshape(-1) >= self.score_threshold
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)[keep]
        classes = np.asarray(classes, np.int64).reshape(-1)[keep]
        background = self.num_classes
        objects, crowd_boxes = gt_boxes[~crowd], gt_boxes[crowd]
        object_classes = gt_classes[~crowd]
        iou = box_iou(objects, boxes)
        pairs = np.argwhere(iou >= self.iou_threshold)
        order = np.argsort(-iou[pairs[:, 0], pairs[:, 1]], kind="stable")
        gt_used = np.zeros(len(objects), bool)
        det_used = np.zeros(len(boxes), bool)
        confused = 0
        for g, d in pairs[order]:
            if gt_used[g] or det_used[d]:
                continue
            gt_used[g] = det_used[d] = True
            self.matrix[object_classes[g], classes[d]] += 1
            confused += int(object_classes[g] != classes[d])
        on_crowd = np.zeros(len(boxes), bool)
        if len(crowd_boxes):
            on_crowd = (box_iou(boxes, crowd_boxes) >= self.iou_threshold).any(axis=1)
        false_alarms = ~det_used & ~on_crowd
        np.add.at(self.matrix, (background, classes[false_alarms]), 1)
        np.add.at(self.matrix, (object_classes[~gt_used], background), 1)
        return {
            "missed": int((~gt_used).sum()),
            "false_alarms": int(false_alarms.sum()),
            "confused": confused,
            "objects": len(objects),
        }

    def to_json_dict(self, names) -> dict:
        return {
            "iou_threshold": self.iou_threshold,
            "score_threshold": self.score_threshold,
            "rows": "ground truth",
            "columns": "detection",
            "labels": [*names, "background"],
            "counts": self.matrix.tolist(),
        }
