import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ondevice_vision.data.label_map import LabelMap
from ondevice_vision.eval.coco_evaluator import METRIC_NAMES, CocoEvaluator

LABEL_MAP = LabelMap(names=("person", "bicycle", "car"), dataset_ids=(1, 2, 3))


def random_boxes(rng, n):
    """Normalised yxyx boxes of assorted sizes (small, medium and large at 200x300 pixels)."""
    sizes = rng.choice([0.04, 0.15, 0.5], size=(n, 1)) * rng.uniform(0.8, 1.2, size=(n, 2))
    corners = rng.uniform(0, 1 - sizes)
    return np.concatenate([corners, corners + sizes], axis=1).astype(np.float32)


def make_scene(seed, num_images=6):
    rng = np.random.default_rng(seed)
    images = []
    for image_id in range(1, num_images + 1):
        n = int(rng.integers(1, 6))
        images.append(
            {
                "image_id": np.int64(image_id * 7),
                "height": 200,
                "width": 300,
                "boxes": random_boxes(rng, n),
                "classes": rng.integers(0, 3, n).astype(np.int32),
                "is_crowd": np.zeros(n, bool),
            }
        )
    return images


def add_ground_truth(evaluator, images):
    for im in images:
        evaluator.add_ground_truth(
            im["image_id"], im["height"], im["width"], im["boxes"], im["classes"], im["is_crowd"]
        )


def pycocotools_stats(gt_path, dt_path, img_ids=None):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_path))
        coco_dt = coco_gt.loadRes(str(dt_path))
        coco_eval = COCOeval(coco_gt, coco_dt, iouType="bbox")
        if img_ids is not None:
            coco_eval.params.imgIds = img_ids
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return dict(zip(METRIC_NAMES, coco_eval.stats.tolist(), strict=True))


def test_perfect_detections_give_ap_one():
    images = make_scene(0)
    evaluator = CocoEvaluator(LABEL_MAP)
    add_ground_truth(evaluator, images)
    for im in images:
        evaluator.add_detections(
            im["image_id"], 200, 300, im["boxes"], np.ones(len(im["boxes"])), im["classes"]
        )
    result = evaluator.evaluate()
    assert list(result) == list(METRIC_NAMES)
    assert all(isinstance(v, float) for v in result.values())
    for name in ("AP", "AP50", "AP75", "ARmax100"):
        assert result[name] == pytest.approx(1.0), name


def test_perturbed_detections_match_pycocotools_on_written_json(tmp_path):
    rng = np.random.default_rng(1)
    images = make_scene(1, num_images=8)
    evaluator = CocoEvaluator(LABEL_MAP)
    add_ground_truth(evaluator, images)
    for im in images:
        boxes = im["boxes"] + rng.normal(0, 0.02, im["boxes"].shape).astype(np.float32)
        classes = im["classes"].copy()
        classes[rng.random(len(classes)) < 0.2] = 0
        extra = random_boxes(rng, 2)  # false positives
        evaluator.add_detections(
            im["image_id"],
            200,
            300,
            np.concatenate([boxes, extra]),
            rng.uniform(0.05, 1.0, len(boxes) + 2),
            np.concatenate([classes, rng.integers(0, 3, 2)]),
        )
    result = evaluator.evaluate()
    gt_path = evaluator.write_ground_truth(str(tmp_path / "gt.json"))
    dt_path = evaluator.write_detections(str(tmp_path / "dt.json"))
    assert result == pycocotools_stats(gt_path, dt_path)
    assert 0.05 < result["AP"] < 0.95
    detections = json.loads((tmp_path / "dt.json").read_text())
    assert set(detections[0]) == {"image_id", "category_id", "bbox", "score"}
    assert [p.name for p in tmp_path.iterdir()].count("dt.json") == 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_box_conversion_to_pixel_xywh_and_dataset_ids(tmp_path):
    label_map = LabelMap(names=("a", "b"), dataset_ids=(5, 17))
    evaluator = CocoEvaluator(label_map)
    evaluator.add_detections(3, 100, 200, [[0.1, 0.2, 0.5, 0.9]], [0.7], [1])
    evaluator.write_detections(str(tmp_path / "dt.json"))
    (det,) = json.loads((tmp_path / "dt.json").read_text())
    assert det["image_id"] == 3 and det["category_id"] == 17 and det["score"] == pytest.approx(0.7)
    np.testing.assert_allclose(det["bbox"], [40.0, 10.0, 140.0, 40.0], rtol=1e-6)


