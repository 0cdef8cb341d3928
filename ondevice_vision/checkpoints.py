"""Checkpoints: automatic resume, crash-safe writes, chief-only files, the resolved config.

Crash safety comes from how TensorFlow writes: `Checkpoint.save` writes the data into a temporary
`<prefix>_temp` directory and renames the merged files into place, and CheckpointManager then
replaces the `checkpoint` index file atomically (write to a temporary file, rename). The index only
ever names complete checkpoints, so a run killed mid-save resumes from the previous one. Leftovers
of such a kill (a `_temp` directory, files of a step newer than every listed one) are removed when
the next run starts; other files the index does not list are set aside, never deleted (see
`tidy_checkpoint_dir`), and a truncated newest checkpoint falls back to the one before it.

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
# checkpoints/best: the best-scoring checkpoint of a run (train.best_checkpoint.BestCheckpoint).
BEST = "best"
# The moving averages of the weights (train/ema.py) sit under this entry of a checkpoint.
EMA_ENTRY = "ema"


def average_key(variable) -> str:
    """The name of a weight's moving average inside the checkpoint's `ema/averages`."""
    return variable.path


class _Averages(tf.Module):
    """Reads `ema/averages/<path>` straight into the model's own weights."""

    def __init__(self, weights: dict):
        super().__init__()
        self.averages = weights


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
    checkpoint.restore(path).expect_partial().assert_existing_objects_matched()
    logging.info("Resumed from %s", path)


_CHECKPOINT_FILE = re.compile(r"^ckpt-(\d+)(_temp.*|\.index|\.data-\d+-of-(\d+))$")
SET_ASIDE_DIR = "set_aside"


def _complete_steps(names) -> set[int]:
    """Steps whose .index and every data shard are present."""
    shards, have_index = {}, set()
    for name in names:
        m = _CHECKPOINT_FILE.match(name)
        if not m:
            continue
        step = int(m.group(1))
        if m.group(2) == ".index":
            have_index.add(step)
        elif m.group(3):
            shards.setdefault(step, [0, int(m.group(3))])[0] += 1
    return {s for s in have_index if s in shards and shards[s][0] == shards[s][1]}


def tidy_checkpoint_dir(workdir: str) -> dict:
    """Start-up housekeeping of WORKDIR/checkpoints (chief only); never deletes a user's files.

    - `ckpt-N_temp` directories, and unlisted files of a step newer than every checkpoint the
      index lists, are what a save killed midway leaves: they are removed.
    - With no index at all, complete checkpoints found there (copied in by a user, or a first save
      killed before its index was written) are adopted: the index is written and the run resumes.
    - Any other unlisted checkpoint file is moved into `checkpoints/set_aside/`, with a warning.
    Returns {"removed": [...], "set_aside": [...], "adopted": [...]}.
    """
    report = {"removed": [], "set_aside": [], "adopted": []}
    directory = checkpoint_dir(workdir)
    if not tf.io.gfile.isdir(directory):
        return report
    names = [n.rstrip("/") for n in tf.io.gfile.listdir(directory)]
    has_index = tf.train.get_checkpoint_state(directory) is not None
    if not has_index:
        complete = sorted(_complete_steps(names))
        if complete:
            paths = [os.path.join(directory, f"ckpt-{s}") for s in complete]
            tf.compat.v1.train.update_checkpoint_state(
                directory, paths[-1], all_model_checkpoint_paths=paths
            )
            report["adopted"] = paths
            logging.warning(
                "%s had no checkpoint index: adopted the complete checkpoints found there (%s); "
                "the run resumes from %s",
                directory,
                ", ".join(os.path.basename(p) for p in paths),
                paths[-1],
            )
    listed = {int(os.path.basename(p).split("-")[-1]) for p in listed_checkpoints(workdir)}
    newest = max(listed, default=-1)
    for name in names:
        m = _CHECKPOINT_FILE.match(name)
        if m is None:
            continue
        step, path = int(m.group(1)), os.path.join(directory, name)
        if m.group(2).startswith("_temp"):
            tf.io.gfile.rmtree(path) if tf.io.gfile.isdir(path) else tf.io.gfile.remove(path)
            report["removed"].append(path)
        elif step not in listed and has_index and step > newest:
            tf.io.gfile.remove(path)
            report["removed"].append(path)
        elif step not in listed:
            aside = os.path.join(directory, SET_ASIDE_DIR)
            tf.io.gfile.makedirs(aside)
            tf.io.gfile.rename(path, os.path.join(aside, name), overwrite=True)
            report["set_aside"].append(path)
    if report["removed"]:
        logging.warning(
            "Removed %d files of an interrupted save: %s", len(report["removed"]), report["removed"]
        )
    if report["set_aside"]:
        logging.warning(
            "Moved %d checkpoint files the index does not list into %s (kept, not used): %s",
            len(report["set_aside"]),
            os.path.join(directory, SET_ASIDE_DIR),
            ", ".join(os.path.basename(p) for p in report["set_aside"]),
        )
    return report


