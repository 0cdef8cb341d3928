"""Streaming mean intersection-over-union from a confusion matrix.

The definition follows the official Cityscapes evaluator (cityscapesscripts
evalPixelLevelSemanticLabeling), so both agree on the same predictions:
- pixels whose ground truth is `ignore_label` are dropped entirely: they are neither false negatives
  nor false positives, whatever the prediction there;
- IoU_c = TP / (TP + FP + FN); a class with TP + FP + FN == 0 (absent from the ground truth and
  never predicted on a non-ignored pixel) has no IoU: it is NaN in `per_class_iou` and left out of
  the mean, exactly as the official `averageScoreClasses` skips NaN classes.
"""

from __future__ import annotations

import math

import numpy as np


class StreamingConfusionMatrix:
    """Accumulates a [num_classes, num_classes] matrix: rows = ground truth, columns = prediction."""

    def __init__(self, num_classes: int, ignore_label: int = 255):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if 0 <= ignore_label < num_classes:
            raise ValueError(f"ignore_label {ignore_label} collides with a class index")
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def reset(self) -> None:
        self.matrix[:] = 0

    def update(self, labels, predictions) -> None:
        labels = np.asarray(labels)
        predictions = np.asarray(predictions)
        if labels.shape != predictions.shape:
            raise ValueError(
                f"labels shape {labels.shape} != predictions shape {predictions.shape}"
            )
        if not (
            np.issubdtype(labels.dtype, np.integer) and np.issubdtype(predictions.dtype, np.integer)
        ):
            raise ValueError(
                f"labels and predictions must be integer arrays, got {labels.dtype} and "
                f"{predictions.dtype}"
            )
        labels = labels.reshape(-1).astype(np.int64)
        predictions = predictions.reshape(-1).astype(np.int64)
        valid = labels != self.ignore_label
        labels = labels[valid]
        predictions = predictions[valid]
        k = self.num_classes
        if labels.size and (labels.min() < 0 or labels.max() >= k):
            raise ValueError(
                f"label values must be in [0, {k}) or {self.ignore_label}, "
                f"found range [{labels.min()}, {labels.max()}]"
            )
        if predictions.size and (predictions.min() < 0 or predictions.max() >= k):
            raise ValueError(
                f"predicted values on non-ignored pixels must be in [0, {k}), "
                f"found range [{predictions.min()}, {predictions.max()}]"
            )
        counts = np.bincount(labels * k + predictions, minlength=k * k)
        self.matrix += counts.reshape(k, k)

    def merge(self, other: StreamingConfusionMatrix) -> StreamingConfusionMatrix:
        """Adds another matrix (e.g. from another worker) into this one; returns self."""
        if (other.num_classes, other.ignore_label) != (self.num_classes, self.ignore_label):
            raise ValueError(
                f"cannot merge a {other.num_classes}-class matrix (ignore {other.ignore_label}) "
                f"into a {self.num_classes}-class one (ignore {self.ignore_label})"
            )
        self.matrix += other.matrix
        return self

    def result(self) -> dict:
        """mIoU, pixel_accuracy (floats, NaN when undefined), per_class_iou (list), confusion_matrix."""
        m = self.matrix.astype(np.float64)
        tp = np.diag(m)
        denominator = m.sum(axis=0) + m.sum(axis=1) - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(denominator > 0, tp / denominator, np.nan)
        present = ~np.isnan(iou)
        total = m.sum()
        return {
            "mIoU": float(iou[present].mean()) if present.any() else math.nan,
            "pixel_accuracy": float(tp.sum() / total) if total > 0 else math.nan,
            "per_class_iou": [float(v) for v in iou],
            "confusion_matrix": self.matrix.copy(),
        }

    def to_json_dict(self) -> dict:
        """`result()` with NaN -> None and the matrix as nested lists, ready for json.dumps."""
        result = self.result()
        return {
            "mIoU": _nan_to_none(result["mIoU"]),
            "pixel_accuracy": _nan_to_none(result["pixel_accuracy"]),
            "per_class_iou": [_nan_to_none(v) for v in result["per_class_iou"]],
            "confusion_matrix": result["confusion_matrix"].tolist(),
        }


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value
