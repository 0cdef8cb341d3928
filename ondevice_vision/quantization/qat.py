"""Quantization-aware training: the model computed as the int8 TFLite converter will quantize it.

`train.quantization` (the Object Detection API's `graph_rewriter { quantization { delay,
weight_bits, activation_bits } }`; the bit widths are always 8 here, the int8 TFLite export's):
from step `delay` on, every training step runs the model through
`QuantizationSimulator.forward`, which walks the model's own functional graph (`graph.run`, same
layers and variables, so checkpoints keep their layout) and simulates what the converter does to
it:

- Convolutions followed by batch norm are folded the way the converter folds them (kernel times
  gamma / sqrt(moving_variance + eps), bias beta - moving_mean * that factor), from `delay` on
  with the moving statistics frozen (they are what the exported model uses). The folded kernel is
  fake-quantized per output channel, symmetric, [-127, 127] (the converter's int8 weights).
- Every tensor the converter materialises as int8 is fake-quantized per tensor, asymmetric,
  256 levels, with a range that is an exponential moving average of the batch min / max (TF1
  `contrib.quantize`'s rule; decay `ema_decay`). Not quantized apart: a conv output that a ReLU /
  ReLU6 alone consumes (the converter fuses the two), reshapes and resizes (they keep their
  input's scale), and predictor outputs that only feed the concatenation (which imposes one scale
  on all its inputs). Sigmoid outputs use the fixed int8 LOGISTIC range, 1/256 steps from 0.
- hard-swish and hard-sigmoid are computed as the int8 graph computes them (ADD with ReLU6, MUL
  by 1/6, MUL), each intermediate quantized.

Gradients pass the fake quantization straight through (zero outside the range), as TensorFlow's
`fake_quant_with_min_max_vars` defines them. The same forward pass, with training off, is what
`ondevice-export --quantization=int8` converts for a quantization-aware checkpoint: the graph
then holds FakeQuant ops with the learned ranges, which the converter uses instead of
calibrating. tensorflow-model-optimization is not used: it supports only tf.keras 2 models
(docs/export_speed.md).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from absl import logging

from ondevice_vision import keras_private
from ondevice_vision.models import lraspp_decoder as decoder
from ondevice_vision.quantization import graph

NUM_BITS = 8
# TFLite's int8 LOGISTIC output: scale 1/256, zero point -128 (values 0 .. 255/256).
SIGMOID_RANGE = (0.0, 255.0 / 256.0)
# The uint8 model input: pixels 0..255, scale 1.
INPUT_RANGE = (0.0, 255.0)
_CONVS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
_PASSTHROUGH = (
    keras.layers.Reshape,
    keras.layers.Flatten,
    keras.layers.Dropout,
    decoder.ResizeToMatch,
)


def enabled(config) -> bool:
    settings = config.train.get("quantization")
    return bool(settings is not None and settings.get("enabled"))


def fake_quant_weights(kernel, depthwise: bool):
    """Per output channel, symmetric, narrow range: how the converter stores int8 conv weights."""
    shape = tf.shape(kernel)
    flat = tf.reshape(kernel, tf.concat([shape[:2], [-1]], 0)) if depthwise else kernel
    axes = list(range(len(flat.shape) - 1))
    bound = tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(flat), axis=axes), 1e-12))
    quantized = tf.quantization.fake_quant_with_min_max_vars_per_channel(
        flat, -bound, bound, num_bits=NUM_BITS, narrow_range=True
    )
    return tf.reshape(quantized, shape) if depthwise else quantized


def fake_quant_fixed(x, value_range):
    return tf.quantization.fake_quant_with_min_max_args(
        x, min=value_range[0], max=value_range[1], num_bits=NUM_BITS
    )


def _is_relu(operation) -> bool:
    if isinstance(operation, keras.layers.ReLU):
        return float(operation.negative_slope) == 0.0 and float(operation.threshold) == 0.0
    return isinstance(operation, keras.layers.Activation) and operation.activation in (
        keras.activations.relu,
        keras.activations.relu6,
    )


class _Plan:
    """Per functional model: which convs fold into their BN, and which outputs need no range."""

    def __init__(self, model):
        users = graph.consumers(model)
        self.deferred = set()  # id(conv node): computed by the BN that follows it
        self.folded = {}  # id(bn node) -> conv layer
        self.no_range = set()  # id(node) whose output is not quantized apart
        by_depth = keras_private.nodes_by_depth(model)
        nodes = [n for ns in by_depth.values() for n in ns if not n.is_input]
        for node in nodes:
            op = node.operation
            if isinstance(op, keras.layers.BatchNormalization):
                (x,) = node.input_tensors
                conv = graph.producer(x)
                if isinstance(conv, _CONVS) and len(users.get(id(x), [])) == 1:
                    self.folded[id(node)] = conv
                    self.deferred.add(id(keras_private.producing_node(x)))
        for node in nodes:
            (out,) = node.outputs if len(node.outputs) == 1 else (None,)
            if out is None:
                continue
            following = users.get(id(out), [])
            fusable = isinstance(node.operation, (*_CONVS, keras.layers.BatchNormalization))
            if fusable and len(following) == 1 and _is_relu(following[0]):
                self.no_range.add(id(node))
            # conv -> reshape -> concatenate: the concatenation's one scale applies back.
            if (
                len(following) == 1
                and isinstance(following[0], (keras.layers.Reshape, keras.layers.Flatten))
                and self._only_feeds_concat(following[0], users)
            ):
                self.no_range.add(id(node))

    @staticmethod
    def _only_feeds_concat(reshape, users) -> bool:
        (node,) = keras_private.inbound_nodes(reshape)
        (out,) = node.outputs
        following = users.get(id(out), [])
        return len(following) == 1 and isinstance(following[0], keras.layers.Concatenate)


class QuantizationSimulator(tf.Module):
    """The activation ranges (checkpointed as `quantization`) and the fake-quantized forward."""

    def __init__(self, ema_decay: float = 0.999, name: str = "quantization"):
        super().__init__(name=name)
        self.ema_decay = float(ema_decay)
        self.ranges = {}
        self._plans = {}
        self._training = False

    # ------------------------------------------------------------------ ranges
    def _range(self, key: str):
        if key not in self.ranges:
            self.ranges[key] = tf.Variable(
                [0.0, 0.0],
                trainable=False,
                aggregation=tf.VariableAggregation.MEAN,
                name="range",
            )
        return self.ranges[key]

    def quantize(self, key: str, x):
        """Fake-quantizes x with the EMA range `key` (updated first when training)."""
        variable = self._range(key)
        x = tf.cast(x, tf.float32)
        if self._training:
            batch = tf.stack(
                [
                    tf.minimum(tf.reduce_min(tf.stop_gradient(x)), 0.0),
                    tf.maximum(tf.reduce_max(tf.stop_gradient(x)), 0.0),
                ]
            )
            seen = variable[1] > variable[0]
            ema = self.ema_decay * variable + (1.0 - self.ema_decay) * batch
            variable.assign(tf.where(seen, ema, batch))
        low, high = tf.unstack(variable.read_value())
        return tf.quantization.fake_quant_with_min_max_vars(x, low, high, num_bits=NUM_BITS)

    def range_values(self) -> dict:
        return {k: tuple(float(x) for x in v.numpy()) for k, v in self.ranges.items()}

    # ------------------------------------------------------------------ forward
    def forward(self, model, images, training: bool = False):
        """The model's outputs with int8 simulated; `training` updates the ranges.

        Batch norm always uses its moving statistics here (folded into the convolutions).
        """
        self._training = bool(training)
        try:
            images = fake_quant_fixed(tf.cast(images, tf.float32), INPUT_RANGE)
            return graph.run(model, images, training=False, rewrite=self._rewrite)
        finally:
            self._training = False

    def build(self, model, input_size=(128, 128)):
        """Creates every range variable (before a checkpoint restore or a tf.function trace)."""
        self.forward(model, tf.zeros([1, *input_size, 3]), training=False)
        return self

    def _plan(self, model):
        if id(model) not in self._plans:
            self._plans[id(model)] = _Plan(model)
        return self._plans[id(model)]

    def _rewrite(self, model, node):
        plan = self._plan(model)
        op = node.operation
        key = f"{model.name}/{op.name}"
        if graph.is_functional(op):
            return None  # walked by graph.run, with this rewrite
        if id(node) in plan.deferred:
            return lambda x, **kwargs: x  # the BN node computes this conv, folded
        keep = id(node) in plan.no_range

        def out(y):
            return y if keep else self.quantize(key, y)

        if id(node) in plan.folded:
            conv = plan.folded[id(node)]
            return lambda x, **kwargs: out(self._folded_conv(conv, op, x))
        if isinstance(op, _CONVS):
            return lambda x, **kwargs: out(self._folded_conv(op, None, x))
        if isinstance(op, _PASSTHROUGH):
            return lambda *args, **kwargs: op(*args, training=False, **kwargs)
        if isinstance(op, keras.layers.Rescaling):
            return lambda x, **kwargs: self.quantize(
                key, self.quantize(key + "/scale", x * op.scale) + op.offset
            )
        if isinstance(op, keras.layers.Activation):
            return self._activation(op, key)
        if hasattr(op, "simulate_int8"):
            # Our custom layers say themselves how int8 TFLite computes them.
            def quantize(suffix, y):
                return self.quantize(key + suffix, y)

            return lambda x, **kwargs: op.simulate_int8(x, quantize)
        # ReLU, Add, Multiply, Concatenate, pooling, BN without a conv: the layer, then its range.
        return lambda *args, **kwargs: out(op(*args, training=False, **kwargs))

    def _activation(self, op, key):
        fn = op.activation
        if fn is keras.activations.hard_swish:

            def hard_swish(x, **kwargs):
                return self.quantize(key, x * self._hard_sigmoid(key, x))

            return hard_swish
        if fn is keras.activations.hard_sigmoid:
            return lambda x, **kwargs: self._hard_sigmoid(key, x)
        if fn is keras.activations.sigmoid:
            return lambda x, **kwargs: fake_quant_fixed(tf.sigmoid(x), SIGMOID_RANGE)
        return lambda x, **kwargs: self.quantize(key, fn(x))

    def _hard_sigmoid(self, key, x, scale=1.0 / 6.0):
        # ADD (+3, ReLU6 fused), then MUL by the scale: two int8 tensors.
        shifted = self.quantize(key + "/relu6", tf.nn.relu6(x + 3.0))
        return self.quantize(key + "/hard_sigmoid", shifted * scale)

    @staticmethod
    def _folded_conv(conv, bn, x):
        depthwise = isinstance(conv, keras.layers.DepthwiseConv2D)
        kernel = tf.cast(conv.kernel, tf.float32)
        channels = kernel.shape[-1] * (kernel.shape[-2] if depthwise else 1)
        bias = tf.cast(conv.bias, tf.float32) if conv.use_bias else tf.zeros([channels])
        if bn is not None:
            factor = tf.math.rsqrt(tf.cast(bn.moving_variance, tf.float32) + bn.epsilon)
            if bn.scale:
                factor *= tf.cast(bn.gamma, tf.float32)
            beta = tf.cast(bn.beta, tf.float32) if bn.center else 0.0
            shift = beta - tf.cast(bn.moving_mean, tf.float32) * factor
            if depthwise:
                kernel = kernel * tf.reshape(factor, kernel.shape[-2:])
            else:
                kernel = kernel * factor
            bias = bias * factor + shift
        kernel = fake_quant_weights(kernel, depthwise)
        strides = (1, *conv.strides, 1)
        padding = conv.padding.upper()
        x = tf.cast(x, tf.float32)
        if depthwise:
            y = tf.nn.depthwise_conv2d(
                x, kernel, strides, padding, dilations=tuple(conv.dilation_rate)
            )
        else:
            y = tf.nn.conv2d(x, kernel, strides, padding, dilations=tuple(conv.dilation_rate))
        y = tf.nn.bias_add(y, bias)
        return conv.activation(y) if conv.activation is not keras.activations.linear else y


def for_training(config, model):
    """A built simulator when `train.quantization.enabled`, else None."""
    if not enabled(config):
        return None
    settings = config.train.quantization  # ranges checked by configs/checks.py
    simulator = QuantizationSimulator(settings.ema_decay).build(model)
    logging.info(
        "Quantization-aware training from step %d on (%d fake-quantized tensors)",
        int(settings.delay),
        len(simulator.ranges),
    )
    return simulator


def training_forward(simulator, config, model, images, step):
    """The train step's forward pass: float before `delay`, simulated int8 from it on."""
    if simulator is None:
        return model(images, training=True)
    delay = int(config.train.quantization.delay)
    if delay == 0:
        return simulator.forward(model, images, training=True)
    return tf.cond(
        step >= delay,
        lambda: simulator.forward(model, images, training=True),
        lambda: model(images, training=True),
    )