def test_crowd_box_absorbs_detections():
    box = np.array([[0.1, 0.1, 0.5, 0.5]], np.float32)
    crowd = np.array([[0.55, 0.55, 0.95, 0.95]], np.float32)
    inside_crowd = np.array([[0.6, 0.6, 0.7, 0.7], [0.75, 0.75, 0.9, 0.9]], np.float32)

    def evaluate(crowd_flag):
        evaluator = CocoEvaluator(LABEL_MAP)
        evaluator.add_ground_truth(
            1, 200, 300, np.concatenate([box, crowd]), [0, 0], [False, crowd_flag]
        )
        evaluator.add_detections(
            1, 200, 300, np.concatenate([box, inside_crowd]), [0.5, 0.9, 0.8], [0, 0, 0]
        )
        return evaluator.evaluate()

    # Detections inside a crowd region are ignored, neither true nor false positives.
    assert evaluate(True)["AP"] == pytest.approx(1.0)
    assert evaluate(False)["AP"] < 0.9


def test_images_without_ground_truth(tmp_path):
    images = make_scene(2, num_images=3)
    images.append(
        {
            "image_id": np.int64(1000),
            "height": 200,
            "width": 300,
            "boxes": np.zeros((0, 4), np.float32),
            "classes": np.zeros((0,), np.int32),
            "is_crowd": np.zeros((0,), bool),
        }
    )
    evaluator = CocoEvaluator(LABEL_MAP)
    add_ground_truth(evaluator, images)
    for im in images[:3]:
        evaluator.add_detections(
            im["image_id"], 200, 300, im["boxes"], np.full(len(im["boxes"]), 0.5), im["classes"]
        )
    assert evaluator.evaluate()["AP"] == pytest.approx(1.0)  # empty image, nothing detected
    # False positives on the empty image and on an image never given ground truth.
    evaluator.add_detections(1000, 200, 300, [[0.1, 0.1, 0.6, 0.6]], [0.9], [0])
    evaluator.add_detections(2000, 50, 60, [[0.2, 0.2, 0.4, 0.4]], [0.95], [1])
    result = evaluator.evaluate()
    assert result["AP"] < 1.0
    gt_path = evaluator.write_ground_truth(str(tmp_path / "gt.json"))
    dt_path = evaluator.write_detections(str(tmp_path / "dt.json"))
    assert result == pycocotools_stats(gt_path, dt_path)


def test_no_detections_at_all():
    evaluator = CocoEvaluator(LABEL_MAP)
    add_ground_truth(evaluator, make_scene(3, num_images=2))
    result = evaluator.evaluate()
    assert result["AP"] == 0.0 and result["ARmax100"] == 0.0


def write_official_annotations(path):
    """A tiny official-style file: category ids 1, 3, 90; `area` differs from the box area."""
    images = [{"id": i, "height": 100, "width": 200, "file_name": f"{i}.jpg"} for i in (10, 20, 30)]
    boxes = {
        10: [([20.0, 10.0, 60.0, 40.0], 1), ([100.0, 50.0, 50.0, 30.0], 90)],
        20: [([5.0, 5.0, 30.0, 80.0], 3)],
        30: [([0.0, 0.0, 100.0, 100.0], 1), ([120.0, 10.0, 40.0, 40.0], 3)],
    }
    annotations = []
    for image_id, objects in boxes.items():
        for bbox, category_id in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_id,
                    "bbox": bbox,
                    "area": 0.8 * bbox[2] * bbox[3],
                    "iscrowd": 0,
                    "segmentation": [],
                }
            )
    categories = [{"id": i, "name": n} for i, n in ((1, "person"), (3, "car"), (90, "toothbrush"))]
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return boxes


def to_norm_yxyx(bbox, height=100, width=200):
    x, y, w, h = bbox
    return [y / height, x / width, (y + h) / height, (x + w) / width]


def test_official_annotation_file_with_non_contiguous_ids(tmp_path):
    ann_path = tmp_path / "instances.json"
    boxes = write_official_annotations(ann_path)
    label_map = LabelMap(names=("person", "car", "toothbrush"), dataset_ids=(1, 3, 90))
    contiguous = label_map.index_of_dataset_id()
    evaluator = CocoEvaluator(label_map, annotation_file=str(ann_path))
    with pytest.raises(ValueError, match="add_ground_truth"):
        evaluator.add_ground_truth(10, 100, 200, [], [], [])

    # Only images 10 and 20 are evaluated: image 30's unseen ground truth must not count.
    for image_id in (10, 20):
        objects = boxes[image_id]
        evaluator.add_detections(
            image_id,
            100,
            200,
            [to_norm_yxyx(b) for b, _ in objects],
            [1.0] * len(objects),
            [contiguous[c] for _, c in objects],
        )
    result = evaluator.evaluate()
    assert result["AP"] == pytest.approx(1.0)
    dt_path = evaluator.write_detections(str(tmp_path / "dt.json"))
    assert {d["category_id"] for d in json.loads(open(dt_path).read())} == {1, 3, 90}
    assert result == pycocotools_stats(ann_path, dt_path, img_ids=[10, 20])
    with pytest.raises(ValueError, match="no ground truth to write|there is none"):
        evaluator.write_ground_truth(str(tmp_path / "gt.json"))

    # A shifted box on image 30 now lowers AP; again identical to pycocotools.
    evaluator.add_detections(
        30, 100, 200, [to_norm_yxyx([30.0, 30.0, 100.0, 100.0])], [0.9], [contiguous[1]]
    )
    result = evaluator.evaluate()
    assert result["AP"] < 1.0
    evaluator.write_detections(dt_path)
    assert result == pycocotools_stats(ann_path, dt_path, img_ids=[10, 20, 30])

    evaluator.add_detections(99, 100, 200, [], [], [])
    with pytest.raises(ValueError, match=r"instances.json.*\[99\]"):
        evaluator.evaluate()


