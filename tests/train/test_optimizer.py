"""train/optimizer.py's Adam against Keras' own: the same updates, bit for bit."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ondevice_vision.configs import common
from ondevice_vision.train import optimizer, strategy


def _variables(rng):
    return [
        tf.Variable(rng.normal(size=shape).astype("float32"))
        for shape in ((3, 3, 8, 16), (16,), (1, 1, 16, 4))
    ]


def _gradients(rng, variables, steps):
    return [
        [tf.constant(rng.normal(scale=0.1, size=v.shape).astype("float32")) for v in variables]
        for _ in range(steps)
    ]


@pytest.mark.parametrize("in_graph", [True, False], ids=["tf_function", "eager"])
def test_adam_updates_equal_keras_adam_bit_for_bit(in_graph):
    """Five steps on a warmup + cosine schedule with gradient clipping: every weight and both
    moment estimates equal Keras' Adam's exactly, in a tf.function and eagerly."""
    tc = common.train_config()
    tc.update(optimizer="adam", schedule="cosine", base_learning_rate=0.01, total_steps=10)
    tc.update(warmup_steps=2, clip_gradient_norm=1.0)
    rng = np.random.default_rng(0)
    one = strategy.create_strategy("one_device")
    with one.scope():
        ours_vars = _variables(rng)
        keras_vars = [tf.Variable(v.numpy()) for v in ours_vars]
        ours = optimizer.build_optimizer(tc)
        reference = keras.optimizers.Adam(
            learning_rate=optimizer.build_schedule(tc), global_clipnorm=1.0
        )
        ours.build(ours_vars)
        reference.build(keras_vars)
    steps = _gradients(rng, ours_vars, 5)

    def apply(opt, grads, variables):
        one.run(lambda: opt.apply(grads, variables))

    if in_graph:
        apply = tf.function(apply)
    for grads in steps:
        apply(ours, grads, ours_vars)
        apply(reference, grads, keras_vars)
        for a, b in zip(ours_vars, keras_vars, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    for name in ("_momentums", "_velocities"):
        for a, b in zip(getattr(ours, name), getattr(reference, name), strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert int(ours.iterations.numpy()) == 5
    assert not np.array_equal(ours_vars[0].numpy(), _variables(np.random.default_rng(0))[0])


def test_adam_step_traces_half_the_ops_of_keras_adam():
    """Why ours exists: the step's scalars once per apply(), not once per variable."""
    rng = np.random.default_rng(1)
    counts = {}
    for name, opt in (
        ("ours", optimizer.Adam(learning_rate=1e-3)),
        ("keras", keras.optimizers.Adam(learning_rate=1e-3)),
    ):
        variables = [tf.Variable(tf.zeros([4])) for _ in range(20)]
        opt.build(variables)
        grads = [tf.constant(rng.normal(size=4).astype("float32")) for _ in variables]
        graph = (
            tf.function(lambda g, o=opt, v=variables: o.apply(g, v))
            .get_concrete_function(grads)
            .graph
        )
        counts[name] = len(graph.get_operations())
    assert counts["ours"] < 0.6 * counts["keras"], counts