def _saved_step(path: str) -> int | None:
    try:
        return int(tf.train.load_variable(path, "step/.ATTRIBUTES/VARIABLE_VALUE"))
    except (tf.errors.NotFoundError, ValueError):
        return None


def restore_for_export(config, model, path: str, input_size=(128, 128)):
    """The learned ranges of a quantization-aware checkpoint, or None (then int8 calibrates).

    None too when the checkpoint predates `delay` (its ranges were never trained).
    """
    if not enabled(config):
        return None
    names = {name for name, _ in tf.train.list_variables(path)}
    if not any(name.startswith("quantization/") for name in names):
        logging.warning("%s has no quantization ranges: int8 export calibrates instead", path)
        return None
    step, delay = _saved_step(path), int(config.train.quantization.delay)
    if step is not None and step <= delay:
        logging.warning(
            "%s is from step %d, before quantization-aware training starts (delay %d): int8 "
            "export calibrates instead",
            path,
            step,
            delay,
        )
        return None
    simulator = QuantizationSimulator(config.train.quantization.ema_decay)
    simulator.build(model, input_size)
    checkpoint = tf.train.Checkpoint(quantization=simulator)
    checkpoint.read(path).expect_partial().assert_existing_objects_matched()
    logging.info("int8 export uses the %d learned ranges of %s", len(simulator.ranges), path)
    return simulator
