"""The evaluate driver writes every result through tf.io.gfile, so remote workdirs work."""

import json

import numpy as np
import pytest
import tensorflow as tf

from ondevice_vision.configs import ssdlite_mobilenet_v3_small_shapes
from ondevice_vision.eval import evaluate
from ondevice_vision.tasks import detection as detection_task


def test_results_of_a_remote_workdir_land_on_that_filesystem(tmp_path, monkeypatch):
    """ram:// is TensorFlow's in-memory filesystem: it stands in for gs:// here. Nothing may
    appear in a local folder named after the scheme (the old os.makedirs(abspath) bug)."""
    monkeypatch.chdir(tmp_path)
    config = ssdlite_mobilenet_v3_small_shapes.get_config("smoke")
    config.eval.validation_loss = True
    model = detection_task.build_model(config)
    workdir = "ram://ondevice_eval_test/run"
    metrics = evaluate.evaluate(config, model, workdir, step=3)
    assert np.isfinite(metrics["AP50"]) or metrics["AP50"] == -1
    # The loss on the eval split, its terms summing to it.
    assert metrics["val_loss"] > 0
    assert metrics["val_loss"] == pytest.approx(metrics["val_cls_loss"] + metrics["val_box_loss"])
    for name in (
        "metrics.json",
        "eval/metrics_3.json",
        "eval/detections.json",
        "eval/ground_truth.json",
        "eval/predictions_3.png",
        "eval/pr_curves_3.png",
        "eval/confusion_matrix_3.png",
        "eval/worst_images_3.png",
    ):
        assert tf.io.gfile.exists(f"{workdir}/{name}"), name
    written = json.loads(tf.io.gfile.GFile(f"{workdir}/metrics.json").read())
    names = ["circle", "square", "triangle", "star"]
    assert list(written["per_class"]) == names
    assert written["confusion_matrix"]["labels"] == [*names, "background"]
    # Every ground-truth object is in a row: matched, confused or missed (background column).
    objects = sum(r["instances"] for r in written["per_class"].values())
    assert sum(map(sum, written["confusion_matrix"]["counts"][:4])) == objects
    assert not list(tmp_path.iterdir()), "wrote into a local folder instead"


def test_evaluation_shows_progress(monkeypatch):
    from ondevice_vision.eval import evaluator

    lines = []
    # absl's logger may have been reconfigured by an earlier test in this worker: record the
    # calls themselves.
    monkeypatch.setattr(evaluator.logging, "info", lambda msg, *a: lines.append(msg % a))
    monkeypatch.setattr(evaluator, "LOG_EVERY_SECONDS", 0.0)
    config = ssdlite_mobilenet_v3_small_shapes.get_config("smoke")
    config.eval.batch_size = 1
    model = detection_task.build_model(config)
    evaluate.evaluate(config, model, None)
    text = "\n".join(lines)
    assert "eval: 1 images" in text and "(4/4, ETA" in text
