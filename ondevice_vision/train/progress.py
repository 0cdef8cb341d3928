"""Console progress for long runs: step, losses, learning rate, steps/s, images/s and ETA."""

from __future__ import annotations

import time


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
    """Measures throughput between reports; the first interval (tracing) is excluded from ETA."""

    def __init__(self, total_steps: int, global_batch_size: int, start_step: int):
        self.total_steps = total_steps
        self.batch = global_batch_size
        self.last_step = start_step
        self.last_time = time.perf_counter()
        self.rate = None  # steps per second, smoothed

    def update(self, step: int) -> dict:
        now = time.perf_counter()
        steps = step - self.last_step
        elapsed = max(now - self.last_time, 1e-9)
        current = steps / elapsed if steps > 0 else 0.0
        self.rate = current if self.rate is None else 0.7 * self.rate + 0.3 * current
        self.last_step, self.last_time = step, now
        remaining = (self.total_steps - step) / self.rate if self.rate else float("inf")
        return {
            "steps_per_sec": current,
            "images_per_sec": current * self.batch,
            "eta_seconds": remaining,
        }

    def line(self, step: int, scalars: dict, speed: dict) -> str:
        losses = " ".join(f"{k} {v:.4f}" for k, v in scalars.items() if k not in ("loss", "lr"))
        eta = speed["eta_seconds"]
        eta_text = format_duration(eta) if eta != float("inf") else "?"
        width = len(str(self.total_steps))
        return (
            f"step {step:>{width}}/{self.total_steps} | loss {scalars['loss']:.4f} ({losses}) | "
            f"lr {scalars['lr']:.5f} | {speed['steps_per_sec']:.2f} steps/s "
            f"{speed['images_per_sec']:.1f} img/s | ETA {eta_text}"
        )
