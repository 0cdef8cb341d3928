"""Detection exports without the post-processing op (`--postprocess=none`): raw box encodings and
class scores, anchors.npy and the box coder in export.json, decoded by our runner with
heads/tflite_postprocess.py into the same detections as TFLite_Detection_PostProcess (float and
int8 TFLite, and the SavedModel), on the session's fitted detector."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from ondevice_vision.eval.evaluate import evaluate_exported
from ondevice_vision.export import edgetpu_ops, tflite
from ondevice_vision.export.detection import center_size_anchors
from ondevice_vision.export.exported_model import load_exported_model
from ondevice_vision.export.saved_model import export_saved_model
from ondevice_vision.heads.anchors import anchor_boxes
from tests.helpers.export_fixtures import (
    OVERFIT_CALIBRATION_IMAGES,
    assert_same_detections,
    confident,
    label_map,
    training_examples,
)


@pytest.fixture(scope="module")
def exports(overfit_detector, overfit_detector_tflite, tmp_path_factory):
    root = tmp_path_factory.mktemp("raw_outputs")
    config, model, _ = overfit_detector
    labels = label_map(config)
    images, _ = training_examples(config)
    size = tuple(config.model.input_size)
    # With the op: the session's exports (tests/conftest.py); without it: the same conversion
    # and calibration (its two training images, the same ranges) with raw outputs.
    paths = {(q, "op"): path for q, path in overfit_detector_tflite.items()}
    for quantization in ("none", "int8"):
        paths[quantization, "none"] = tflite.export_tflite(
            config,
            model,
            labels,
            str(root / f"{quantization}_none"),
            size,
            quantization=quantization,
            num_calibration_images=OVERFIT_CALIBRATION_IMAGES,
            postprocess="none",
        )
    paths["saved_model"] = export_saved_model(
        config, model, labels, str(root / "saved_model_raw"), postprocess="none"
    )
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (2, *images.shape[1:]), dtype=np.uint8)
    return config, model, paths, np.concatenate([images, noise])


def _assert_same_detections(a: dict, b: dict, box_atol: float):
    np.testing.assert_array_equal(a["num_detections"], b["num_detections"])
    np.testing.assert_array_equal(a["detection_classes"], b["detection_classes"])
    np.testing.assert_allclose(a["detection_scores"], b["detection_scores"], atol=1e-6)
    np.testing.assert_allclose(a["detection_boxes"], b["detection_boxes"], atol=box_atol)


@pytest.mark.parametrize("quantization", ["none", "int8"])
def test_raw_tflite_decodes_to_the_ops_detections(exports, quantization):
    config, model, paths, images = exports
    with_op = load_exported_model(paths[quantization, "op"])
    raw = load_exported_model(paths[quantization, "none"])
    expected, got = with_op.predict(images), raw.predict(images)
    assert got["num_detections"].min() > 0  # not vacuous: the fitted model finds its objects
    _assert_same_detections(expected, got, box_atol=1e-6)

    # What a client without our package needs: the raw outputs, anchors and coder settings.
    directory = paths[quantization, "none"]
    anchors = np.load(os.path.join(directory, "anchors.npy"))
    expected = anchor_boxes(model.anchor_options, model.num_feature_maps, config.model.input_size)
    np.testing.assert_allclose(anchors, center_size_anchors(expected), atol=0)
    info = json.load(open(os.path.join(directory, "export.json")))["extra"]
    assert info["raw_outputs"]["outputs"] == ["box_encodings", "class_predictions"]
    assert info["postprocess"]["y_scale"] == 10.0 and info["postprocess"]["h_scale"] == 5.0
    outputs = raw.runner.get_output_details()
    assert outputs["box_encodings"]["shape"].tolist() == [1, len(anchors), 4]
    assert outputs["class_predictions"]["shape"].tolist() == [
        1,
        len(anchors),
        config.model.num_classes + 1,
    ]
    if quantization == "int8":
        # 8-bit to the end: no DEQUANTIZE, no custom op; every operator qualifies.
        assert {d["dtype"] for d in outputs.values()} == {np.uint8}
        with open(raw.path, "rb") as f:
            graph = f.read()
        counts = edgetpu_ops.operator_counts(graph)
        assert "DEQUANTIZE" not in counts and "TFLite_Detection_PostProcess" not in counts
        assert edgetpu_ops.report(graph)["operators_off"] == 0


def test_eval_of_a_raw_export_equals_the_ops(exports):
    config, _, paths, _ = exports
    with_op = evaluate_exported(config, paths["int8", "op"])
    raw = evaluate_exported(config, paths["int8", "none"])
    assert raw["AP"] == with_op["AP"] and raw["AP50"] == with_op["AP50"]


def test_raw_saved_model_decodes_like_the_float_tflite_op(exports):
    _, _, paths, images = exports
    saved = load_exported_model(paths["saved_model"])
    assert sorted(saved.signature.structured_outputs) == ["box_encodings", "class_predictions"]
    expected = load_exported_model(paths["none", "op"]).predict(images)
    got = saved.predict(images)
    # TensorFlow and LiteRT compute the network with float differences (scores: 4e-6 measured),
    # which may swap two detections of nearly equal score: the fitted objects (score > 0.5) are
    # the same detections, and every image's scores are the same within 1e-5 in order.
    np.testing.assert_array_equal(got["num_detections"], expected["num_detections"])
    assert len(confident(expected, 0)["scores"]) > 0  # the fitted image's objects
    for i in range(len(images)):
        assert_same_detections(confident(got, i), confident(expected, i), atol=1e-4)
    np.testing.assert_allclose(got["detection_scores"], expected["detection_scores"], atol=1e-5)
