"""Makes the TF1 Object Detection API and slim importable under this project's TensorFlow.

Test-only. Run inside a subprocess of its own (see harness.py): it switches TensorFlow to graph
mode and legacy Keras, which must never leak into the test process.
"""

import importlib
import importlib.abc
import importlib.machinery
import os
import sys
import types

os.environ["TF_USE_LEGACY_KERAS"] = "1"


def install():
    import numpy as np

    # NumPy 2 removed the alias that slim's mobilenet_v3.py still uses.
    if not hasattr(np, "int"):
        setattr(np, "int", int)  # noqa: B010  (np.int would be rewritten by ruff NPY001)

    import tensorflow as tf
    from tensorflow.python.framework import ops, tensor

    # The OD API and tf-slim check isinstance(x, ops.Tensor); the class moved.
    if not hasattr(ops, "Tensor"):
        ops.Tensor = tensor.Tensor

    import tf_keras
    import tf_keras.src.legacy_tf_layers as legacy_tf_layers

    sys.modules.setdefault("tf_keras.legacy_tf_layers", legacy_tf_layers)
    tf_keras.legacy_tf_layers = legacy_tf_layers

    # Imported at module level by files the SSD models never call into.
    sys.meta_path.insert(0, _StubFinder())

    tf.compat.v1.disable_v2_behavior()
    return tf


_STUBBED = ("official", "tensorflow_io", "lvis", "tensorflow.contrib")


class _Stub(types.ModuleType):
    """Every attribute is another stub: enough for `from x.y import z` at import time, while any
    real use fails loudly because a stub is not callable."""

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _stub(f"{self.__name__}.{attr}")


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if any(fullname == root or fullname.startswith(root + ".") for root in _STUBBED):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return _Stub(spec.name)

    def exec_module(self, module):
        module.__path__ = []


def _stub(name):
    if name not in sys.modules:
        importlib.import_module(name)
    return sys.modules[name]
