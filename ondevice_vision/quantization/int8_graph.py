"""The model's inference graph as it should reach the int8 TFLite converter.

Measured on LiteRT 2.3 (docs/export_speed.md): the converter fuses `x * relu6(x + 3) / 6` into
one HARD_SWISH op, and the XNNPACK delegate takes HARD_SWISH in float only; int8 HARD_SWISH runs
on TFLite's reference kernel, which took 46% of the int8 SSDLite-V3-Large time and split the graph
into 22 delegate partitions. Written as below, the converter keeps an ADD (with the ReLU6 fused)
and MULs, which XNNPACK runs as int8 (the float export keeps HARD_SWISH, which XNNPACK runs well).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from ondevice_vision.quantization import graph


def hard_swish_unfused(x):
    """hard_swish(x) in the one operand order the TFLite converter does not fuse to HARD_SWISH."""
    return tf.nn.relu6(x + 3.0) * x * (1.0 / 6.0)


def is_hard_swish(operation) -> bool:
    return (
        isinstance(operation, keras.layers.Activation)
        and operation.activation is keras.activations.hard_swish
    )


def _rewrite(model, node):
    del model
    if is_hard_swish(node.operation):
        return lambda x, **kwargs: hard_swish_unfused(x)
    return None


def int8_inference(model, images):
    """model(images, training=False) with every hard-swish written as `hard_swish_unfused`."""
    return graph.run(model, images, training=False, rewrite=_rewrite)
