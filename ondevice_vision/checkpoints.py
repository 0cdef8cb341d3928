"""Checkpoints: automatic resume, crash-safe writes, chief-only files, the resolved config.

Crash safety comes from how TensorFlow writes: `Checkpoint.save` writes the data into a temporary
`<prefix>_temp` directory and renames the merged files into place, and CheckpointManager then
replaces the `checkpoint` index file atomically (write to a temporary file, rename). The index only
ever names complete checkpoints, so a run killed mid-save resumes from the previous one. Leftovers
of such a kill (a `_temp` directory, files of a checkpoint the index never got to list) are
removed when the next run starts.

In a multi-worker run every worker restores from the chief's directory (the workdir must be on
storage all workers see: a GCS bucket or NFS). Every worker must take part in a save (reading
mirrored variables can need collectives), so the others write to a scratch directory of their
own that is removed when they finish.
"""

from __future__ import annotations

import os
import re
import shutil

import tensorflow as tf
from absl import logging

from ondevice_vision import files

CHECKPOINT_DIR = "checkpoints"


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(workdir, CHECKPOINT_DIR)


def scratch_dir(workdir: str, worker_index: int) -> str:
    return os.path.join(workdir, f".worker_{worker_index}_scratch")


def make_manager(checkpoint, workdir, keep, is_chief=True, worker_index=0):
    directory = checkpoint_dir(workdir)
    if not is_chief:
        directory = os.path.join(scratch_dir(workdir, worker_index), CHECKPOINT_DIR)
    return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=keep)


def latest_checkpoint(workdir: str) -> str | None:
    """The newest complete checkpoint of a run (the one its index names), or None."""
    return tf.train.latest_checkpoint(checkpoint_dir(workdir))


def listed_checkpoints(workdir: str) -> list[str]:
    """Every checkpoint the index lists, oldest first."""
    state = tf.train.get_checkpoint_state(checkpoint_dir(workdir))
    return list(state.all_model_checkpoint_paths) if state else []


def has_entry(path: str, name: str) -> bool:
    """Whether the checkpoint at `path` saved the attribute `name` of its root object."""
    return any(
        key == name or key.startswith(name + "/") for key, _ in tf.train.list_variables(path)
    )


def restore(checkpoint, path: str) -> None:
    """Restores every object of `checkpoint` that exists now; those attached later (the data
    iterator) are restored when they are attached."""
    # expect_partial: a data iterator in the file is read separately (or deliberately not).
    checkpoint.restore(path).assert_existing_objects_matched().expect_partial()
    logging.info("Resumed from %s", path)


def remove_incomplete(workdir: str) -> list[str]:
    """Deletes what a save killed midway left behind; returns the removed paths (chief only)."""
    directory = checkpoint_dir(workdir)
    if not tf.io.gfile.isdir(directory):
        return []
    listed = {os.path.basename(p) for p in listed_checkpoints(workdir)}
    removed = []
    for name in tf.io.gfile.listdir(directory):
        name = name.rstrip("/")
        path = os.path.join(directory, name)
        prefix = re.match(r"^(ckpt-\d+)(?:_temp|\.index$|\.data-\d+-of-\d+$)", name)
        if prefix is None:
            continue
        if name.startswith(prefix.group(1) + "_temp") or prefix.group(1) not in listed:
            if tf.io.gfile.isdir(path):
                tf.io.gfile.rmtree(path)
            else:
                tf.io.gfile.remove(path)
            removed.append(path)
    if removed:
        logging.warning("Removed %d files of an interrupted save: %s", len(removed), removed)
    return removed


def save(manager, step: int) -> str:
    path = manager.save(checkpoint_number=step)
    logging.info("Saved checkpoint %s", path)
    return path


def restore_weights(model, path: str) -> None:
    """The model's weights only (no optimizer, no step): for eval, export and initialisation."""
    if not (tf.io.gfile.exists(path + ".index") or tf.io.gfile.exists(path)):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    tf.train.Checkpoint(model=model).read(path).expect_partial().assert_existing_objects_matched()


def step_of(path: str) -> int | None:
    """The step number in a checkpoint prefix (`.../ckpt-1200` -> 1200), or None."""
    tail = path.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


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
    directory = checkpoint_dir(workdir)
    found = tf.train.latest_checkpoint(directory)
    if not found:
        raise FileNotFoundError(f"no checkpoint in {directory}: train first or pass --checkpoint")
    return found


def write_config(config, workdir: str) -> str:
    """The resolved config as JSON (atomic), so a run can be audited and reproduced."""
    path = os.path.join(workdir, "config.json")
    return files.write_json(_jsonable(config.to_dict()), path)


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def cleanup_worker_dirs(is_chief: bool, worker_index: int, workdir: str) -> None:
    if not is_chief:
        shutil.rmtree(scratch_dir(workdir, worker_index), ignore_errors=True)