def restore_newest_readable(checkpoint, workdir: str) -> str | None:
    """Restores the newest listed checkpoint that reads back; returns its path (None: none).

    A truncated or corrupt newest checkpoint is named in a warning and the one before it is
    tried; when none reads, the error names every file tried.
    """
    failures = []
    for path in reversed(listed_checkpoints(workdir)):
        try:
            restore(checkpoint, path)
        except Exception as e:  # noqa: BLE001 - IndexError, DataLossError, NotFoundError, ...
            detail = getattr(e, "message", None) or str(e) or type(e).__name__
            _quiet_failed_restore(e)
            logging.warning(
                "Cannot read checkpoint %s (%s); trying the one before it", path, detail
            )
            failures.append(f"{path}: {detail}")
            continue
        if failures:
            logging.warning("Resumed from %s instead of the unreadable newer ones", path)
        return path
    if failures:
        raise ValueError("no readable checkpoint in the workdir: " + "; ".join(failures))
    return None


def save(manager, step: int) -> str:
    path = manager.save(checkpoint_number=step)
    logging.info("Saved checkpoint %s", path)
    return path


def restore_weights(model, path: str, moving_averages: bool = True) -> bool:
    """The model's weights only (no optimizer, no step): for eval, export and initialisation.

    When the checkpoint holds moving averages of the weights (train.ema_decay) and
    `moving_averages` is on, the averages replace the weights they average. Returns whether they
    did."""
    if not (tf.io.gfile.exists(path + ".index") or tf.io.gfile.exists(path)):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        status = tf.train.Checkpoint(model=model).read(path)
        status.expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        _quiet_failed_restore(e)
        raise ValueError(
            f"{path}: this checkpoint does not match the config's model ({model.name}); was it "
            f"written by another config, task, backbone or class count? ({first[:200]})"
        ) from None
    except (IndexError, tf.errors.OpError) as e:
        detail = getattr(e, "message", None) or str(e)
        raise ValueError(f"{path}: unreadable checkpoint ({detail})") from e
    if not (moving_averages and has_entry(path, EMA_ENTRY)):
        return False
    weights = {average_key(v): v for v in model.trainable_variables}
    tf.train.Checkpoint(**{EMA_ENTRY: _Averages(weights)}).read(path).expect_partial()
    logging.info("%s: the weights are their moving averages", path)
    return True


def _quiet_failed_restore(error: BaseException) -> None:
    """A failed restore logs one warning per unmatched value (hundreds) whenever its bookkeeping
    is garbage-collected, which may be long after the error: the objects it failed to fill keep it
    alive. The one-line error says it all, so the restore is marked partial, as
    `status.expect_partial()` would have done had `read` returned a status. The restore
    coordinator is TensorFlow's private class, found in the frames of the error's traceback."""
    from tensorflow.python.checkpoint.checkpoint import _CheckpointRestoreCoordinator

    traceback = error.__traceback__
    while traceback is not None:
        for value in traceback.tb_frame.f_locals.values():
            if isinstance(value, _CheckpointRestoreCoordinator):
                value.expect_partial = True
        traceback = traceback.tb_next
    error.__traceback__ = None


def step_of(path: str) -> int | None:
    """The step number in a checkpoint prefix (`.../ckpt-1200` -> 1200), or None."""
    tail = path.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def best_dir(workdir: str) -> str:
    return os.path.join(checkpoint_dir(workdir), BEST)


def prefix_of(path: str) -> str:
    """The prefix of a checkpoint given as its prefix or as one of its files: `ckpt-4.index`
    and `ckpt-4.data-00000-of-00001` name the checkpoint `ckpt-4`."""
    if tf.io.gfile.exists(path + ".index"):
        return path
    name = os.path.basename(path)
    for marker in (".index", ".data-", ".meta"):
        if marker in name:
            prefix = path[: len(path) - len(name) + name.rindex(marker)]
            if tf.io.gfile.exists(prefix + ".index"):
                return prefix
    return path


def latest_or_given(workdir: str, checkpoint: str | None = None) -> str:
    """`checkpoint` (a prefix, a directory, or "best": the run's best checkpoint), else the
    newest checkpoint of `workdir`."""
    if checkpoint == BEST:
        if not workdir:
            raise ValueError("--checkpoint=best needs --workdir (the run whose best it is)")
        found = tf.train.latest_checkpoint(best_dir(workdir))
        if not found:
            raise FileNotFoundError(
                f"no best checkpoint in {best_dir(workdir)}: the run keeps one when it "
                "evaluates during training (eval.every_steps) or under ondevice-eval --watch"
            )
        return found
    if checkpoint:
        checkpoint = prefix_of(checkpoint)
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


def read_config(workdir: str) -> dict | None:
    """The config.json a run wrote into `workdir` (None when there is none)."""
    path = os.path.join(workdir, "config.json")
    return files.read_json(path) if tf.io.gfile.exists(path) else None


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
