"""Quantization-aware training and the int8 graph rewrite, on tiny models (seconds).

The end-to-end checks (train, export, metric drops against post-training quantization) are in
tests/export/test_tflite_int8_{detection,segmentation}.py, which reuse their trained models.
"""

from __future__ import annotations

import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from ondevice_vision.backbones.mobilenet import SlimHardSigmoid
from ondevice_vision.configs import ssdlite_mobilenet_edgetpu_320_coco
from ondevice_vision.configs.checks import config_problems
from ondevice_vision.export import tflite
from ondevice_vision.export.signatures import tflite_graph_archive
from ondevice_vision.quantization import graph, int8_graph, qat


def tiny_model(seed=0):
    """conv-BN-ReLU6, depthwise-BN-hard-swish, squeeze-excite, residual add, a biased conv."""
    rng = np.random.default_rng(seed)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    y = keras.layers.BatchNormalization()(y)
    y = keras.layers.Activation("hard_swish")(y)
    s = keras.layers.GlobalAveragePooling2D(keepdims=True)(y)
    s = keras.layers.Conv2D(8, 1)(s)
    s = SlimHardSigmoid()(s)  # the backbones' squeeze-excite gate
    y = keras.layers.Multiply()([y, s])
    x = keras.layers.Add()([x, y])
    outputs = keras.layers.Conv2D(4, 1)(x)
    model = keras.Model(inputs, outputs)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 2.0, channels))
            layer.beta.assign(rng.normal(0.0, 0.5, channels))
            layer.moving_mean.assign(rng.normal(0.0, 0.3, channels))
            layer.moving_variance.assign(rng.uniform(0.2, 3.0, channels))
    return model


def images(count=8, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (count, 16, 16, 3)).astype(np.float32)


def test_graph_run_without_rewrites_is_the_model():
    model = tiny_model()
    x = images()
    got = graph.run(model, x, training=False, rewrite=lambda m, n: None)
    np.testing.assert_allclose(got, model(x, training=False), atol=1e-6)


def test_int8_hard_swish_is_hard_swish():
    x = tf.linspace(-8.0, 8.0, 1001)
    np.testing.assert_allclose(
        int8_graph.hard_swish_unfused(x), keras.activations.hard_swish(x), atol=1e-6
    )
    model = tiny_model()
    np.testing.assert_allclose(
        int8_graph.int8_inference(model, images()), model(images(), training=False), atol=1e-5
    )


def test_simulation_is_the_float_model_up_to_quantization_noise():
    model = tiny_model()
    simulator = qat.QuantizationSimulator(ema_decay=0.5).build(model, (16, 16))
    x = images()
    for _ in range(4):
        simulator.forward(model, x, training=True)
    want = model(x, training=False).numpy()
    got = simulator.forward(model, x).numpy()
    # Folded BN and quantized tensors: off by a few of the output's 256 levels at most.
    low, high = simulator.range_values()[f"{model.name}/{model.layers[-1].name}"]
    step = (high - low) / 255
    assert np.abs(got - want).max() < 6 * step
    assert np.abs(got - want).mean() < step
    # The gate is simulated as the int8 graph computes it (ADD with ReLU6, then MUL).
    assert sum(key.endswith("/relu6") for key in simulator.range_values()) == 2
    # Every tensor was observed: each range covers some values.
    assert all(high > low for low, high in simulator.range_values().values())


def test_quantization_aware_tflite_computes_what_training_simulated(tmp_path):
    """The converted graph takes the learned ranges as they are: its int8 output is the
    simulator's output to within a couple of quantization steps (rounding order only)."""
    model = tiny_model()
    simulator = qat.QuantizationSimulator(ema_decay=0.5).build(model, (16, 16))
    x = images()
    for _ in range(4):
        simulator.forward(model, x, training=True)
    archive = tflite_graph_archive(
        lambda i: {"logits": simulator.forward(model, i)}, model, (16, 16), track=(simulator,)
    )
    archive.write_out(str(tmp_path), verbose=False)
    # What make_converter reads of a task export: a segmenter's.
    export = types.SimpleNamespace(allow_custom_ops=False, int8_output_type=tf.uint8)
    converter = tflite.make_converter(str(tmp_path), export, "int8", None, True)
    interpreter = Interpreter(model_content=converter.convert())
    runner = interpreter.get_signature_runner("serving_default")
    out = runner.get_output_details()["logits"]
    assert runner.get_input_details()["images"]["dtype"] == np.uint8
    assert out["dtype"] == np.uint8
    scale, zero_point = out["quantization"]
    low, high = simulator.range_values()[f"{model.name}/{model.layers[-1].name}"]
    assert scale == pytest.approx((high - low) / 255, rel=1e-3)  # the learned range, as is
    want = simulator.forward(model, x).numpy()
    for i in range(len(x)):
        got = runner(images=x[i : i + 1].astype(np.uint8))["logits"].astype(np.float32)
        got = (got - zero_point) * scale
        assert np.abs(got - want[i : i + 1]).max() <= 3 * scale


def test_restore_for_export_uses_ranges_only_after_the_delay(tmp_path):
    model = tiny_model()
    simulator = qat.QuantizationSimulator(ema_decay=0.5).build(model, (16, 16))
    simulator.forward(model, images(), training=True)
    path = tf.train.Checkpoint(
        model=model, quantization=simulator, step=tf.Variable(20, dtype=tf.int64)
    ).write(str(tmp_path / "ckpt"))
    config = ssdlite_mobilenet_edgetpu_320_coco.get_config("quant")
    config.train.quantization.delay = 10
    restored = qat.restore_for_export(config, model, path, input_size=(16, 16))
    assert restored.range_values() == simulator.range_values()
    config.train.quantization.delay = 20  # the checkpoint is from before QAT started
    assert qat.restore_for_export(config, model, path, input_size=(16, 16)) is None
    config.train.quantization.enabled = False
    assert qat.restore_for_export(config, model, path, input_size=(16, 16)) is None


def test_edgetpu_quant_variant_has_the_zoo_settings():
    float_config = ssdlite_mobilenet_edgetpu_320_coco.get_config("coco14")
    assert not float_config.train.quantization.enabled
    config = ssdlite_mobilenet_edgetpu_320_coco.get_config("coco14,quant")
    q = config.train.quantization
    assert (q.enabled, q.delay) == (True, 30_000)
    rest, float_rest = config.to_dict(), float_config.to_dict()
    rest["train"].pop("quantization"), float_rest["train"].pop("quantization")
    assert rest == float_rest  # otherwise the float recipe, as in the zoo
    smoke = ssdlite_mobilenet_edgetpu_320_coco.get_config("smoke,quant")
    assert 0 < smoke.train.quantization.delay < smoke.train.total_steps
    doc = ssdlite_mobilenet_edgetpu_320_coco.__doc__
    assert "24.3" in doc and "`:quant` only" in doc


@pytest.mark.parametrize(
    "key, value",
    [("delay", -1), ("ema_decay", 1.0)],
)
def test_bad_quantization_settings_name_the_key(key, value):
    config = ssdlite_mobilenet_edgetpu_320_coco.get_config("quant")
    config.train.quantization[key] = value
    (problem,) = config_problems(config)
    assert f"train.quantization.{key}" in problem
