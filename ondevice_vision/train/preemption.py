"""Preemption: SIGTERM / SIGINT make the trainer checkpoint and stop within a step or two.

A scheduler's preemption notice (SIGTERM, often 30 s of grace) or a Ctrl-C sets a flag that the
compiled train loop reads before every step, so the stop lands at the next step boundary however
many steps one `tf.function` call runs (`train.steps_per_loop`); all workers agree on the step, the
chief checkpoints and every process exits with status 0. Python runs signal handlers only between
bytecodes, so the loop call runs in a helper thread (`run_interruptible`) while the main thread
waits in short joins and stays responsive. A second Ctrl-C interrupts at once (the last
checkpoint stays the latest).
"""

from __future__ import annotations

import signal
import threading

from absl import logging


class Preemption:
    """SIGTERM / SIGINT set a flag; the loop checkpoints and exits at the next step boundary.

    A second Ctrl-C interrupts at once (the last checkpoint stays the latest).
    """

    def __init__(self, on_request=None):
        self.requested = False
        self._on_request = on_request
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
        if self._on_request is not None:
            self._on_request()

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def run_interruptible(fn, *args):
    """`fn(*args)` in a helper thread; the calling (main) thread keeps handling signals."""
    result = {}

    def target():
        try:
            result["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
            result["error"] = e

    thread = threading.Thread(target=target, name="train_loop", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.05)
    if "error" in result:
        raise result["error"]
    return result["value"]
