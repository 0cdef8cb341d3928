"""Parameter and multiply-add counts for any of our Keras models at any input size.

MAdds follow the MobileNet papers' convention: multiply-adds of convolutions (regular, grouped,
depthwise) and fully connected layers; batch norm (folded at inference), activations, pooling,
and element-wise ops are not counted. Bilinear resizing counts 4 multiply-adds per output value
(the weighted sum of four neighbours): with it our LR-ASPP counts land within 2% of all four of
the paper's Table 7-8 figures (without it, 4-9% short), so the paper evidently counts its
upsampling. A layer can state its own cost with a `madds(input_shape, output_shape)` method. Shapes come from a symbolic pass at the requested
size, so the same model built for (None, None, 3) inputs can be counted at 224 or at 1024x2048.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers

from ondevice_vision import keras_private


def count_params(model: keras.Model) -> dict:
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return {"params": int(model.count_params()), "trainable_params": trainable}


def _layer_madds(layer, inputs, output) -> int:
    out_shape = output.shape
    if hasattr(layer, "madds"):
        return int(layer.madds(inputs.shape, out_shape))
    if isinstance(layer, layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return math.prod(out_shape[1:]) * kh * kw
    if isinstance(layer, layers.SeparableConv2D):
        kh, kw = layer.kernel_size
        in_ch = inputs.shape[-1]
        depthwise = math.prod(out_shape[1:3]) * in_ch * layer.depth_multiplier * kh * kw
        pointwise = math.prod(out_shape[1:]) * in_ch * layer.depth_multiplier
        return depthwise + pointwise
    if isinstance(layer, layers.Conv2D):
        kh, kw = layer.kernel_size
        in_ch = inputs.shape[-1]
        return math.prod(out_shape[1:]) * kh * kw * in_ch // layer.groups
    if isinstance(layer, layers.Dense):
        return math.prod(out_shape[1:]) * inputs.shape[-1]
    return 0


def _first_tensor(args):
    for a in keras.tree.flatten(args):
        if isinstance(a, keras.KerasTensor):
            return a
    return None


def _trace(model, inputs, records):
    """Runs the functional graph symbolically, recording (layer, input, output) for every call."""

    def operation_fn(op):
        def call(*args, **kwargs):
            if keras_private.is_functional(op):
                flat = _flatten_model_inputs(op, args)
                return _trace(op, flat, records)
            out = op.compute_output_spec(*args, **kwargs)
            tensor_out = _first_tensor(out)
            records.append((op, _first_tensor((args, kwargs)), tensor_out))
            return out

        return call

    return keras_private.run_through_graph(model, inputs, operation_fn)


def _flatten_model_inputs(model, args):
    flat = keras.tree.flatten(args)
    return flat[0] if len(model.inputs) == 1 else flat


def count_madds(model: keras.Model, input_size) -> int:
    """Multiply-adds of one image of `input_size` (int or (height, width))."""
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    if not keras_private.is_functional(model):
        raise TypeError(f"count_madds needs a functional Keras model, got {type(model).__name__}")
    channels = model.inputs[0].shape[-1]
    spec = keras.KerasTensor((1, *input_size, channels), dtype="float32")
    records = []
    _trace(model, spec, records)
    return int(sum(_layer_madds(layer, x, y) for layer, x, y in records if y is not None))


def endpoint_shapes(model: keras.Model, input_size) -> dict:
    """Output names -> shapes (batch dimension dropped) at `input_size`."""
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    channels = model.inputs[0].shape[-1]
    spec = keras.KerasTensor((1, *input_size, channels), dtype="float32")
    out = model.compute_output_spec(spec)
    if isinstance(out, dict):
        return {k: list(v.shape[1:]) for k, v in out.items()}
    flat = keras.tree.flatten(out)
    return {f"output_{i}": list(t.shape[1:]) for i, t in enumerate(flat)}
