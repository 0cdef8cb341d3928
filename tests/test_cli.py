"""The command-line tools as a user runs them: ondevice-info, ondevice-train, ondevice-eval."""

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

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


_HELP = {  # module: flags of its own that its --help must list
    "ondevice_vision.train": ("--workdir", "--[no]adopt_workdir"),
    "ondevice_vision.eval": ("--saved_model", "--[no]adopt_workdir"),
    "ondevice_vision.export": ("--export_dir",),
    "ondevice_vision.predict": ("--score_threshold",),
    "ondevice_vision.info": ("--depth_multiplier",),
    "ondevice_vision.importers": ("--checkpoint", "--[no]adopt_workdir"),
}


def _error_cases(tmp_path):
    """(module, arguments, what its one ERROR line must say) of mistakes each tool finds before
    any real work."""
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "model.ckpt.index").write_bytes(os.urandom(300))
    export = tmp_path / "export"
    export.mkdir()
    (export / "model.tflite").write_bytes(b"not a flatbuffer" * 8)
    (export / "labels.json").write_text('{"classes": [{"index": 0, "id": 0, "name": "a"}]}')
    (export / "export.json").write_text('{"task": "detection", "format": "tflite"}')
    (tmp_path / "labels.json").write_text('{"names": ["a"]}')
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (8, 8)).save(photos / "a.png")
    config, work = f"--config={CONFIG}", f"--workdir={tmp_path / 'work'}"
    home = tmp_path / "home"
    home.mkdir()
    (home / "metrics.json").write_text("{}")
    (home / "thesis.tex").write_text("mine")
    return [
        (
            "ondevice_vision.train",
            [config, f"--workdir={home}"],
            f"workdir {home}: holds files that are not a run's (thesis.tex)",
        ),
        (
            "ondevice_vision.eval",
            [config, f"--workdir={home}"],
            f"workdir {home}: holds files that are not a run's (thesis.tex); give --workdir a "
            "new or empty folder, or pass --adopt_workdir",
        ),
        (
            "ondevice_vision.info",
            ["--model=mobilenet_v3_small", "--input_size=abc"],
            "--input_size must be N or HEIGHT,WIDTH",
        ),
        ("ondevice_vision.importers", [], "must have a value other than None"),
        (
            "ondevice_vision.importers",
            [config, f"--checkpoint={junk}/model.ckpt.index", work],
            f"{junk}/model.ckpt: not a readable checkpoint",
        ),
        (
            "ondevice_vision.train",
            [config, work, "--config.model.postprocess.iou_threshold=1.5"],
            "config.model.postprocess.iou_threshold: must be in (0, 1], got 1.5",
        ),
        (
            "ondevice_vision.eval",
            [config, f"--tflite={export}/model.tflite"],
            f"{export}/model.tflite: not a readable TFLite model",
        ),
        (
            "ondevice_vision.export",
            [
                config,
                work,
                f"--export_dir={tmp_path / 'out'}",
                f"--label_map={tmp_path}/labels.json",
            ],
            f"{tmp_path}/labels.json: not a label map",
        ),
        (
            "ondevice_vision.predict",
            [f"--model={export}", f"--input={photos}", f"--output={photos}/out"],
            f"--output={photos}/out: is the input folder {photos} or inside it",
        ),
    ]


@pytest.mark.slow
def test_every_cli_help_and_errors(tmp_path):
    """All six tools: --help lists the tool's flags and exits 0; a mistake is one `ERROR:` line
    naming the file or key, exit status 1, no traceback. The processes run at once."""
    runs = [(module, ["--help"], None) for module in _HELP] + _error_cases(tmp_path)
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        for module, args, _ in runs
    ]
    for (module, args, expected), process in zip(runs, processes, strict=True):
        stdout, stderr = process.communicate(timeout=600)
        if expected is None:
            assert process.returncode == 0, f"{module} --help: {stdout[-2000:]}{stderr[-2000:]}"
            for flag in _HELP[module]:
                assert flag in stdout + stderr, (module, flag)
            continue
        errors = [line for line in stderr.splitlines() if line.startswith("ERROR:")]
        where = f"{module} {args}: {stderr[-3000:]}"
        assert process.returncode == 1, where
        assert len(errors) == 1 and expected in errors[0], where
        assert "Traceback" not in stderr and "FATAL" not in stderr, where
