import json
import math

import numpy as np
import pytest

from ondevice_vision.eval.miou import StreamingConfusionMatrix


def brute_force_iou(labels, predictions, num_classes, ignore_label=255):
    """Per-class IoU by counting pixel sets directly; NaN where the union is empty."""
    labels = labels.reshape(-1)
    predictions = predictions.reshape(-1)
    keep = labels != ignore_label
    labels, predictions = labels[keep], predictions[keep]
    ious = []
    for c in range(num_classes):
        gt_c = labels == c
        pred_c = predictions == c
        union = np.logical_or(gt_c, pred_c).sum()
        ious.append(np.logical_and(gt_c, pred_c).sum() / union if union else math.nan)
    accuracy = (labels == predictions).mean() if labels.size else math.nan
    return ious, accuracy


def random_pair(rng, shape, num_classes, ignore_fraction=0.2, absent=()):
    classes = [c for c in range(num_classes) if c not in absent]
    labels = rng.choice(classes, size=shape)
    predictions = np.where(rng.random(shape) < 0.6, labels, rng.choice(classes, size=shape))
    labels = np.where(rng.random(shape) < ignore_fraction, 255, labels)
    return labels.astype(np.uint8), predictions.astype(np.int32)


def test_matches_brute_force_with_ignore_and_absent_class():
    rng = np.random.default_rng(0)
    num_classes = 6
    cm = StreamingConfusionMatrix(num_classes)
    all_labels, all_preds = [], []
    for _ in range(3):
        labels, preds = random_pair(rng, (2, 17, 23), num_classes, absent=(4,))
        cm.update(labels, preds)
        all_labels.append(labels)
        all_preds.append(preds)
    ref_iou, ref_acc = brute_force_iou(
        np.concatenate(all_labels, axis=None), np.concatenate(all_preds, axis=None), num_classes
    )
    result = cm.result()
    np.testing.assert_allclose(result["per_class_iou"], ref_iou, rtol=1e-12, equal_nan=True)
    assert math.isnan(result["per_class_iou"][4])
    assert result["mIoU"] == pytest.approx(np.nanmean(ref_iou), rel=1e-12)
    assert result["pixel_accuracy"] == pytest.approx(ref_acc, rel=1e-12)
    assert result["confusion_matrix"].sum() == sum(int((lab != 255).sum()) for lab in all_labels)


def test_class_predicted_but_absent_in_gt_has_zero_iou():
    labels = np.array([[0, 0, 1, 1]])
    preds = np.array([[0, 2, 1, 1]])
    cm = StreamingConfusionMatrix(3)
    cm.update(labels, preds)
    result = cm.result()
    assert result["per_class_iou"] == pytest.approx([0.5, 1.0, 0.0])
    assert result["mIoU"] == pytest.approx(0.5)


def test_prediction_on_ignored_pixels_does_not_count():
    cm = StreamingConfusionMatrix(3)
    cm.update(np.array([0, 255, 255]), np.array([0, 2, 1]))
    result = cm.result()
    assert result["per_class_iou"][0] == 1.0
    assert math.isnan(result["per_class_iou"][1]) and math.isnan(result["per_class_iou"][2])
    assert result["mIoU"] == 1.0


def test_merge_equals_single_stream():
    rng = np.random.default_rng(1)
    a_labels, a_preds = random_pair(rng, (9, 11), 5)
    b_labels, b_preds = random_pair(rng, (4, 7), 5)
    single = StreamingConfusionMatrix(5)
    single.update(a_labels, a_preds)
    single.update(b_labels, b_preds)
    first, second = StreamingConfusionMatrix(5), StreamingConfusionMatrix(5)
    first.update(a_labels, a_preds)
    second.update(b_labels, b_preds)
    np.testing.assert_array_equal(first.merge(second).matrix, single.matrix)
    with pytest.raises(ValueError, match="merge"):
        first.merge(StreamingConfusionMatrix(4))


def test_empty_and_json():
    cm = StreamingConfusionMatrix(3)
    result = cm.result()
    assert math.isnan(result["mIoU"]) and math.isnan(result["pixel_accuracy"])
    cm.update(np.array([0, 1]), np.array([0, 0]))
    as_json = cm.to_json_dict()
    text = json.dumps(as_json, allow_nan=False)
    assert json.loads(text)["per_class_iou"] == [0.5, 0.0, None]
    assert as_json["confusion_matrix"] == [[1, 0, 0], [1, 0, 0], [0, 0, 0]]


def test_bad_input_is_rejected():
    cm = StreamingConfusionMatrix(3)
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((2, 2), np.int32), np.zeros((2, 3), np.int32))
    with pytest.raises(ValueError, match="label values"):
        cm.update(np.array([3]), np.array([0]))
    with pytest.raises(ValueError, match="predicted values"):
        cm.update(np.array([0]), np.array([7]))
    with pytest.raises(ValueError, match="integer"):
        cm.update(np.array([0.0]), np.array([0]))
    with pytest.raises(ValueError, match="collides"):
        StreamingConfusionMatrix(3, ignore_label=1)
