"""One trainer per workdir: an exclusive lock held for the whole run.

Two trainers sharing a workdir interleave their checkpoints and TensorBoard events, and one
starting mid-run would rotate away (or clean up) the other's checkpoints. That is what happens when
a scheduler restarts a job before the old process has died, so `ondevice-train` takes
`WORKDIR/train.lock` first and refuses, in one line naming the holder, when another run holds it.

Local workdirs use an advisory `fcntl.flock` on the file: the kernel releases it when the holder
exits in any way (SIGKILL and crashes included), so a stale lock cannot exist; the file holds the
holder's host, PID and start time for the message. Remote workdirs (gs://...) have no locks: the
file is created if absent and a file of a process that is no longer alive on this host is taken
over; a lock of another host must be removed by hand once that run is known to be dead.

In a multi-worker run only the chief locks: the other workers write nothing into the workdir
(their checkpoints go to scratch directories of their own).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time

from ondevice_vision import files

LOCK_FILE = "train.lock"


class WorkdirLockedError(RuntimeError):
    pass


def _holder() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%c")}


def _describe(path: str, holder: dict | None) -> str:
    if not holder:
        return f"{os.path.dirname(path)} is in use by another training run (lock file {path})"
    return (
        f"{os.path.dirname(path)} is in use by the training run with PID {holder.get('pid')} on "
        f"{holder.get('host')} since {holder.get('since')} (lock file {path}); stop that run, or "
        "use another --workdir"
    )


@contextlib.contextmanager
def workdir_lock(workdir: str):
    """Holds the workdir's lock for the `with` block; WorkdirLockedError if another run has it."""
    path = os.path.join(workdir, LOCK_FILE)
    if files.is_remote(workdir):
        with _remote_lock(path):
            yield path
        return
    import fcntl

    os.makedirs(workdir, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkdirLockedError(_describe(path, _read(path))) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(_holder()).encode())
        yield path
    finally:
        os.close(fd)  # releases the flock


def _read(path: str) -> dict | None:
    try:
        return files.read_json(path)
    except Exception:  # noqa: BLE001 - a half-written or foreign file only changes the message
        return None


@contextlib.contextmanager
def _remote_lock(path: str):
    holder = _read(path) if files.exists(path) else None
    me = _holder()
    if holder is not None:
        same_host = holder.get("host") == me["host"]
        if not (same_host and not files.pid_alive(holder.get("pid"))):
            raise WorkdirLockedError(_describe(path, holder))
    files.write_json(me, path)
    try:
        yield path
    finally:
        if _read(path) == me:
            files.remove(path)
