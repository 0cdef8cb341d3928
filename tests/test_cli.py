"""The command-line tools as a user runs them: ondevice-info, ondevice-train, ondevice-eval."""

import json
import os
import subprocess
import sys

import pytest

from ondevice_vision.configs import ssdlite_mobilenet_v3_small_shapes
from ondevice_vision.eval.coco_evaluator import METRIC_NAMES
from ondevice_vision.eval.evaluate import evaluate_checkpoint

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
CONFIG = "ondevice_vision/configs/ssdlite_mobilenet_v3_small_shapes.py"


def _run(*args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, env=ENV, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


def _last_json(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


def test_info_reports_counts_and_endpoints():
    info = _last_json(
        _run("ondevice_vision.info", "--model=mobilenet_v3_small", "--include_top").stdout
    )
    assert info["params"] == 2_554_968 and info["trainable_params"] == 2_542_856
    assert abs(info["madds"] - 56.5e6) / 56.5e6 < 0.01
    assert info["endpoints"]["stride_32"] == [7, 7, 576]
    assert info["endpoints"]["logits"] == [1000]
    info = _last_json(
        _run("ondevice_vision.info", f"--config={CONFIG}", "--input_size=320,256").stdout
    )
    assert info["input_size"] == [320, 256] and info["trainable_params"] == 965_561
    bad = _run("ondevice_vision.info", "--model=mobilenet_v9", check=False)
    assert bad.returncode != 0 and "mobilenet_v9" in bad.stderr


def test_train_and_eval_then_eval_the_checkpoint(tmp_path):
    workdir = str(tmp_path / "run")
    proc = _run(
        "ondevice_vision.train.main",
        f"--config={CONFIG}:smoke",
        f"--workdir={workdir}",
        "--mode=train_and_eval",
    )
    metrics = _last_json(proc.stdout)
    assert set(METRIC_NAMES) <= set(metrics)
    assert "step    4/4" in proc.stderr or "step 4/4" in proc.stderr
    assert "img/s" in proc.stderr and "ETA" in proc.stderr
    for path in (
        "config.json",
        "metrics.json",
        "checkpoints/ckpt-4.index",
        "eval/detections.json",
        "eval/predictions_4.png",
    ):
        assert os.path.exists(os.path.join(workdir, path)), path
    assert any(name.startswith("events") for name in os.listdir(os.path.join(workdir, "train")))
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["train"]["total_steps"] == 4
    # ondevice-eval's function on the latest checkpoint, in-process: same numbers again.
    config = ssdlite_mobilenet_v3_small_shapes.get_config("smoke")
    again = evaluate_checkpoint(config, workdir)
    assert again["step"] == 4
    assert again["AP"] == pytest.approx(metrics["AP"], abs=1e-6)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        evaluate_checkpoint(config, str(tmp_path / "empty"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "module,flag",
    [
        ("ondevice_vision.train", "--workdir"),
        ("ondevice_vision.eval", "--saved_model"),
        ("ondevice_vision.export", "--export_dir"),
        ("ondevice_vision.predict", "--score_threshold"),
        ("ondevice_vision.info", "--depth_multiplier"),
    ],
)
def test_every_cli_runs_as_python_dash_m_and_its_help_lists_its_flags(module, flag):
    out = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert flag in out.stdout + out.stderr
