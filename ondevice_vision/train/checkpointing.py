"""Checkpoints: automatic resume, crash-safe writes, chief-only files, the resolved config.

tf.train.CheckpointManager writes the data files first and swaps the `checkpoint` index file in
atomically afterwards, so a run killed mid-save leaves the previous checkpoint as the latest.
Non-chief workers of a multi-worker run must take part in the save (it is a collective) but
write to a scratch directory that is removed at the end.
"""

from __future__ import annotations

import json
import os
import shutil

import tensorflow as tf
from absl import logging


def make_manager(checkpoint, workdir, keep, is_chief=True, worker_index=0):
    directory = os.path.join(workdir, "checkpoints")
    if not is_chief:
        directory = os.path.join(workdir, f".worker_{worker_index}_scratch", "checkpoints")
    return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=keep)


def restore_latest(checkpoint, manager) -> str | None:
    path = manager.latest_checkpoint
    if not path:
        return None
    status = checkpoint.restore(path)
    status.assert_existing_objects_matched()
    logging.info("Resumed from %s", path)
    return path


def save(manager, step: int) -> str:
    path = manager.save(checkpoint_number=step)
    logging.info("Saved checkpoint %s", path)
    return path


def restore_model_only(model, path: str) -> None:
    """Weights only (no optimizer, no step), e.g. to start from another run's checkpoint."""
    if not (tf.io.gfile.exists(path + ".index") or tf.io.gfile.exists(path)):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    tf.train.Checkpoint(model=model).read(path).expect_partial().assert_existing_objects_matched()


def latest_or_given(workdir: str, checkpoint: str | None = None) -> str:
    if checkpoint:
        if tf.io.gfile.isdir(checkpoint):
            found = tf.train.latest_checkpoint(checkpoint)
            if not found:
                raise FileNotFoundError(f"no checkpoint in {checkpoint}")
            return found
        if not tf.io.gfile.exists(checkpoint + ".index"):
            raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
        return checkpoint
    directory = os.path.join(workdir, "checkpoints")
    found = tf.train.latest_checkpoint(directory)
    if not found:
        raise FileNotFoundError(f"no checkpoint in {directory}: train first or pass --checkpoint")
    return found


def write_config(config, workdir: str) -> str:
    """The resolved config as JSON (atomic), so a run can be audited and reproduced."""
    path = os.path.join(workdir, "config.json")
    tmp = f"{path}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(json.dumps(config.to_dict(), indent=1, default=str))
    tf.io.gfile.rename(tmp, path, overwrite=True)
    return path


def cleanup_worker_dirs(is_chief: bool, worker_index: int, workdir: str) -> None:
    if not is_chief:
        shutil.rmtree(os.path.join(workdir, f".worker_{worker_index}_scratch"), ignore_errors=True)
