"""Every private Keras API the package uses, in one place (tests/test_keras_private.py checks each
one against the installed Keras, so an upgrade that changes them fails loudly there, not deep in
an export or a training run).

Why each is needed:
- A functional model's graph, walked node by node without cloning (cloning would duplicate the
  variables and break checkpoints): `_nodes_by_depth`, `_keras_history` (which node made a
  tensor), `_inbound_nodes` (the nodes that call a layer), `_outputs_struct` (the nesting of the
  outputs), `_run_through_graph` (a model's own graph walk, with a hook per operation).
- `_all_reduce_sum_gradients`: the step Keras' optimizers take inside `apply()` to sum gradients
  over replicas; our train step sums them itself, before clipping and the finite check
  (train/optimizer.py), so the optimizer's own sum is skipped by overriding it.
- `_momentums`, `_velocities`, `_get_variable_index`: where Keras' Adam keeps a variable's two
  moment estimates; our Adam (train/optimizer.py) runs Keras' update arithmetic with the step's
  scalars shared between variables, and so reads them as Keras' `update_step` does.
"""

from __future__ import annotations

import keras


def is_functional(operation) -> bool:
    """A functional model (one with a graph of nodes to walk)."""
    return isinstance(operation, keras.Model) and hasattr(operation, "_nodes_by_depth")


def nodes_by_depth(model) -> dict:
    """depth -> the nodes of a functional model at that depth (0: the outputs' nodes)."""
    return model._nodes_by_depth


def producing_operation(tensor):
    """The operation that made a symbolic Keras tensor (None for a model input)."""
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else history.operation


def producing_node(tensor):
    """The node (a call of its operation) that made a symbolic Keras tensor."""
    history = tensor._keras_history
    return history.operation._inbound_nodes[history.node_index]


def inbound_nodes(layer) -> list:
    """The nodes of every call of `layer` in functional graphs."""
    return layer._inbound_nodes


def pack_outputs(model, flat: list):
    """Flat output values in the nesting of `model.outputs` (dict, list or single tensor)."""
    return keras.tree.pack_sequence_as(model._outputs_struct, flat)


def run_through_graph(model, inputs, operation_fn):
    """Keras' own walk of a functional model, `operation_fn(op)` -> the callable run for op."""
    return model._run_through_graph(inputs, operation_fn=operation_fn)


class SkipGradientAllReduce:
    """Optimizer mixin: `apply()` takes gradients already summed over replicas as they are."""

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return list(grads_and_vars)


def adam_moments(optimizer, variable) -> tuple:
    """(first, second) moment estimates a Keras Adam keeps for `variable`."""
    index = optimizer._get_variable_index(variable)
    return optimizer._momentums[index], optimizer._velocities[index]
