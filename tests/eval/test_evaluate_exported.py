"""`ondevice-eval --saved_model / --tflite`: exported models give the metrics (and metrics JSON) a
checkpoint gives, on the same eval data."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from ondevice_vision.data.label_map import LabelMap
from ondevice_vision.eval import evaluate as eval_lib
from ondevice_vision.eval.evaluate import evaluate_exported
from ondevice_vision.export import tflite
from ondevice_vision.export.saved_model import export_saved_model
from tests.helpers.export_fixtures import (
    detection_config,
    label_map,
    segmentation_config,
)


@pytest.fixture(scope="module")
def detection(tmp_path_factory, lively_detector):
    root = tmp_path_factory.mktemp("eval_detection")
    config = detection_config()
    config.data.num_eval = config.eval.max_images = 8
    config.eval.num_visualizations = 0
    model = lively_detector
    path = export_saved_model(config, model, label_map(config), str(root / "sm"))
    return config, model, path


@pytest.fixture(scope="module")
def segmentation(tmp_path_factory, lively_segmenter):
    root = tmp_path_factory.mktemp("eval_segmentation")
    config = segmentation_config()
    config.eval.num_visualizations = 0
    model = lively_segmenter
    path = tflite.export_tflite(
        config, model, label_map(config), str(root / "lite"), tuple(config.model.input_size)
    )
    return config, model, os.path.join(path, "model.tflite")


def test_saved_model_metrics_equal_the_checkpoint_metrics(detection, tmp_path):
    config, model, path = detection
    reference = eval_lib.evaluate(config, model, None)
    result = evaluate_exported(config, path, str(tmp_path), expect_format="saved_model")
    assert result["format"] == "saved_model" and result["model"] == path
    # Shapes images are already 128x128 integers: the uint8 export sees exactly the same pixels.
    assert reference["AP50"] > 0.0
    for key, value in reference.items():
        if isinstance(value, float):
            assert result[key] == pytest.approx(value, abs=1e-6), key
    for name, row in reference["per_class"].items():
        assert result["per_class"][name] == pytest.approx(row, abs=1e-6), name
    with open(tmp_path / "metrics.json") as f:
        written = json.load(f)
    assert written["AP"] == pytest.approx(result["AP"])
    assert written["num_images"] == 8
    assert os.path.isfile(tmp_path / "eval" / "detections.json")


def test_tflite_segmentation_metrics_match_the_checkpoint(segmentation):
    config, model, path = segmentation
    reference = eval_lib.evaluate(config, model, None)
    result = evaluate_exported(config, path, None, num_threads=2, expect_format="tflite")
    assert set(reference) <= set(result)
    assert result["mIoU"] == pytest.approx(reference["mIoU"], abs=0.01)
    assert result["pixel_accuracy"] == pytest.approx(reference["pixel_accuracy"], abs=0.01)
    assert result["per_class_iou"].keys() == reference["per_class_iou"].keys()


def test_exports_must_fit_the_config(detection, segmentation, tmp_path):
    det_config, _, det_path = detection
    seg_config, _, seg_path = segmentation
    with pytest.raises(ValueError, match="is a detection model but the config is segmentation"):
        evaluate_exported(seg_config, det_path)
    with pytest.raises(ValueError, match="is a tflite export, not saved_model"):
        evaluate_exported(seg_config, seg_path, expect_format="saved_model")
    with pytest.raises(FileNotFoundError, match="no_such_export"):
        evaluate_exported(det_config, os.path.join(det_path, "no_such_export"))
    # The same model with other classes (a COCO-style label map): refused, not silently scored.
    other = str(tmp_path / "other")
    shutil.copytree(det_path, other)
    LabelMap(("person", "bicycle", "car", "motorcycle"), (1, 2, 3, 4)).save(
        os.path.join(other, "labels.json")
    )
    with pytest.raises(ValueError, match="predicts classes .*person.* but the eval data has"):
        evaluate_exported(det_config, other)
