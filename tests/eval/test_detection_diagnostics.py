"""Per-class COCO scores, the detection confusion matrix, zero-based COCO ids, worst images."""

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ondevice_vision.data.label_map import LabelMap
from ondevice_vision.eval.coco_evaluator import CocoEvaluator
from ondevice_vision.eval.detection_confusion import DetectionConfusion
from ondevice_vision.eval.worst_images import WorstImages

LABEL_MAP = LabelMap(names=("person", "bicycle", "car", "dog"), dataset_ids=(1, 2, 3, 4))


def scene(seed, num_images=8):
    """Random boxes of classes 0-2 (class 3, "dog", never appears) and noisy detections."""
    rng = np.random.default_rng(seed)
    truth, found = [], []
    for image_id in range(1, num_images + 1):
        n = int(rng.integers(1, 6))
        size = rng.choice([0.05, 0.2, 0.5], size=(n, 1)) * rng.uniform(0.8, 1.2, size=(n, 2))
        corner = rng.uniform(0, 1 - size)
        boxes = np.concatenate([corner, corner + size], axis=1)
        classes = rng.integers(0, 3, n)
        truth.append((image_id, boxes, classes))
        noisy = boxes + rng.normal(0, 0.02, boxes.shape)
        wrong = classes.copy()
        wrong[rng.random(n) < 0.25] = 3  # some detected as the class without ground truth
        found.append((image_id, noisy, rng.uniform(0.05, 1, n), wrong))
    return truth, found


def test_per_class_scores_equal_cocoeval_of_each_category_alone(tmp_path):
    truth, found = scene(0)
    evaluator = CocoEvaluator(LABEL_MAP)
    for image_id, boxes, classes in truth:
        evaluator.add_ground_truth(image_id, 200, 300, boxes, classes)
    for image_id, boxes, scores, classes in found:
        evaluator.add_detections(image_id, 200, 300, boxes, scores, classes)
    evaluator.evaluate()
    per_class = evaluator.per_class()
    gt = evaluator.write_ground_truth(str(tmp_path / "gt.json"))
    dt = evaluator.write_detections(str(tmp_path / "dt.json"))
    for name, category_id in zip(LABEL_MAP.names[:3], LABEL_MAP.dataset_ids[:3], strict=True):
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO(gt)
            coco_eval = COCOeval(coco_gt, coco_gt.loadRes(dt), iouType="bbox")
            coco_eval.params.catIds = [category_id]
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        row = per_class[name]
        assert row["AP"] == pytest.approx(coco_eval.stats[0], abs=1e-12), name
        assert row["AP50"] == pytest.approx(coco_eval.stats[1], abs=1e-12), name
        assert row["AR100"] == pytest.approx(coco_eval.stats[8], abs=1e-12), name
        anns = [a for a in coco_gt.dataset["annotations"] if a["category_id"] == category_id]
        assert row["instances"] == len(anns)
        assert row["images"] == len({a["image_id"] for a in anns})
    assert 0.05 < per_class["person"]["AP"] < 0.95
    # "dog" has detections but no ground truth: listed as such, not scored as zero.
    assert per_class["dog"] == {"images": 0, "instances": 0, "no_ground_truth": True}
    recall, curves = evaluator.pr_curves(0.5)
    assert len(recall) == 101 and set(curves) == {"person", "bicycle", "car"}
    # AP50 is the mean of the interpolated precision curve at IoU 0.5.
    assert np.mean(curves["car"]) == pytest.approx(per_class["car"]["AP50"], abs=1e-12)