def test_official_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        CocoEvaluator(LABEL_MAP, annotation_file=str(tmp_path / "missing.json"))
    ann_path = tmp_path / "instances.json"
    write_official_annotations(ann_path)
    with pytest.raises(ValueError, match=r"instances.json.*\[2\]"):
        CocoEvaluator(LABEL_MAP, annotation_file=str(ann_path))


def test_update_with_padded_batches_equals_direct_calls():
    images = make_scene(4, num_images=4)
    rng = np.random.default_rng(4)
    max_gt, max_det = 6, 8
    batch_outputs = {
        "detection_boxes": np.zeros((4, max_det, 4), np.float32),
        "detection_scores": np.zeros((4, max_det), np.float32),
        "detection_classes": np.zeros((4, max_det), np.float32),  # float, as TF NMS returns
        "num_detections": np.zeros((4,), np.int32),
    }
    batch_labels = {
        "image_id": np.array([im["image_id"] for im in images]),
        "image_info": np.tile([[200, 300]], (4, 1)),
        "gt_boxes": np.zeros((4, max_gt, 4), np.float32),
        "gt_classes": np.full((4, max_gt), -1, np.int32),
        "gt_is_crowd": np.zeros((4, max_gt), bool),
    }
    direct = CocoEvaluator(LABEL_MAP)
    for b, im in enumerate(images):
        n = len(im["boxes"])
        batch_labels["gt_boxes"][b, :n] = im["boxes"]
        batch_labels["gt_classes"][b, :n] = im["classes"]
        det_boxes = im["boxes"] + rng.normal(0, 0.03, im["boxes"].shape).astype(np.float32)
        scores = rng.uniform(0.1, 1, n).astype(np.float32)
        batch_outputs["detection_boxes"][b, :n] = det_boxes
        batch_outputs["detection_scores"][b, :n] = scores
        batch_outputs["detection_classes"][b, :n] = im["classes"]
        batch_outputs["num_detections"][b] = n
        # Padding rows beyond num_detections must be ignored: make them look like detections.
        batch_outputs["detection_boxes"][b, n:] = [0.0, 0.0, 0.5, 0.5]
        batch_outputs["detection_scores"][b, n:] = 0.99
        direct.add_ground_truth(im["image_id"], 200, 300, im["boxes"], im["classes"])
        direct.add_detections(im["image_id"], 200, 300, det_boxes, scores, im["classes"])
    batched = CocoEvaluator(LABEL_MAP)
    batched.update(batch_outputs, batch_labels)
    assert batched.evaluate() == direct.evaluate()

    with pytest.raises(ValueError, match="already has ground truth"):
        batched.update(batch_outputs, batch_labels)
    batched.reset()
    with pytest.raises(ValueError, match="gt_boxes"):
        batched.update(batch_outputs, {k: batch_labels[k] for k in ("image_id", "image_info")})


def test_bad_input_is_rejected():
    evaluator = CocoEvaluator(LABEL_MAP)
    with pytest.raises(ValueError, match="class indices"):
        evaluator.add_detections(1, 10, 10, [[0, 0, 1, 1]], [0.5], [3])
    evaluator.add_detections(1, 20, 10, [], [], [])  # the rejected call recorded nothing
    with pytest.raises(ValueError, match="disagrees"):
        evaluator.add_ground_truth(1, 10, 10, [], [])
    with pytest.raises(ValueError, match="already has detections"):
        evaluator.add_detections(1, 20, 10, [], [], [])
    with pytest.raises(ValueError, match="scores"):
        evaluator.add_detections(2, 10, 10, [[0, 0, 1, 1]], [0.5, 0.4], [0])
    with pytest.raises(ValueError, match="no images"):
        CocoEvaluator(LABEL_MAP).evaluate()
