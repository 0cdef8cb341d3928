"""`ondevice-import --use_moving_averages`: a TF1 checkpoint's ExponentialMovingAverage values."""

import numpy as np
import pytest
import tensorflow as tf

from ondevice_vision.backbones import build_backbone, slim_checkpoint


def write_tf1_checkpoint(path, values: dict):
    """A name-based TF1 checkpoint, as slim's training writes it."""
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.compat.v1.Variable(v, name=n) for n, v in values.items()]
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, path, write_meta_graph=False)
    return path


@pytest.fixture(scope="module")
def backbone_and_checkpoint(tmp_path_factory):
    backbone = build_backbone("mobilenet_v3_small", depth_multiplier=0.35)
    names = slim_checkpoint.backbone_variable_names(backbone)
    rng = np.random.default_rng(0)
    values = {n: rng.normal(size=v.shape).astype(np.float32) for n, v in names.items()}
    # Averages of the trainable weights and of the batch-norm moving statistics alike, as slim's
    # train_image_classifier keeps them for every model variable.
    averaged = sorted(names)[::2]
    values.update({f"{n}/ExponentialMovingAverage": values[n] + 1.0 for n in averaged})
    path = write_tf1_checkpoint(str(tmp_path_factory.mktemp("tf1") / "model.ckpt"), values)
    return backbone, names, values, averaged, path


def test_moving_averages_replace_the_values_they_average(backbone_and_checkpoint):
    backbone, names, values, averaged, path = backbone_and_checkpoint
    report = slim_checkpoint.load_slim_checkpoint(backbone, path, moving_averages=True)
    assert sorted(report.averaged) == averaged
    for name, var in names.items():
        expected = values[name] + (1.0 if name in averaged else 0.0)
        np.testing.assert_array_equal(var.numpy(), expected, err_msg=name)
    report = slim_checkpoint.load_slim_checkpoint(backbone, path)
    assert report.averaged == []
    for name, var in names.items():
        np.testing.assert_array_equal(var.numpy(), values[name], err_msg=name)


def test_asking_for_averages_a_checkpoint_lacks_is_an_error(backbone_and_checkpoint, tmp_path):
    backbone, names, values, _, _ = backbone_and_checkpoint
    plain = write_tf1_checkpoint(str(tmp_path / "model.ckpt"), {n: values[n] for n in names})
    with pytest.raises(
        slim_checkpoint.CheckpointMismatchError, match="no ExponentialMovingAverage"
    ):
        slim_checkpoint.load_slim_checkpoint(backbone, plain, moving_averages=True)
