"""TensorFlow's graph optimizer (Grappler) off in the training runs the tests start as
subprocesses (`train_cli.command`).

Grappler rewrites each traced graph for speed (layout, op fusion, constant folding): 10-15 s of
CPU per traced training loop of the smoke detector on a 2-core machine, which the few steps a
test runs never win back. The graphs compute the same functions, so the assertions on these runs
(resume, faults, distributed) hold as before; the product keeps TensorFlow's defaults. Not in
the test processes themselves: there, assertions compare in-memory models with exports and
references at tolerances measured with Grappler on (an in-memory detector then differed from
its reloaded SavedModel by 1.1e-4, over the 1e-4 bound).
"""

from __future__ import annotations


def disable() -> None:
    import tensorflow as tf

    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})


# `python -c` preamble for a subprocess (the working directory, the repository root, is on
# sys.path there).
PREAMBLE = "from tests.helpers import quick_graphs\nquick_graphs.disable()\n"
