"""The accelerator benchmark (and through it the input-pipeline benchmark) at tiny size: CI keeps
them running. Their figures on real hardware are in docs/speed.md."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_gpu_throughput_tiny_runs_and_reports_json(tmp_path):
    cmd = [
        sys.executable,
        os.path.join(ROOT, "benchmarks", "gpu_throughput.py"),
        "--tiny",
        # Each model, float32 and a mixed precision, XLA once: every code path, not the grid
        # (an XLA compile costs ~25 s on a CPU; mixed bfloat16 under XLA fails on the CPU with
        # "Seen floating point types of different precisions", a result the full grid reports).
        "--cases=ssdlite:bfloat16:false,lraspp:float32:true",
        "--torch",
    ]
    env = {**os.environ, "PYTHONPATH": ROOT, "CUDA_VISIBLE_DEVICES": "", "TMPDIR": str(tmp_path)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["tiny"] and result["device"] == "CPU"
    ours = [r for r in result["runs"] if r["framework"] == "ondevice_vision"]
    assert [(r["model"], r["precision"], r["jit_compile"]) for r in ours] == [
        ("ssdlite", "bfloat16", False),
        ("lraspp", "float32", True),
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
