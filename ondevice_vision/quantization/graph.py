"""Runs a Keras functional model layer by layer with some layers' computation replaced.

The int8 export and quantization-aware training both need the model's own layers and variables
computed in a slightly different way (hard-swish written so the int8 converter keeps it off its
slow reference kernel; fake quantization where the converter will quantize). Cloning the model
would duplicate the variables and break checkpoints, so instead the functional graph is walked
here, node by node in Keras' own order, and each node is handed to a `rewrite` function that may
return a replacement callable. Nested functional models (our backbones) are walked recursively.
"""

from __future__ import annotations

import keras
from keras import tree

from ondevice_vision import keras_private
from ondevice_vision.keras_private import is_functional
from ondevice_vision.keras_private import producing_operation as producer

__all__ = ["consumers", "is_functional", "producer", "run"]


def consumers(model) -> dict:
    """id(symbolic tensor) -> the operations of `model`'s graph that take it as an input."""
    result = {}
    for nodes in keras_private.nodes_by_depth(model).values():
        for node in nodes:
            if node.operation is None or node.is_input:
                continue
            for tensor in node.input_tensors:
                result.setdefault(id(tensor), []).append(node.operation)
    return result


def run(model, inputs, training: bool, rewrite):
    """`model(inputs, training=...)` with `rewrite(model, node)` -> callable or None per node.

    A callable returned by `rewrite` is called with the node's computed arguments instead of the
    node's operation (it takes `training` only where the operation did). Nested functional models
    are run through `run` with the same `rewrite`.
    """
    values = {}
    for symbolic, value in zip(model.inputs, tree.flatten(inputs), strict=True):
        values[id(symbolic)] = value
    by_depth = keras_private.nodes_by_depth(model)
    for depth in sorted(by_depth, reverse=True):
        for node in by_depth[depth]:
            operation = node.operation
            if operation is None or node.is_input:
                continue
            if any(id(x) not in values for x in node.input_tensors):
                continue  # a branch the model's outputs do not need
            args, kwargs = node.arguments.fill_in(values)
            replacement = rewrite(model, node)
            if replacement is not None:
                outputs = replacement(*args, **kwargs)
            elif is_functional(operation):
                (image,) = args
                outputs = run(operation, image, training, rewrite)
            elif isinstance(operation, keras.layers.Layer):
                outputs = operation(*args, training=training, **kwargs)
            else:
                outputs = operation(*args, **kwargs)
            for symbolic, value in zip(node.outputs, tree.flatten(outputs), strict=True):
                values[id(symbolic)] = value
    flat = [values[id(x)] for x in model.outputs]
    return keras_private.pack_outputs(model, flat)
