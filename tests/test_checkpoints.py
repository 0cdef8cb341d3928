"""Start-up housekeeping never deletes a user's checkpoint; a truncated newest one falls back."""

import gc
import os

import pytest
import tensorflow as tf

from ondevice_vision import checkpoints, tasks
from ondevice_vision.configs import (
    lraspp_mobilenet_v3_small_shapes,
    ssdlite_mobilenet_v3_small_shapes,
)


def _saved(workdir, steps):
    checkpoint = tf.train.Checkpoint(v=tf.Variable(0.0))
    manager = checkpoints.make_manager(checkpoint, workdir, keep=5)
    for step in steps:
        checkpoint.v.assign(float(step))
        checkpoints.save(manager, step)
    return checkpoint


def test_checkpoints_copied_in_without_an_index_are_adopted_not_deleted(tmp_path):
    source, workdir = str(tmp_path / "source"), str(tmp_path / "run")
    _saved(source, [7])
    os.makedirs(checkpoints.checkpoint_dir(workdir))
    for name in os.listdir(checkpoints.checkpoint_dir(source)):
        if name.startswith("ckpt-7"):
            os.link(
                os.path.join(checkpoints.checkpoint_dir(source), name),
                os.path.join(checkpoints.checkpoint_dir(workdir), name),
            )
    report = checkpoints.tidy_checkpoint_dir(workdir)
    assert report["removed"] == [] and [os.path.basename(p) for p in report["adopted"]] == [
        "ckpt-7"
    ]
    restored = tf.train.Checkpoint(v=tf.Variable(0.0))
    assert checkpoints.restore_newest_readable(restored, workdir).endswith("ckpt-7")
    assert float(restored.v.numpy()) == 7.0


def test_unlisted_older_files_are_set_aside_and_newer_leftovers_removed(tmp_path):
    workdir = str(tmp_path)
    _saved(workdir, [2, 4])
    directory = tmp_path / "checkpoints"
    (directory / "ckpt-1.index").write_bytes(b"a user's old file")
    (directory / "ckpt-5.index").write_bytes(b"a killed save")
    (directory / "notes.txt").write_text("mine")
    report = checkpoints.tidy_checkpoint_dir(workdir)
    assert [os.path.basename(p) for p in report["removed"]] == ["ckpt-5.index"]
    assert [os.path.basename(p) for p in report["set_aside"]] == ["ckpt-1.index"]
    assert (directory / "set_aside" / "ckpt-1.index").read_bytes() == b"a user's old file"
    assert (directory / "notes.txt").exists()


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(tmp_path):
    workdir = str(tmp_path)
    _saved(workdir, [2, 4])
    data = [n for n in os.listdir(tmp_path / "checkpoints") if n.startswith("ckpt-4.data")]
    path = tmp_path / "checkpoints" / data[0]
    path.write_bytes(path.read_bytes()[:3])
    restored = tf.train.Checkpoint(v=tf.Variable(0.0))
    assert checkpoints.restore_newest_readable(restored, workdir).endswith("ckpt-2")
    assert float(restored.v.numpy()) == 2.0
    # Every listed checkpoint broken: an error naming them.
    for name in os.listdir(tmp_path / "checkpoints"):
        if name.startswith("ckpt-2.data"):
            (tmp_path / "checkpoints" / name).write_bytes(b"")
    with pytest.raises(ValueError, match="ckpt-4.*ckpt-2"):
        checkpoints.restore_newest_readable(tf.train.Checkpoint(v=tf.Variable(0.0)), workdir)


def _segmenter_and_detector():
    """The smoke segmenter (whose checkpoints the tests write) and the smoke detector's config."""
    segmentation = lraspp_mobilenet_v3_small_shapes.get_config("smoke")
    detection = ssdlite_mobilenet_v3_small_shapes.get_config("smoke")
    return tasks.get_task(segmentation).build_model(segmentation), detection


def _unrestored_warnings(caplog) -> list[str]:
    """TensorFlow's "Value in checkpoint could not be found" warnings, logged whenever a failed
    restore's bookkeeping is garbage-collected (the records, whatever stream TensorFlow's
    logging handler writes to)."""
    gc.collect()
    return [r.getMessage() for r in caplog.records if "could not be found" in r.getMessage()]


def test_a_checkpoint_of_another_model_is_named_in_one_sentence(tmp_path, caplog):
    segmenter, detection = _segmenter_and_detector()
    prefix = tf.train.Checkpoint(model=segmenter).write(str(tmp_path / "ckpt-1"))
    with pytest.raises(ValueError, match="ckpt-1: this checkpoint does not match the config"):
        tasks.load_trained_model(detection, None, prefix)
    # Not hundreds of warnings after it.
    unrestored = _unrestored_warnings(caplog)
    assert not unrestored, f"{len(unrestored)} warnings, e.g. {unrestored[0]}"


def test_resuming_from_another_models_checkpoints_fails_quietly(tmp_path, caplog):
    segmenter, detection = _segmenter_and_detector()
    checkpoint = tf.train.Checkpoint(model=segmenter)
    checkpoints.save(checkpoints.make_manager(checkpoint, str(tmp_path), keep=5), 3)
    with pytest.raises(ValueError, match="no readable checkpoint in the workdir: .*ckpt-3"):
        checkpoints.restore_newest_readable(
            tf.train.Checkpoint(model=tasks.get_task(detection).build_model(detection)),
            str(tmp_path),
        )
    assert not _unrestored_warnings(caplog)  # the detector is garbage by now


def test_a_checkpoint_named_by_one_of_its_files_is_accepted(tmp_path):
    workdir = str(tmp_path)
    _saved(workdir, [4])
    prefix = os.path.join(checkpoints.checkpoint_dir(workdir), "ckpt-4")
    for given in (prefix, prefix + ".index", prefix + ".data-00000-of-00001"):
        assert checkpoints.latest_or_given(workdir, given) == prefix
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*ckpt-5.index"):
        checkpoints.latest_or_given(workdir, prefix[: -len("4")] + "5.index")
