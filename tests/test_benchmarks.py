"""The accelerator benchmark (and through it the input-pipeline benchmark) at tiny size: CI keeps
them running. Their figures on real hardware are in docs/speed.md."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_run(tmp_path, cases):
    cmd = [
        sys.executable,
        os.path.join(ROOT, "benchmarks", "gpu_throughput.py"),
        "--tiny",
        f"--cases={cases}",
        "--torch",
    ]
    env = {**os.environ, "PYTHONPATH": ROOT, "CUDA_VISIBLE_DEVICES": "", "TMPDIR": str(tmp_path)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.opt_in
def test_gpu_throughput_tiny_xla_case(tmp_path):
    """The benchmark's XLA path (an XLA compile costs ~25-40 s on a CPU; the trainer's XLA step is
    tested in tests/train/test_jit_compile.py): `pytest -m opt_in tests/test_benchmarks.py`."""
    result = _tiny_run(tmp_path, "lraspp:float32:true")
    (run,) = [r for r in result["runs"] if r["framework"] == "ondevice_vision"]
    assert run["jit_compile"] and "error" not in run, run
    assert run["images_per_sec"] > 0 and run["loss"] == run["loss"]


@pytest.mark.slow
def test_gpu_throughput_tiny_runs_and_reports_json(tmp_path):
    # Each model, float32 and a mixed precision: every code path, not the grid (mixed bfloat16
    # under XLA fails on the CPU with "Seen floating point types of different precisions", a
    # result the full grid reports; the XLA case is the opt-in test above).
    result = _tiny_run(tmp_path, "ssdlite:bfloat16:false,lraspp:float32:false")
    assert result["tiny"] and result["device"] == "CPU"
    ours = [r for r in result["runs"] if r["framework"] == "ondevice_vision"]
    assert [(r["model"], r["precision"], r["jit_compile"]) for r in ours] == [
        ("ssdlite", "bfloat16", False),
        ("lraspp", "float32", False),
    ]
    for run in ours:
        assert "error" not in run, run
        assert run["images_per_sec"] > 0 and run["loss"] == run["loss"]  # finite, not NaN
    # torchvision rows are there either way: figures with torch installed, else the reason.
    torch_rows = [r for r in result["runs"] if r["framework"] == "torchvision"]
    assert len(torch_rows) == 2
    for run in torch_rows:
        assert run.get("images_per_sec", 0) > 0 or "not installed" in run["error"], run
    pipeline = result["pipeline"]
    for key in ("detection/folder", "detection/folder+cache", "segmentation/folder"):
        assert pipeline["images_per_cpu_second"][key] > 0, key
    assert pipeline["threads"] == len(os.sched_getaffinity(0))
