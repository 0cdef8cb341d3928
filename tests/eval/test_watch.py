"""`ondevice-eval --watch` on a local run: every listed checkpoint is scored exactly once (also
across restarts of the job), a half-written one never, and the job ends at the final step."""

import json
import os
import threading

import numpy as np
import tensorflow as tf

from ondevice_vision import checkpoints
from ondevice_vision.configs import ssdlite_mobilenet_v3_small_shapes
from ondevice_vision.eval import watch as watch_lib
from ondevice_vision.tasks import detection as detection_task


def test_watcher_scores_each_checkpoint_once_and_never_a_half_written_one(tmp_path, monkeypatch):
    config = ssdlite_mobilenet_v3_small_shapes.get_config("smoke")
    config.train.total_steps = 4
    config.eval.max_images = 2
    config.eval.num_visualizations = 0
    config.eval.num_worst_images = 0
    workdir = str(tmp_path)
    model = detection_task.build_model(config)
    step = tf.Variable(0, dtype=tf.int64)
    manager = checkpoints.make_manager(tf.train.Checkpoint(model=model, step=step), workdir, 5)
    step.assign(2)
    checkpoints.save(manager, 2)
    # What a save killed midway leaves: files the index does not list.
    directory = checkpoints.checkpoint_dir(workdir)
    with open(os.path.join(directory, "ckpt-3.index"), "wb") as f:
        f.write(b"half")
    os.makedirs(os.path.join(directory, "ckpt-3_temp"))
    read = []
    restore = checkpoints.restore_weights
    monkeypatch.setattr(
        watch_lib.checkpoints, "restore_weights", lambda m, p: read.append(p) or restore(m, p)
    )

    def trainer_saves_later():
        for v in model.trainable_variables[-2:]:
            v.assign(v + 0.1)
        step.assign(4)
        checkpoints.save(manager, 4)

    timer = threading.Timer(1.0, trainer_saves_later)
    timer.start()
    result = watch_lib.watch(config, workdir, timeout=120, poll=0.2)
    timer.join()
    assert result["scored"] == [2, 4] and result["ended"] == "final checkpoint"
    assert [os.path.basename(p) for p in read] == ["ckpt-2", "ckpt-4"]
    logged = {
        s: json.loads((tmp_path / "eval" / f"metrics_{s}.json").read_text())["AP"] for s in (2, 4)
    }
    best_step = max(logged, key=lambda s: (logged[s], -s))
    assert result["best"]["step"] == best_step
    best = checkpoints.latest_or_given(workdir, "best")
    assert os.path.basename(best) == f"ckpt-{best_step}"
    np.testing.assert_array_equal(
        tf.train.load_variable(best, "step/.ATTRIBUTES/VARIABLE_VALUE"), best_step
    )
    # A restarted job finds nothing new: the final step is scored, nothing is read again.
    again = watch_lib.watch(config, workdir, timeout=0.5, poll=0.1)
    assert again["scored"] == [] and again["ended"] == "final checkpoint"
    assert len(read) == 2


def test_watcher_ends_after_the_timeout_without_checkpoints(tmp_path):
    config = ssdlite_mobilenet_v3_small_shapes.get_config("smoke")
    result = watch_lib.watch(config, str(tmp_path), timeout=0.3, poll=0.1)
    assert result == {"scored": [], "ended": "timeout", "best": None}
