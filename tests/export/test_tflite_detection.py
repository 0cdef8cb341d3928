"""Float TFLite detectors: TFLite_Detection_PostProcess inside, builtin ops only, and the same
detections as the SavedModel (per-class NMS) or as a NumPy port of the OD API's fast NMS.

"The SavedModel" here is its serving_default function run in memory: test_export_saved_model.py
shows the reloaded SavedModel equals it to 1e-4, and exporting one more model would double this
file's run time."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from ondevice_vision import tasks
from ondevice_vision.export import tflite
from ondevice_vision.export.exported_model import load_exported_model
from ondevice_vision.heads import box_coder
from ondevice_vision.heads.anchors import anchor_boxes
from tests.helpers.export_fixtures import (
    assert_same_detections,
    confident,
    detection_config,
    eval_images,
    label_map,
)


@pytest.fixture(scope="module")
def case(tmp_path_factory, lively_detector):
    root = tmp_path_factory.mktemp("tflite_detection")
    config = detection_config()
    config.data.num_eval = config.eval.max_images = 8
    model = lively_detector
    labels = label_map(config)
    size = tuple(config.model.input_size)
    paths = {
        "regular": tflite.export_tflite(
            config, model, labels, str(root / "regular"), size, use_regular_nms=True
        ),
        "fast": tflite.export_tflite(config, model, labels, str(root / "fast"), size),
    }
    serving_default = tasks.get_task(config).make_export(config, model, labels).serving_default
    return {
        "serve": lambda images: {k: v.numpy() for k, v in serving_default(images).items()},
        "config": config,
        "model": model,
        "labels": labels,
        "images": eval_images(config, 8),
        "paths": paths,
        # 2 threads: the runtime must still run the regular-NMS model single-threaded.
        "models": {k: load_exported_model(p, num_threads=2) for k, p in paths.items()},
    }


def test_float_tflite_with_regular_nms_matches_the_saved_model(case):
    served = case["serve"](case["images"])
    lite = case["models"]["regular"].predict(case["images"])
    total = 0
    for i in range(len(case["images"])):
        want = confident(served, i)
        assert_same_detections(confident(lite, i), want)
        total += len(want["scores"])
    assert total >= 8  # the comparison is not vacuous
    assert set(np.unique(lite["detection_classes"])) <= {0, *case["labels"].dataset_ids}


def _iou(a, b):
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    if area_a <= 0 or area_b <= 0:
        return 0.0
    h = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    w = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return h * w / (area_a + area_b - h * w)


def _fast_nms_reference(config, model, image):
    """The OD API fast NMS: each anchor's best class, one class-agnostic greedy NMS."""
    m = config.model
    raw = model(image[None].astype("float32"), training=False)
    anchors = anchor_boxes(m.anchors, 2 + len(m.extra_depths), m.input_size)
    boxes = box_coder.decode(
        raw["box_outputs"][0], anchors, tuple(m.anchors.box_scale_factors)
    ).numpy()
    scores = tf.sigmoid(raw["class_outputs"][0][:, 1:]).numpy()
    best, classes = scores.max(axis=1), scores.argmax(axis=1)
    keep = []
    for i in np.argsort(-best, kind="stable"):
        if best[i] < m.postprocess.score_threshold or len(keep) == m.postprocess.max_detections:
            break
        if all(_iou(boxes[i], boxes[j]) <= m.postprocess.iou_threshold for j in keep):
            keep.append(i)
    keep = np.asarray(keep)
    return {"boxes": np.clip(boxes[keep], 0, 1), "classes": classes[keep], "scores": best[keep]}


def test_fast_nms_tflite_matches_a_numpy_reference(case):
    lite = case["models"]["fast"].predict(case["images"])
    ids = np.asarray(case["labels"].dataset_ids)
    total = 0
    for i, image in enumerate(case["images"]):
        want = _fast_nms_reference(case["config"], case["model"], image)
        above = want["scores"] > 0.5
        want = {k: v[above] for k, v in want.items()}
        want["classes"] = ids[want["classes"]]
        assert_same_detections(confident(lite, i), want)
        total += len(want["scores"])
    assert total >= 8


def test_tflite_graph_has_the_postprocess_op_and_only_builtins(case):
    for kind in ("regular", "fast"):
        path = case["models"][kind].path
        interpreter = Interpreter(
            model_path=path,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        interpreter.allocate_tensors()
        ops = [op["op_name"] for op in interpreter._get_ops_details()]
        assert ops.count("TFLite_Detection_PostProcess") == 1
        assert ops[-1] == "TFLite_Detection_PostProcess"
        assert not [op for op in ops if op.startswith("Flex")]
        assert {"CONV_2D", "DEPTHWISE_CONV_2D", "LOGISTIC"} <= set(ops)
        detail = interpreter.get_input_details()[0]
        assert list(detail["shape"]) == [1, 128, 128, 3] and detail["dtype"] == np.float32
        info = case["models"][kind].info
        assert info.extra["postprocess"]["use_regular_nms"] == (kind == "regular")
        assert info.extra["postprocess"]["num_classes"] == 4


def test_any_image_size_is_resized_to_the_model_input(case):
    image = case["images"][0]
    bigger = tf.image.resize(image[None], (200, 160), method="nearest").numpy().astype(np.uint8)
    lite = case["models"]["regular"].predict(bigger)
    served = case["serve"](bigger)
    assert_same_detections(confident(lite, 0), confident(served, 0))
