"""The best checkpoint of a run by one reported metric, and early stopping on it.

    best = BestCheckpoint.for_run(config, workdir)
    improved = best.update(metrics, step, checkpoint)   # after every evaluation
    best.stale                                          # evaluations since the last improvement

`eval.best_metric` names any number the evaluation reports (default: the task's headline, AP or
mIoU; `val_loss` with `eval.best_metric_mode="min"`). A result counts as an improvement when it
beats the best so far by more than `train.early_stopping_min_delta`. The best checkpoint is
WORKDIR/checkpoints/best/ (model weights, or their moving averages when the run keeps them; the
step; quantization ranges), with best.json beside it: {"metric", "mode", "value", "step"}. It is
written into a temporary folder and swapped in by renames (never half-written), and it is never
rotated away. The running state (best value, evaluations since) is WORKDIR/eval/best_metric.json,
so a resumed run or an `ondevice-eval --watch` job carries on counting.
"""

from __future__ import annotations

import math
import os

import tensorflow as tf
from absl import logging

from ondevice_vision import checkpoints, files, tasks

MODES = ("max", "min")
STATE_FILE = "best_metric.json"


class BestCheckpoint:
    def __init__(self, workdir: str, metric: str, mode: str = "max", min_delta: float = 0.0):
        if mode not in MODES:
            raise ValueError(f"eval.best_metric_mode must be max or min, got {mode!r}")
        self.workdir = workdir
        self.metric = metric
        self.mode = mode
        self.min_delta = float(min_delta)
        self.value: float | None = None
        self.step: int | None = None
        self.stale = 0
        self._state_path = os.path.join(workdir, "eval", STATE_FILE)
        if files.exists(self._state_path):
            state = files.read_json(self._state_path)
            if state.get("metric") == metric and state.get("mode") == mode:
                self.value, self.step = state.get("value"), state.get("step")
                self.stale = int(state.get("evaluations_since_best", 0))

    @classmethod
    def for_run(cls, config, workdir: str) -> BestCheckpoint:
        metric = config.eval.get("best_metric") or tasks.get_task(config).best_metric
        return cls(
            workdir,
            metric,
            config.eval.get("best_metric_mode") or "max",
            config.train.get("early_stopping_min_delta") or 0.0,
        )

    def value_of(self, metrics: dict) -> float:
        if self.metric not in metrics:
            numbers = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)))
            raise ValueError(
                f"eval.best_metric: the evaluation reports no {self.metric!r}; it reports "
                f"{', '.join(numbers)}"
            )
        value = metrics[self.metric]
        return math.nan if value is None else float(value)

    def improves(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.value is None:
            return True
        if self.mode == "max":
            return value > self.value + self.min_delta
        return value < self.value - self.min_delta

    def update(self, metrics: dict, step: int, checkpoint: tf.train.Checkpoint | None) -> bool:
        """Records one evaluation; writes `checkpoint` as the best when it improves (None: only
        count). Returns whether it improved."""
        value = self.value_of(metrics)
        improved = self.improves(value)
        if improved:
            if checkpoint is not None:
                self._write(checkpoint, step, value)
            logging.info(
                "Best %s so far: %.4f at step %d%s",
                self.metric,
                value,
                step,
                f" (was {self.value:.4f} at step {self.step})" if self.value is not None else "",
            )
            self.value, self.step, self.stale = value, step, 0
        else:
            self.stale += 1
            logging.info(
                "%s %.4f at step %d does not beat the best %.4f (step %s); %d evaluation(s) "
                "without improvement",
                self.metric,
                value,
                step,
                self.value if self.value is not None else math.nan,
                self.step,
                self.stale,
            )
        files.makedirs(os.path.dirname(self._state_path))
        files.write_json(
            {
                "metric": self.metric,
                "mode": self.mode,
                "value": self.value,
                "step": self.step,
                "evaluations_since_best": self.stale,
            },
            self._state_path,
        )
        return improved

    def _write(self, checkpoint: tf.train.Checkpoint, step: int, value: float) -> None:
        target = checkpoints.best_dir(self.workdir)
        info = {"metric": self.metric, "mode": self.mode, "value": value, "step": step}
        if files.is_remote(target):
            # Object stores have no atomic rename: the index file is written last.
            if tf.io.gfile.isdir(target):
                tf.io.gfile.rmtree(target)
            _write_into(target, checkpoint, step, info)
            return
        with files.atomic_directory(target, overwrite=True) as tmp:
            _write_into(tmp, checkpoint, step, info)


def _write_into(directory: str, checkpoint, step: int, info: dict) -> None:
    files.makedirs(directory)
    name = f"ckpt-{step}"
    checkpoint.write(os.path.join(directory, name))
    files.write_json(info, os.path.join(directory, "best.json"))
    tf.compat.v1.train.update_checkpoint_state(directory, name, all_model_checkpoint_paths=[name])
