"""Makes the loss NaN at one global step, from outside the product: the tests' NaN fault.

`install(step)` wraps the losses of every `Trainer` built afterwards: at global step `step` (the
step the update would make) each loss term, and so every gradient, is NaN. `preamble(step)`
installs it in a `train_cli.command` subprocess.
"""

from __future__ import annotations

import tensorflow as tf

from ondevice_vision.train import trainer as trainer_lib


class _PoisonedTask:
    """The task with `compute_losses` multiplied by NaN at one step."""

    def __init__(self, task, step_variable, nan_at_step: int):
        self._task, self._step, self._at = task, step_variable, nan_at_step

    def __getattr__(self, name):
        return getattr(self._task, name)

    def compute_losses(self, config, outputs, labels):
        sums, normaliser = self._task.compute_losses(config, outputs, labels)
        factor = tf.where(tf.equal(self._step + 1, self._at), float("nan"), 1.0)
        return {k: v * factor for k, v in sums.items()}, normaliser


def install(nan_at_step: int) -> None:
    original = trainer_lib.Trainer.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.task = _PoisonedTask(self.task, self.step, nan_at_step)

    trainer_lib.Trainer.__init__ = init


def preamble(nan_at_step: int) -> str:
    """`python -c` lines that install the NaN in a subprocess (train_cli.command)."""
    return f"from tests.helpers import nan_injection\nnan_injection.install({int(nan_at_step)})\n"
