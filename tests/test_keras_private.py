"""The private Keras APIs of keras_private.py still behave as the package relies on them.

A Keras upgrade that renames or changes any of them fails here, by name, instead of deep inside
quantization-aware training, the int8 export or the multi-replica train step.
"""

import inspect

import keras
import numpy as np
import tensorflow as tf

from ondevice_vision import keras_private


def _model():
    inputs = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(3, name="dense")(inputs)
    shared = keras.layers.ReLU(name="relu")
    left, right = shared(hidden), shared(-hidden)
    outputs = {"sum": keras.layers.Add(name="add")([left, right]), "left": left}
    return keras.Model(inputs, outputs), hidden, shared, left, right


def test_functional_graph_walk():
    model, hidden, shared, left, right = _model()
    assert keras_private.is_functional(model)
    assert not keras_private.is_functional(keras.layers.Dense(2))
    by_depth = keras_private.nodes_by_depth(model)
    assert isinstance(by_depth, dict) and all(isinstance(d, int) for d in by_depth)
    operations = {node.operation.name for nodes in by_depth.values() for node in nodes}
    assert {"x", "dense", "relu", "add"} <= operations
    input_node = next(n for ns in by_depth.values() for n in ns if n.is_input)
    assert input_node.operation.name == "x"
    assert "add" in {node.operation.name for node in by_depth[0]}  # depth 0: the outputs
    assert keras_private.producing_operation(hidden).name == "dense"
    assert keras_private.producing_operation(model.inputs[0]).name == "x"
    # A shared layer: one inbound node per call, and each tensor knows its own.
    assert len(keras_private.inbound_nodes(shared)) == 2
    assert keras_private.producing_node(left) is keras_private.inbound_nodes(shared)[0]
    assert keras_private.producing_node(right) is keras_private.inbound_nodes(shared)[1]
    assert keras_private.producing_node(left).input_tensors[0] is hidden


def test_outputs_pack_and_graph_run():
    model = _model()[0]
    x = np.ones((2, 4), np.float32)
    packed = keras_private.pack_outputs(model, [tf.zeros(1), tf.ones(1)])
    assert sorted(packed) == ["left", "sum"]
    seen = []

    def operation_fn(op):
        def call(*args, **kwargs):
            seen.append(op.name)
            return op(*args, **kwargs)

        return call

    out = keras_private.run_through_graph(model, tf.constant(x), operation_fn)
    expected = model(x)
    assert set(seen) >= {"dense", "relu", "add"}
    for key in expected:
        np.testing.assert_allclose(out[key], expected[key], rtol=1e-6)


def test_optimizer_all_reduce_hook_is_still_called_by_apply():
    """Our optimizers skip Keras' replica sum by overriding this method: it must still exist and
    be what the TensorFlow backend's optimizer calls to sum gradients."""
    from keras.src.backend.tensorflow import optimizer as tf_optimizer

    method = "_all_reduce_sum_gradients"
    assert hasattr(tf_optimizer.TFOptimizer, method)
    assert f"self.{method}(" in inspect.getsource(tf_optimizer.TFOptimizer)

    class Sgd(keras_private.SkipGradientAllReduce, keras.optimizers.SGD):
        pass

    calls = []
    original = keras_private.SkipGradientAllReduce._all_reduce_sum_gradients

    def spy(self, grads_and_vars):
        calls.append(True)
        return original(self, grads_and_vars)

    Sgd._all_reduce_sum_gradients = spy
    variable = keras.Variable(np.ones(3, np.float32))
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        optimizer = Sgd(learning_rate=1.0)
        variable = keras.Variable(np.ones(3, np.float32))
        optimizer.build([variable])

    @tf.function
    def step():
        strategy.run(lambda: optimizer.apply([tf.ones(3)], [variable]))

    step()
    assert calls, f"{method} was not called by apply() under a distribution strategy"
    np.testing.assert_allclose(variable.numpy(), np.zeros(3))


def test_adam_moments_are_the_ones_keras_adam_updates():
    variables = [keras.Variable(np.ones(3, np.float32)), keras.Variable(np.ones(2, np.float32))]
    optimizer = keras.optimizers.Adam(learning_rate=0.1)
    optimizer.build(variables)
    optimizer.apply([tf.fill([3], 2.0), tf.fill([2], -3.0)], variables)
    for variable, gradient in zip(variables, (2.0, -3.0), strict=True):
        m, v = keras_private.adam_moments(optimizer, variable)
        # After one step from zero: m = (1 - beta_1) g, v = (1 - beta_2) g^2.
        np.testing.assert_allclose(m.numpy(), 0.1 * gradient, rtol=1e-6)
        np.testing.assert_allclose(v.numpy(), 0.001 * gradient**2, rtol=1e-5)
