"""Runs od_api_reference.py once per test session, in a process of its own, and caches its output.

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
import reference_inputs

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
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "od_api_reference.py"), directory],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"the reference subprocess failed ({result.returncode}):\n{result.stderr[-6000:]}"
        )


def load(directory: str, name: str) -> dict:
    return dict(np.load(os.path.join(directory, name, "outputs.npz")))
