"""Makes the loss NaN at one global step, from outside the product: the tests' NaN fault.

`install(step)` wraps the losses of every `Trainer` built afterwards: at global step `step` (the
step the update would make) each loss term, and so every gradient, is NaN. `command(...)` is
`train_cli.command` for a subprocess run with the wrap installed.
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


def command(nan_at_step: int, cli_command: list[str]) -> list[str]:
    """`[python, -m, ondevice_vision.train.main, args...]` -> the same run with the NaN."""
    python, dash_m, module, *args = cli_command
    assert (dash_m, module) == ("-m", "ondevice_vision.train.main"), cli_command
    # `python -c` puts the working directory (the repository root, train_cli.ROOT) on sys.path.
    code = (
        "from tests.helpers import nan_injection\n"
        f"nan_injection.install({int(nan_at_step)})\n"
        "from ondevice_vision.train import main\n"
        "main.run()\n"
    )
    return [python, "-c", code, *args]
