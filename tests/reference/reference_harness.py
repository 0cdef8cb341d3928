"""Runs od_api_reference.py once per test session, in processes of its own, and keeps the output.

The reference packages (the TF1 Object Detection API and slim) live in REFERENCE_PATH, a folder
`make test` fills (Makefile: REFERENCE_PACKAGES) and that only the subprocess puts on its path.
pytest-xdist workers share one run through a lock file next to the output directory.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys

import numpy as np

from tests.reference import reference_inputs

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
REFERENCE_PATH = os.environ.get("ONDEVICE_REFERENCE_PATH", os.path.join(REPO, ".venv", "reference"))
TIMEOUT_S = 900


def reference_outputs(directory: str) -> str:
    """Fills `directory` (inputs.npz, one folder per model) unless a previous worker did."""
    os.makedirs(directory, exist_ok=True)
    done = os.path.join(directory, "done")
    with open(directory + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(done):
            _run(directory)
            open(done, "w").close()
    return directory


def _run(directory):
    if not os.path.isdir(os.path.join(REFERENCE_PATH, "object_detection")):
        raise RuntimeError(
            f"The reference packages are not installed in {REFERENCE_PATH}: run `make test` "
            "(it installs them), or set ONDEVICE_REFERENCE_PATH."
        )
    np.savez(os.path.join(directory, "inputs.npz"), **reference_inputs.make_inputs())
    env = dict(os.environ, PYTHONPATH=REFERENCE_PATH, TF_CPP_MIN_LOG_LEVEL="2")
    # Two processes at once: the other pytest-xdist worker waits on the lock meanwhile, so its
    # core would otherwise idle.
    script = os.path.join(HERE, "od_api_reference.py")
    runs = {}
    for group in ("detection", "classifiers"):
        log = open(os.path.join(directory, f"log_{group}.txt"), "w+")  # noqa: SIM115
        runs[group] = (
            subprocess.Popen(
                [sys.executable, script, directory, group],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            ),
            log,
        )
    failures = []
    for group, (process, log) in runs.items():
        try:
            returncode = process.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            returncode = "timeout"
        log.seek(0)
        if returncode != 0:
            failures.append(f"{group} ({returncode}):\n{log.read()[-6000:]}")
        log.close()
    if failures:
        raise RuntimeError("the reference subprocess failed: " + "\n".join(failures))


def load(directory: str, name: str) -> dict:
    return dict(np.load(os.path.join(directory, name, "outputs.npz")))
