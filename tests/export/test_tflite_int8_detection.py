"""Full-integer int8 TFLite detector: uint8 input, int8 builtins up to the post-processing op, and
its COCO mAP against the float model's on labelled images.

The model is trained until it fits its two training images (the session's `overfit_detector`,
tests/conftest.py, which tests/tasks/test_detection.py checks), so the metrics are those of a real
trained network; both models are scored with the project's COCO evaluator (pycocotools) on those
images. Stated bound: int8 AP50 at most 0.10 and AP at most 0.15 below float (measured here: see
the printed JSON).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from ondevice_vision.eval.coco_evaluator import CocoEvaluator
from ondevice_vision.export import edgetpu_ops
from ondevice_vision.export.exported_model import load_exported_model
from ondevice_vision.tasks import detection as detection_task
from tests.helpers.export_fixtures import (
    OVERFIT_CALIBRATION_IMAGES,
    delegated_ops,
    label_map,
    operators,
    training_examples,
)
from tests.helpers.mediapipe_checks import assert_detections_match, write_images
from tests.helpers.qat_fixtures import quantization_aware_export

AP50_DROP_BOUND = 0.10
AP_DROP_BOUND = 0.15
CALIBRATION_IMAGES = OVERFIT_CALIBRATION_IMAGES


@pytest.fixture(scope="module")
def trained(overfit_detector, overfit_detector_tflite):
    """The session's int8 export of the fitted detector (tests/conftest.py), shared with
    test_raw_outputs.py."""
    config, model, _ = overfit_detector
    path = overfit_detector_tflite["int8"]
    return config, model, label_map(config), load_exported_model(path, num_threads=2)


def test_int8_detector_is_integer_up_to_the_postprocess_op(trained):
    _, _, _, int8 = trained
    interpreter, ops = operators(int8.path)
    (image,) = interpreter.get_input_details()
    assert image["dtype"] == np.uint8 and list(image["shape"]) == [1, 128, 128, 3]
    names = [name for name, _, _ in ops]
    assert names.count("TFLite_Detection_PostProcess") == 1
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "QUANTIZE", "DEQUANTIZE"} <= set(names)
    for name, ins, outs in ops:
        assert not name.startswith("Flex")
        if name == "TFLite_Detection_PostProcess":
            continue  # takes the dequantized head outputs, returns float boxes / scores
        if name == "DEQUANTIZE":
            assert ins <= {np.int8, np.uint8} and outs == {np.float32}
            continue
        assert np.float32 not in ins | outs, f"{name} computes in float: {ins} -> {outs}"
    assert {d["dtype"] for d in interpreter.get_output_details()} == {np.float32}
    assert int8.info.quantization == "int8"
    assert int8.info.extra["num_calibration_images"] == CALIBRATION_IMAGES


def coco_metrics(config, labels, model_or_export, images, targets) -> dict:
    """AP / AP50 of a Keras model or a TFLite export on labelled images."""
    if hasattr(model_or_export, "info"):
        outputs = model_or_export.predict(images)
        outputs["detection_classes"] = model_or_export.to_contiguous(
            outputs["detection_classes"], outputs["num_detections"]
        )
    else:
        predicted = detection_task.predict(config, model_or_export, images.astype("float32"))
        outputs = {k: v.numpy() for k, v in predicted.items()}
    evaluator = CocoEvaluator(labels)
    evaluator.update(outputs, targets)
    return evaluator.evaluate()


def test_int8_map_drop_is_bounded(trained):
    config, model, labels, int8 = trained
    images, targets = training_examples(config)
    metrics = {
        "float": coco_metrics(config, labels, model, images, targets),
        "int8": coco_metrics(config, labels, int8, images, targets),
    }
    report = {f"{m}_{k}": metrics[k][m] for k in metrics for m in ("AP", "AP50")}
    print(json.dumps({"int8_detection": report}))
    assert metrics["float"]["AP50"] > 0.7  # the model did learn its images
    assert metrics["float"]["AP50"] - metrics["int8"]["AP50"] <= AP50_DROP_BOUND
    assert metrics["float"]["AP"] - metrics["int8"]["AP"] <= AP_DROP_BOUND


def test_mediapipe_object_detector_matches_ondevice_predict(
    trained, overfit_detector_tflite, tmp_path
):
    """MediaPipe's ObjectDetector, from the TFLite Model Metadata alone, on the float and the int8
    export of the trained model: the same detections as ondevice-predict (same class names,
    scores within 1e-3, boxes within 1 pixel, same count above 0.5)."""
    config, _, _, int8 = trained
    images, _ = training_examples(config)
    paths = write_images(images, str(tmp_path / "images"))
    float_path = overfit_detector_tflite["none"]
    matched = {}
    for name, exported in (("float", load_exported_model(float_path)), ("int8", int8)):
        matched[name] = assert_detections_match(
            exported.path, exported, paths, str(tmp_path / f"predict_{name}")
        )
    print(json.dumps({"mediapipe_matched_detections": matched}))
    assert min(matched.values()) >= 3  # the comparison is not vacuous


def test_int8_v3_detector_has_only_edge_tpu_operations(trained):
    """HARD_SWISH is not an Edge TPU operation (export/edgetpu_ops.py: the compiler maps a graph
    only up to the first one), and the int8 export has none left (it writes h-swish as ADD + MUL
    for XNNPACK, docs/export_speed.md): every operator qualifies."""
    with open(trained[-1].path, "rb") as f:
        graph = f.read()
    findings = edgetpu_ops.check_graph(graph)
    # The int8 export writes h-swish as ADD + MUL (quantization/int8_graph.py), both Edge TPU
    # operations: no HARD_SWISH is left, so no operator stops the compiler.
    assert edgetpu_ops.operator_counts(graph).get("HARD_SWISH", 0) == 0
    assert findings == [], [str(f) for f in findings]
    # export.json says so too (ondevice-export logs it).
    assert trained[-1].info.extra["edgetpu"] == edgetpu_ops.report(graph)
    assert not trained[-1].info.extra["edgetpu"]["off_by_op"]


def test_int8_detector_runs_on_xnnpack_int8_kernels(trained):
    names = delegated_ops(trained[3].path)
    # hard-swish is written as ADD + MUL for int8 (ondevice_vision/quantization/int8_graph.py).
    assert "HARD_SWISH" not in names and names.count("MUL") > 0
    # One partition before the float post-processing op, one for the DEQUANTIZEs feeding it.
    assert names.count("DELEGATE") <= 2, names


@pytest.fixture(scope="module")
def quantization_aware(trained, tmp_path_factory):
    config, model, labels, _ = trained
    root = tmp_path_factory.mktemp("qat_detection")
    return quantization_aware_export(config, model, labels, root)


def test_quantization_aware_int8_loses_no_more_than_post_training(trained, quantization_aware):
    """The float -> int8 drop: post-training (the float model -> its calibrated int8 export)
    against quantization-aware (the float model fine-tuned with int8 simulated -> its export from
    the learned ranges, no calibration; the drop from the fine-tuned network's own float
    metrics). Asserted on AP50 (smaller where post-training loses more than 0.02), and the
    quantization-aware int8 AP50 within the int8 bound of the first float model; AP printed."""
    config, model, labels, ptq = trained
    _, qat_model, qat_int8, _ = quantization_aware
    assert qat_int8.info.extra["quantization_aware"] is True
    assert "num_calibration_images" not in qat_int8.info.extra
    interpreter, ops = operators(qat_int8.path)
    assert interpreter.get_input_details()[0]["dtype"] == np.uint8
    for name, ins, outs in ops:
        if name not in ("TFLite_Detection_PostProcess", "DEQUANTIZE"):
            assert np.float32 not in ins | outs, f"{name} computes in float: {ins} -> {outs}"
    assert delegated_ops(qat_int8.path).count("DELEGATE") <= 2
    images, targets = training_examples(config)
    metrics = {
        "float": coco_metrics(config, labels, model, images, targets),
        "ptq_int8": coco_metrics(config, labels, ptq, images, targets),
        "qat_float": coco_metrics(config, labels, qat_model, images, targets),
        "qat_int8": coco_metrics(config, labels, qat_int8, images, targets),
    }
    report = {f"{k}_{m}": metrics[k][m] for k in metrics for m in ("AP", "AP50")}
    for m in ("AP", "AP50"):
        # A gain (int8 above float) is no drop.
        report[f"ptq_drop_{m}"] = max(0.0, metrics["float"][m] - metrics["ptq_int8"][m])
        # From its own float network, as for segmentation: the fine-tuning moves the float
        # metrics by itself (training noise on two images), which is bounded end to end.
        report[f"qat_drop_{m}"] = max(0.0, metrics["qat_float"][m] - metrics["qat_int8"][m])
        report[f"qat_drop_from_first_float_{m}"] = max(
            0.0, metrics["float"][m] - metrics["qat_int8"][m]
        )
    print(json.dumps({"qat_detection": report}))
    assert report["qat_drop_from_first_float_AP50"] <= AP50_DROP_BOUND
    assert report["qat_drop_AP50"] <= report["ptq_drop_AP50"]
    if report["ptq_drop_AP50"] > 0.02:
        assert report["qat_drop_AP50"] < report["ptq_drop_AP50"]
