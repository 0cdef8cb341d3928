"""`ondevice-import` on what is not a TF1 checkpoint of ours to take: one sentence naming the file,
before any model is built (the CLI's exit status and --help: tests/test_cli.py)."""

import os

import numpy as np
import pytest
import tensorflow as tf

from ondevice_vision.configs import ssdlite_mobilenet_v3_small_shapes
from ondevice_vision.importers.main import import_checkpoint


def _tf1_checkpoint(prefix, names):
    """A name-based (TF1) checkpoint, as Saver and the model zoo write them."""
    tensors = [tf.constant(np.ones([2], np.float32)) for _ in names]
    tf.raw_ops.SaveV2(
        prefix=prefix, tensor_names=list(names), shape_and_slices=[""] * len(names), tensors=tensors
    )
    return prefix


def _import(path, tmp_path):
    config = ssdlite_mobilenet_v3_small_shapes.get_config()
    return import_checkpoint(config, str(path), str(tmp_path / "out"))


def test_another_models_checkpoint_given_by_its_index_file_is_named(tmp_path):
    prefix = _tf1_checkpoint(str(tmp_path / "resnet.ckpt"), ["resnet_v1_50/conv1/weights"])
    # `.index` names the checkpoint (the prefix is what TensorFlow wants).
    with pytest.raises(
        ValueError, match=rf"{prefix}: neither an Object Detection API nor a DeepLab checkpoint"
    ):
        _import(prefix + ".index", tmp_path)
    assert not os.path.exists(tmp_path / "out")


def test_truncated_random_and_tf2_checkpoints_are_named(tmp_path):
    prefix = _tf1_checkpoint(str(tmp_path / "model.ckpt"), ["MobilenetV3/Conv/weights"])
    with open(prefix + ".index", "r+b") as f:
        f.truncate(20)
    with pytest.raises(ValueError, match=rf"{prefix}: not a readable checkpoint"):
        _import(prefix, tmp_path)

    junk = tmp_path / "junk"
    junk.mkdir()
    for name in ("model.ckpt.index", "model.ckpt.data-00000-of-00001"):
        (junk / name).write_bytes(os.urandom(300))
    with pytest.raises(ValueError, match=rf"{junk}/model.ckpt: not a readable checkpoint"):
        _import(junk / "model.ckpt", tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"{junk}: is a folder"):
        _import(junk, tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"{junk}/nothing.index not found"):
        _import(junk / "nothing", tmp_path)

    ours = tf.train.Checkpoint(v=tf.Variable(1.0)).write(str(tmp_path / "ours" / "ckpt-4"))
    with pytest.raises(ValueError, match=rf"{ours}: is a TF2 \(object-based\) checkpoint"):
        _import(ours, tmp_path)
