"""Moving averages of the weights: the closed form, under a strategy with two replicas, and what
a checkpoint restores."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ondevice_vision import checkpoints
from ondevice_vision.train.ema import WeightAverages


def tiny_model():
    inputs = keras.Input((3,))
    x = keras.layers.Dense(2, name="dense")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    return keras.Model(inputs, x)


def closed_form(history, decay):
    """a_0 = w_0; a_{t+1} = d_t a_t + (1 - d_t) w_{t+1}, d_t = min(decay, (1 + t) / (10 + t))."""
    average = history[0]
    for t, weights in enumerate(history[1:]):
        d = min(decay, (1 + t) / (10 + t))
        average = d * average + (1 - d) * weights
    return average


@pytest.mark.parametrize("replicas", [1, 2])
def test_averages_equal_the_closed_form_after_n_steps(replicas):
    devices = [f"/cpu:{i}" for i in range(replicas)]
    strategy = (
        tf.distribute.MirroredStrategy(devices) if replicas > 1 else tf.distribute.get_strategy()
    )
    rng = np.random.default_rng(0)
    with strategy.scope():
        model = tiny_model()
        averages = WeightAverages(model, decay=0.8)
    kernel = model.get_layer("dense").kernel
    history = [kernel.numpy()]

    @tf.function
    def step(t):
        strategy.run(lambda: averages.update(t))

    for t in range(12):  # past the (1 + t) / (10 + t) warm-up: both regimes
        kernel.assign(rng.normal(size=(3, 2)).astype(np.float32))
        history.append(kernel.numpy())
        step(tf.constant(t, tf.int64))
    key = checkpoints.average_key(kernel)
    np.testing.assert_allclose(averages.averages[key].numpy(), closed_form(history, 0.8), rtol=1e-5)
    # Frozen statistics are not averaged; the weights themselves are left alone.
    assert all("moving" not in k for k in averages.averages)
    np.testing.assert_array_equal(kernel.numpy(), history[-1])
    with averages.swapped_in():
        np.testing.assert_array_equal(kernel.numpy(), averages.averages[key].numpy())
    np.testing.assert_array_equal(kernel.numpy(), history[-1])


def test_restore_weights_reads_the_averages_into_the_model(tmp_path):
    model = tiny_model()
    averages = WeightAverages(model, decay=0.5)
    kernel = model.get_layer("dense").kernel
    kernel.assign(kernel.numpy() + 1.0)
    averages.update(100)  # a = 0.5 a + 0.5 w
    expected = averages.averages[checkpoints.average_key(kernel)].numpy()
    path = tf.train.Checkpoint(model=model, ema=averages).write(str(tmp_path / "ckpt-1"))
    fresh = tiny_model()
    assert checkpoints.restore_weights(fresh, path)
    np.testing.assert_allclose(fresh.get_layer("dense").kernel.numpy(), expected)
    raw = tiny_model()
    assert not checkpoints.restore_weights(raw, path, moving_averages=False)
    np.testing.assert_allclose(raw.get_layer("dense").kernel.numpy(), kernel.numpy())
