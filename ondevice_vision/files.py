"""Files and directories that are either complete or absent, local or remote.

Every result the package writes (metrics, configs, label maps, detections, pictures, exports) goes
through here. A file is written beside its target under a unique temporary name, then renamed over
it, so a crash mid-write leaves at most a hidden temporary file, never a truncated result that a
later run or a user would read as valid. Paths with a scheme (`gs://`, `ram://`, ...) go through
`tf.io.gfile`; local paths use `os` directly, because only there can a temporary file be created
exclusively (`O_EXCL`, so a planted file or link with the same name is never followed) and only
there is a directory rename atomic.

New files get the usual permissions (0644 under the umask; directories 0755 under the umask):
temporary files are created private, and are opened up just before they take the target's place.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import tempfile
import uuid

import numpy as np


def is_remote(path: str) -> bool:
    return "://" in path


def _gfile():
    import tensorflow as tf  # only remote paths need TensorFlow's filesystems

    return tf.io.gfile


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def makedirs(directory: str) -> None:
    if is_remote(directory):
        _gfile().makedirs(directory)
    else:
        os.makedirs(directory, exist_ok=True)


def exists(path: str) -> bool:
    return _gfile().exists(path) if is_remote(path) else os.path.exists(path)


def remove(path: str) -> None:
    if is_remote(path):
        _gfile().remove(path)
    else:
        os.remove(path)


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w"):
    """`with atomic_write(path, "wb") as f: ...`: the file appears only if the block succeeds."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    if is_remote(path):
        with _remote_atomic_write(path, mode) as f:
            yield f
        return
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(
        dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_path)
        raise


@contextlib.contextmanager
def _remote_atomic_write(path: str, mode: str):
    gfile = _gfile()
    tmp_path = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        with gfile.GFile(tmp_path, mode) as f:
            yield f
        gfile.rename(tmp_path, path, overwrite=True)
    except BaseException:
        if gfile.exists(tmp_path):
            gfile.remove(tmp_path)
        raise


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(data, path: str, indent: int | None = 1) -> str:
    """JSON (NumPy scalars and arrays included), written atomically."""
    text = json.dumps(data, indent=indent, default=_json_default)
    with atomic_write(path, "w") as f:
        f.write(text)
    return path


def read_text(path: str) -> str:
    """A UTF-8 text file; a byte-order mark at its start (Windows editors write one) is dropped."""
    if is_remote(path):
        with _gfile().GFile(path, "rb") as f:
            data = f.read()
    else:
        with open(path, "rb") as f:
            data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from e


def read_json(path: str):
    """A JSON file (a UTF-8 byte-order mark is accepted); ValueError naming the file otherwise."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: malformed JSON: {e}") from e


def write_png(image, path: str) -> str:
    """uint8 [H, W] or [H, W, 3] as a PNG, written atomically."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image)).save(buffer, format="PNG")
    with atomic_write(path, "wb") as f:
        f.write(buffer.getvalue())
    return path


def check_writable_dir(directory: str, what: str = "workdir") -> None:
    """Fails early, naming the directory, when it cannot be created or written."""
    try:
        makedirs(directory)
        with atomic_write(os.path.join(directory, ".write-test"), "w") as f:
            f.write("ok")
        remove(os.path.join(directory, ".write-test"))
    except Exception as e:  # OSError locally, tf.errors.OpError remotely
        detail = getattr(e, "message", None) or str(e)
        raise PermissionError(f"{what} {directory} is not writable: {detail}") from e


@contextlib.contextmanager
def atomic_directory(target: str, overwrite: bool = False):
    """Yields a fresh temporary directory that becomes `target` when the block exits cleanly.

    Raises FileExistsError (before any work is done) when `target` exists and `overwrite` is
    False. Replacing an existing directory swaps the two with renames, so a reader sees the old
    or the new one, never a mix. Local filesystems only: object stores have no atomic rename.
    """
    if is_remote(target):
        raise ValueError(f"an atomic directory needs a local path, got {target}")
    target = os.path.abspath(target)
    if os.path.lexists(target) and not overwrite:
        raise FileExistsError(f"{target} already exists (pass --overwrite)")
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    remove_leftovers(target)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(target)}.tmp-{_owner()}")
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        _replace_directory(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _owner() -> str:
    """`HOST~PID~`: the temporary folders of a directory write name the process writing them."""
    return f"{socket.gethostname().replace('~', '-')}~{os.getpid()}~"


def _is_live(owner: str) -> bool:
    """Whether the `HOST~PID` that named a temporary folder may still be writing it: a process of
    this host that still runs, or any process of another host (it cannot be asked)."""
    host, _, pid = owner.partition("~")
    return host != socket.gethostname().replace("~", "-") or pid_alive(pid)


def pid_alive(pid) -> bool:
    """Whether a process of this host with that PID runs (True when it cannot be told)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True
    return True


def remove_leftovers(target: str) -> list[str]:
    """Deletes the hidden `.NAME.tmp-*` / `.NAME.old-*` folders an interrupted write of `target`
    left beside it (they are ours by name and never the result). A folder whose writing process
    still runs (another export to the same place at the same time) is left alone."""
    parent, name = os.path.split(os.path.abspath(target))
    removed = []
    if not os.path.isdir(parent):
        return removed
    for entry in os.listdir(parent):
        for prefix in (f".{name}.tmp-", f".{name}.old-"):
            if not entry.startswith(prefix):
                continue
            owner = entry[len(prefix) :].rpartition("~")[0]  # "" for unnamed (older) leftovers
            if owner and _is_live(owner):
                continue
            path = os.path.join(parent, entry)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if removed:
        from absl import logging

        logging.warning("Removed %d leftovers of an interrupted write: %s", len(removed), removed)
    return removed


def _replace_directory(new: str, target: str) -> None:
    if not os.path.lexists(target):
        os.rename(new, target)
        return
    old = tempfile.mkdtemp(
        dir=os.path.dirname(target), prefix=f".{os.path.basename(target)}.old-{_owner()}"
    )
    os.rmdir(old)  # only the unique name is wanted; rename needs it free
    os.rename(target, old)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
