"""Segmentation diagnostics: the confusion matrix in the metrics, per-class scalars, the worst
images by their own mIoU."""

import numpy as np
import pytest
import tensorflow as tf

from ondevice_vision.configs import lraspp_mobilenet_v3_small_shapes
from ondevice_vision.data.label_map import LabelMap
from ondevice_vision.eval.segmentation import SegmentationEvaluator

NAMES = ("background", "disc", "bar", "never")


def test_confusion_matrix_per_class_iou_and_worst_images():
    config = lraspp_mobilenet_v3_small_shapes.get_config("smoke")
    config.eval.num_worst_images = 2
    masks = np.zeros((3, 8, 8, 1), np.uint8)
    masks[:, 2:6, 2:6] = 1
    masks[1, 0, :] = 2
    masks[2, 7, :] = 255  # ignored pixels
    predicted = masks[..., 0].astype(np.int32).copy()
    predicted[predicted == 255] = 0
    predicted[1, 2:6, 2:6] = 2  # image 1: the disc taken for a bar
    predicted[2, 0, 0] = 1  # image 2: one wrong pixel
    labels = {
        "mask": masks,
        "image_size": np.full((3, 2), 8, np.int32),
        "image_id": np.array([b"a", b"b", b"c"]),
    }
    dataset = tf.data.Dataset.from_tensor_slices((np.zeros((3, 8, 8, 3), np.float32), labels))
    index = iter(range(3))

    def predict(images):
        i = next(index)
        return {"semantic_map": predicted[i : i + 1]}

    evaluator = SegmentationEvaluator(config, LabelMap.contiguous(NAMES))
    metrics = evaluator.run(dataset.batch(1), predict)
    counts = np.asarray(metrics["confusion_matrix"]["counts"])
    assert metrics["confusion_matrix"]["labels"] == list(NAMES)
    assert counts.sum() == 3 * 64 - 8  # the ignored row is not counted
    assert counts[1, 2] == 16 and counts[0, 1] == 1 and counts[2, 2] == 8
    assert counts[3].sum() == 0 and counts[:, 3].sum() == 0
    iou = metrics["per_class_iou"]
    assert iou["disc"] == pytest.approx(32 / (48 + 1)) and iou["never"] is None
    scalars = evaluator.scalars(metrics)
    assert set(scalars) == {f"per_class/IoU/{n}" for n in NAMES[:3]}
    assert (
        evaluator.worst.captions()[0].startswith("b: mIoU") and len(evaluator.worst.captions()) == 2
    )
    figures = evaluator.figures()
    assert set(figures) == {"confusion_matrix", "worst_images"}
    assert all(f.dtype == np.uint8 and f.ndim == 3 for f in figures.values())
