"""Runs `ondevice-train` on the detection smoke config in subprocesses, for the engine's tests.

Each run costs ~30-60 s of CPU (mostly tf.function tracing), so tests start the runs they need
together and wait for them once.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = "ondevice_vision/configs/ssdlite_mobilenet_v3_small_shapes.py:smoke"
# Half the start-up cost of the detector (fewer layers to trace), for tests that need any model.
SEGMENTATION_SMOKE = "ondevice_vision/configs/lraspp_mobilenet_v3_small_shapes.py:smoke"
# Same examples in the same order on any number of workers: no augmentation, no shuffling.
DETERMINISTIC_DATA = ("--config.data.augment=False", "--config.train.shuffle_buffer=1")


def command(workdir, *args, config=SMOKE, nan_at_step=None):
    """The CLI's command line: `ondevice-train` run by its main after the tests' set-up
    (quick_graphs: Grappler off; `nan_at_step`: the loss NaN at that step, nan_injection.py).
    `python -c` puts the working directory (the repository root, ROOT) on sys.path."""
    from tests.helpers import nan_injection, quick_graphs

    code = quick_graphs.PREAMBLE
    if nan_at_step is not None:
        code += nan_injection.preamble(nan_at_step)
    code += "from ondevice_vision.train import main\nmain.run()\n"
    return [sys.executable, "-c", code, f"--config={config}", f"--workdir={workdir}", *args]


def environment(tf_config=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def start(workdir, *args, log_path=None, tf_config=None, config=SMOKE, nan_at_step=None):
    """Starts a run; stdout and stderr go to `log_path` (default <workdir>.log)."""
    log_path = log_path or f"{workdir}.log"
    log = open(log_path, "w")  # closed by finish()
    process = subprocess.Popen(
        command(workdir, *args, config=config, nan_at_step=nan_at_step),
        cwd=ROOT,
        env=environment(tf_config),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    process.log_path = log_path
    process.log_file = log
    return process


def finish(process, timeout=400) -> tuple[int, str]:
    """Waits for a run; returns (exit code, its output)."""
    try:
        process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.log_file.close()
    with open(process.log_path) as f:
        return process.returncode, f.read()


def run(workdir, *args, timeout=400, **kwargs) -> tuple[int, str]:
    return finish(start(workdir, *args, **kwargs), timeout)


def run_in_process(workdir, *args, config=SMOKE, nan_at_step=None):
    """`ondevice-train` run by its main in this process (no start-up of a fresh one): the
    message it exits with (sys.exit's argument: "ERROR: ..." for exit status 1), None if it
    returned. Its output goes to this process's stdout / stderr. `nan_at_step` as `command`'s,
    for this run only."""
    from ondevice_vision.train import main as train_main
    from ondevice_vision.train import trainer as trainer_lib
    from tests.helpers import nan_injection

    original_init = trainer_lib.Trainer.__init__
    if nan_at_step is not None:
        nan_injection.install(nan_at_step)

    argv = [
        "ondevice-train",
        f"--config={os.path.join(ROOT, config)}",
        f"--workdir={workdir}",
        *args,
    ]
    saved_argv, sys.argv = sys.argv, argv  # ml_collections reads --config.* overrides there
    try:
        train_main.parse_flags(argv)
        train_main.main(argv)
    except SystemExit as e:
        return e.code
    finally:
        trainer_lib.Trainer.__init__ = original_init
        sys.argv = saved_argv
        train_main.FLAGS.unparse_flags()
        # Each parse defines a flag per --config.* override; the next parse defines its own.
        for name in [n for n in train_main.FLAGS if n.startswith("config.")]:
            delattr(train_main.FLAGS, name)
    return None


def result_json(output: str) -> dict:
    """The JSON line the CLI prints last."""
    lines = [line for line in output.splitlines() if line.startswith("{")]
    assert lines, output[-3000:]
    return json.loads(lines[-1])


def wait_for(predicate, process, timeout=300, poll=0.2):
    """Polls until `predicate()` is true; fails if the process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process.poll() is not None:
            code, output = finish(process)
            raise AssertionError(f"run exited ({code}) before the awaited state:\n{output[-3000:]}")
        time.sleep(poll)
    raise AssertionError("timed out waiting for the run")


def log_contains(process, text):
    def check():
        with open(process.log_path) as f:
            return text in f.read()

    return check


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def scalars(workdir, tag) -> dict[int, float]:
    """{step: value} of one training summary."""
    values = {}
    directory = os.path.join(workdir, "train")
    for name in sorted(os.listdir(directory)):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(directory, name)):
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = float(tf.make_ndarray(value.tensor))
    return values


def read_checkpoint(path) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint (fails on a truncated or corrupt one); the data iterator's
    state (a variant) only as its serialized size."""
    reader = tf.train.load_checkpoint(path)
    dtypes = reader.get_variable_to_dtype_map()
    return {
        name: reader.get_tensor(name) if dtype != tf.variant else None
        for name, dtype in dtypes.items()
        if name != "_CHECKPOINTABLE_OBJECT_GRAPH"
    }


def model_weights(path) -> dict[str, np.ndarray]:
    return {k: v for k, v in read_checkpoint(path).items() if k.startswith("model/")}
