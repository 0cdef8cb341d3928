"""TensorFlow's graph optimizer (Grappler) off for the tests: in the test processes
(tests/conftest.py) and in the training runs they start (`train_cli.command`).

Grappler rewrites each traced graph for speed (layout, op fusion, constant folding): 10-15 s of
CPU per traced training loop of the smoke detector on a 2-core machine, which the few steps a
test runs never win back. The graphs compute the same functions, so every assertion holds as
before; the product keeps TensorFlow's defaults.
"""

from __future__ import annotations


def disable() -> None:
    import tensorflow as tf

    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})


# `python -c` preamble for a subprocess (the working directory, the repository root, is on
# sys.path there).
PREAMBLE = "from tests.helpers import quick_graphs\nquick_graphs.disable()\n"
