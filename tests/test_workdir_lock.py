"""One trainer per workdir."""

import json
import os
import subprocess
import sys

import pytest

from ondevice_vision.workdir_lock import LOCK_FILE, WorkdirLockedError, workdir_lock

_HOLD = """
import sys, time
from ondevice_vision.workdir_lock import workdir_lock
with workdir_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(WorkdirLockedError) as error:
            with workdir_lock(str(tmp_path)):
                pass
        message = str(error.value)
        assert f"PID {holder.pid}" in message and str(tmp_path) in message
    finally:
        holder.kill()
        holder.wait()
    # A killed holder leaves its file, but the kernel released the lock: no stale lock.
    assert os.path.exists(tmp_path / LOCK_FILE)
    with workdir_lock(str(tmp_path)):
        info = json.loads((tmp_path / LOCK_FILE).read_text())
        assert info["pid"] == os.getpid()


def test_remote_workdir_lock_takes_over_dead_local_holders():
    workdir = "ram://lock_test/run"
    with workdir_lock(workdir):
        with pytest.raises(WorkdirLockedError, match="in use by the training run"):
            with workdir_lock(workdir):
                pass
    from ondevice_vision import files

    files.write_json(
        {"host": os.uname().nodename, "pid": 2**22 + 12345, "since": "x"}, f"{workdir}/{LOCK_FILE}"
    )
    with workdir_lock(workdir):  # that PID is not alive on this host: taken over
        pass
