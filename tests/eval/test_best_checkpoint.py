"""The best checkpoint follows the argmax (or argmin) of the logged metric; early stopping
counts evaluations without improvement; the folder is swapped in whole."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from ondevice_vision import checkpoints
from ondevice_vision.eval.best_checkpoint import BestCheckpoint


def run_sequence(tmp_path, values, mode="max", min_delta=0.0):
    weight = tf.Variable(0.0)
    best = BestCheckpoint(str(tmp_path), "AP", mode, min_delta)
    stale = []
    for step, value in enumerate(values, start=1):
        weight.assign(float(step))
        best.update({"AP": value, "AP50": 0.5}, step, tf.train.Checkpoint(w=weight))
        stale.append(best.stale)
    return best, stale


def test_best_is_the_argmax_of_the_logged_metric_and_stays_whole(tmp_path):
    values = [0.1, 0.3, 0.2, 0.35, 0.34, 0.35]
    best, stale = run_sequence(tmp_path, values)
    assert best.step == int(np.argmax(values)) + 1 == 4 and best.value == 0.35
    assert stale == [0, 0, 1, 0, 1, 2]  # a tie is no improvement
    path = checkpoints.latest_or_given(str(tmp_path), "best")
    assert os.path.basename(path) == "ckpt-4"
    assert tf.train.load_variable(path, "w/.ATTRIBUTES/VARIABLE_VALUE") == 4.0
    info = json.loads((tmp_path / "checkpoints" / "best" / "best.json").read_text())
    assert info == {"metric": "AP", "mode": "max", "value": 0.35, "step": 4}
    # Only the one best checkpoint, and no leftovers of the swaps beside it.
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["best"]
    assert not [n for n in os.listdir(tmp_path / "checkpoints" / "best") if "ckpt-2" in n]
    # A restarted run (or watcher) carries on from the saved state.
    again = BestCheckpoint(str(tmp_path), "AP")
    assert (again.value, again.step, again.stale) == (0.35, 4, 2)


def test_min_mode_and_min_delta(tmp_path):
    best, stale = run_sequence(tmp_path, [1.0, 0.95, 0.5, 0.48], mode="min", min_delta=0.1)
    assert best.step == 3 and stale == [0, 1, 0, 1]


def test_unknown_metric_names_what_the_evaluation_reports(tmp_path):
    best = BestCheckpoint(str(tmp_path), "mAP")
    with pytest.raises(ValueError, match="reports no 'mAP'; it reports AP, AP50"):
        best.update({"AP": 0.1, "AP50": 0.2, "per_class": {}}, 1, None)


def test_checkpoint_best_needs_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="no best checkpoint"):
        checkpoints.latest_or_given(str(tmp_path), "best")


@pytest.mark.parametrize("task,metric", [("detection", "AP"), ("segmentation", "mIoU")])
def test_a_run_without_eval_best_metric_follows_its_tasks_headline(tmp_path, task, metric):
    from ondevice_vision.configs import (
        lraspp_mobilenet_v3_small_shapes,
        ssdlite_mobilenet_v3_small_shapes,
    )

    recipe = {
        "detection": ssdlite_mobilenet_v3_small_shapes,
        "segmentation": lraspp_mobilenet_v3_small_shapes,
    }[task]
    config = recipe.get_config("smoke")
    config.eval.best_metric = ""
    best = BestCheckpoint.for_run(config, str(tmp_path))
    assert best.metric == metric and best.mode == "max"
