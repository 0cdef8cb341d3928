"""Console progress for long runs (training, evaluation, calibration): rates and ETA."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


def format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class Progress:
    """Throughput between reports and the ETA from it.

    The first interval after a (re)start includes tf.function tracing, so it is reported but kept
    out of the smoothed rate behind the ETA (which reads "?" until a second report).
    """

    def __init__(
        self,
        total_steps: int,
        global_batch_size: int,
        start_step: int,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.total_steps = total_steps
        self.batch = global_batch_size
        self.clock = clock
        self.last_step = start_step
        self.last_time = clock()
        self.intervals = 0
        self.rate = None  # steps per second, smoothed

    def update(self, step: int) -> dict:
        now = self.clock()
        steps = step - self.last_step
        elapsed = max(now - self.last_time, 1e-9)
        current = steps / elapsed if steps > 0 else 0.0
        self.intervals += 1
        if self.intervals > 1 and steps > 0:
            self.rate = current if self.rate is None else 0.7 * self.rate + 0.3 * current
        self.last_step, self.last_time = step, now
        remaining = (self.total_steps - step) / self.rate if self.rate else math.inf
        return {
            "steps_per_sec": current,
            "images_per_sec": current * self.batch,
            "eta_seconds": remaining,
        }

    def line(self, step: int, scalars: dict, speed: dict) -> str:
        """`step 200/1500 | loss 1.2345 (cls_loss ... ) | lr 0.00300 | 3.1 steps/s ... | ETA 7m00s`."""
        losses = " ".join(
            f"{k} {v:.4f}" for k, v in scalars.items() if k not in ("loss", "lr", "grad_norm")
        )
        eta = speed["eta_seconds"]
        eta_text = format_duration(eta) if math.isfinite(eta) else "?"
        width = len(str(self.total_steps))
        extra = f" | grad_norm {scalars['grad_norm']:.3g}" if "grad_norm" in scalars else ""
        return (
            f"step {step:>{width}}/{self.total_steps} | loss {scalars['loss']:.4f} ({losses}) | "
            f"lr {scalars['lr']:.5f}{extra} | {speed['steps_per_sec']:.2f} steps/s "
            f"{speed['images_per_sec']:.1f} img/s | ETA {eta_text}"
        )