def zero_based_file(path):
    """A labelling tool's export: image and annotation ids from 0."""
    boxes = {0: [[10, 20, 50, 40], [100, 10, 30, 30]], 1: [[0, 0, 80, 60]]}
    images = [{"id": i, "width": 200, "height": 100, "file_name": f"{i}.jpg"} for i in boxes]
    annotations = []
    for image_id, image_boxes in boxes.items():
        for box in image_boxes:
            annotations.append(
                {
                    "id": len(annotations),
                    "image_id": image_id,
                    "category_id": 0,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    categories = [{"id": 0, "name": "window"}]
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return boxes


def test_zero_based_ids_in_an_annotation_file_score_perfect_detections_as_ap_one(tmp_path):
    path = tmp_path / "annotations.json"
    boxes = zero_based_file(path)
    evaluator = CocoEvaluator(LabelMap(names=("window",), dataset_ids=(0,)), str(path))
    for image_id, image_boxes in boxes.items():
        b = np.asarray(image_boxes, np.float64)
        norm = np.stack(
            [b[:, 1] / 100, b[:, 0] / 200, (b[:, 1] + b[:, 3]) / 100, (b[:, 0] + b[:, 2]) / 200], 1
        )
        evaluator.add_detections(image_id, 100, 200, norm, np.ones(len(b)), np.zeros(len(b), int))
    result = evaluator.evaluate()
    assert result["AP"] == pytest.approx(1.0) and result["AP50"] == pytest.approx(1.0)
    # The unmodified file through pycocotools alone loses the object with annotation id 0.
    detections = tmp_path / "dt.json"
    evaluator.write_detections(str(detections))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(path))
        raw = COCOeval(coco_gt, coco_gt.loadRes(str(detections)), iouType="bbox")
        raw.evaluate()
        raw.accumulate()
        raw.summarize()
    assert raw.stats[0] < 0.99


def test_confusion_matrix_counts_on_a_hand_built_image():
    confusion = DetectionConfusion(num_classes=3, iou_threshold=0.5, score_threshold=0.3)
    gt = [[0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 0.7, 0.7], [0.8, 0.0, 1.0, 0.2], [0.3, 0.8, 0.5, 1.0]]
    gt_classes = [0, 1, 2, 0]
    crowd = [False, False, False, True]
    detections = [
        [0.0, 0.0, 0.2, 0.2],  # object 0 as class 0: correct
        [0.01, 0.0, 0.2, 0.2],  # the same object again: its pair is taken -> false alarm
        [0.5, 0.5, 0.7, 0.69],  # object 1 (class 1) detected as class 2: confused
        [0.8, 0.0, 1.0, 0.2],  # object 2, but below the score threshold: missed
        [0.3, 0.8, 0.5, 1.0],  # on the crowd region: not counted
        [0.0, 0.6, 0.1, 0.7],  # nothing there: false alarm of class 1
    ]
    classes = [0, 0, 2, 2, 1, 1]
    scores = [0.9, 0.8, 0.7, 0.2, 0.9, 0.5]
    counts = confusion.add_image(gt, gt_classes, crowd, detections, classes, scores)
    expected = np.zeros((4, 4), int)
    expected[0, 0] = 1
    expected[1, 2] = 1
    expected[2, 3] = 1  # missed
    expected[3, 0] = 1  # false alarms
    expected[3, 1] = 1
    np.testing.assert_array_equal(confusion.matrix, expected)
    assert counts == {"missed": 1, "false_alarms": 2, "confused": 1, "objects": 3}
    report = confusion.to_json_dict(["a", "b", "c"])
    assert (
        report["labels"] == ["a", "b", "c", "background"] and report["counts"] == expected.tolist()
    )


def test_worst_images_keeps_the_worst_and_draws_only_those():
    worst = WorstImages(2)
    drawn = []

    def picture(i):
        drawn.append(i)
        return np.full((4, 6, 3), i, np.uint8)

    for i, badness in enumerate([3, 1, 5, 0, 4]):
        worst.add((badness,), f"image {i}", lambda i=i: picture(i))
    assert worst.captions() == ["image 2", "image 4"]
    assert drawn == [0, 1, 2, 4]  # image 3 was never among the worst two seen so far
    sheet = worst.picture(cols=1)
    assert sheet.dtype == np.uint8 and sheet.shape[1] == 6


def test_a_placeholder_category_sharing_a_name_is_listed_apart_without_ground_truth():
    label_map = LabelMap(names=("facade", "window", "facade"), dataset_ids=(0, 1, 3))
    evaluator = CocoEvaluator(label_map)
    boxes = [[0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9]]
    evaluator.add_ground_truth(0, 100, 100, boxes, [1, 2])
    evaluator.add_detections(0, 100, 100, boxes, [0.9, 0.8], [1, 2])
    evaluator.evaluate()
    per_class = evaluator.per_class()
    assert list(per_class) == ["facade (id 0)", "window", "facade (id 3)"]
    assert per_class["facade (id 0)"]["no_ground_truth"]
    assert per_class["facade (id 3)"]["AP"] == pytest.approx(1.0)
