"""Preemption: SIGTERM / SIGINT ask the trainer to checkpoint and stop at the next step boundary.

A scheduler's preemption notice (SIGTERM) or a Ctrl-C sets a flag; the trainer checks it between
train-loop calls, all workers agree on the step, the chief checkpoints and every process exits
with status 0. A second Ctrl-C interrupts at once (the last checkpoint stays the latest).
"""

from __future__ import annotations

import signal

from absl import logging


class Preemption:
    """SIGTERM / SIGINT set a flag; the loop checkpoints and exits at the next step boundary.

    A second Ctrl-C interrupts at once (the last checkpoint stays the latest).
    """

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        del frame
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the checkpoint
        logging.warning("Signal %d received: checkpointing and stopping.", signum)
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
