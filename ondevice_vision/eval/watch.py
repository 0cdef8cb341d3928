"""`ondevice-eval --watch`: score each checkpoint of a training run as it appears.

The Object Detection API's evaluator job and Model Garden's continuous evaluation: training runs
elsewhere (`--mode=train`, another process or machine sharing the workdir), and this loop

- reads only checkpoints the run's index lists: TensorFlow renames a checkpoint's files into
  place and only then rewrites the index, so a listed checkpoint is complete (a half-written one
  is never listed, never read);
- scores every listed step once, oldest first: a step whose eval/metrics_STEP.json exists was
  scored (by this job before a restart, or by train_and_eval) and is skipped; a checkpoint
  the trainer rotated away before it was read is named in a warning and skipped;
- writes what train_and_eval writes (metrics.json, eval/ summaries and pictures) and keeps the
  best checkpoint (a copy of the scored files, moving averages included) in checkpoints/best/;
- ends when the run's last step (train.total_steps) is scored, or after `timeout` seconds
  without a new checkpoint.
"""

from __future__ import annotations

import os
import time

import tensorflow as tf
from absl import logging

from ondevice_vision import checkpoints, files, tasks
from ondevice_vision.eval.best_checkpoint import BestCheckpoint
from ondevice_vision.eval.evaluate import evaluate

POLL_SECONDS = 5.0


def scored(workdir: str, step: int) -> bool:
    return files.exists(os.path.join(workdir, "eval", f"metrics_{step}.json"))


def watch(config, workdir: str, timeout: float, poll: float = POLL_SECONDS) -> dict:
    """Scores new checkpoints until the final one or `timeout` idle seconds; returns
    {"scored": [steps], "best": {...} or None, "ended": "final checkpoint" | "timeout"}."""
    best = BestCheckpoint.for_run(config, workdir)
    final = int(config.train.total_steps)
    done: list[int] = []
    last_new = time.monotonic()
    logging.info("Watching %s for checkpoints (until step %d)", workdir, final)
    while True:
        pending = [
            (step, path)
            for path in checkpoints.listed_checkpoints(workdir)
            if (step := checkpoints.step_of(path)) is not None and not scored(workdir, step)
        ]
        for step, path in sorted(pending):
            if _score(config, workdir, path, step, best):
                done.append(step)
            last_new = time.monotonic()
        if scored(workdir, final) or any(s >= final for s in done):
            ended = "final checkpoint"
            break
        idle = time.monotonic() - last_new
        if idle >= timeout:
            ended = "timeout"
            logging.info("No new checkpoint for %.0f s: the watch ends", idle)
            break
        time.sleep(min(poll, max(timeout - idle, 0.0)))
    result = {"scored": done, "ended": ended, "best": None}
    if best.value is not None:
        result["best"] = {"metric": best.metric, "value": best.value, "step": best.step}
    return result


def _score(config, workdir: str, path: str, step: int, best: BestCheckpoint) -> bool:
    try:
        model = tasks.get_task(config).build_model(config)
        checkpoints.restore_weights(model, path)
    except (FileNotFoundError, ValueError) as e:
        if not tf.io.gfile.exists(path + ".index"):
            logging.warning("%s was removed before it could be scored (step %d)", path, step)
            return False
        raise ValueError(f"{path}: {e}") from e
    logging.info("Scoring %s", path)
    metrics = evaluate(config, model, workdir, step)
    try:
        best.update(metrics, step, _CopyOf(path))
    except tf.errors.NotFoundError:
        logging.warning("%s was removed while it was copied as the best checkpoint", path)
    return True


class _CopyOf:
    """A finished checkpoint as `BestCheckpoint` writes one: its files copied as they are."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def write(self, destination: str) -> str:
        directory, name = os.path.split(self.prefix)
        for entry in tf.io.gfile.listdir(directory):
            if entry == name + ".index" or entry.startswith(name + ".data-"):
                suffix = entry[len(name) :]
                tf.io.gfile.copy(os.path.join(directory, entry), destination + suffix)
        return destination
