"""`ondevice-benchmark` end to end on the session's fitted detector: every row, the files, and the
numbers equal to `ondevice-eval --tflite` on the same file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ondevice_vision import benchmark, checkpoints
from ondevice_vision.eval.evaluate import evaluate_exported
from tests.helpers.export_fixtures import label_map

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_EVAL = 6


@pytest.fixture(scope="module")
def result(overfit_detector, tmp_path_factory):
    import tensorflow as tf

    from ondevice_vision.tasks import recorded_labels

    config, model, _ = overfit_detector
    config = config.copy_and_resolve_references()
    config.data.num_eval = NUM_EVAL
    config.eval.num_visualizations = 0
    workdir = str(tmp_path_factory.mktemp("benchmark_run"))
    step = tf.Variable(120, dtype=tf.int64)
    manager = checkpoints.make_manager(tf.train.Checkpoint(model=model, step=step), workdir, 1)
    checkpoints.save(manager, 120)
    recorded_labels.record(workdir, label_map(config))
    lines = []
    original = benchmark.logging.info
    benchmark.logging.info = lambda msg, *a: lines.append(msg % a)
    try:
        out = benchmark.run_benchmark(config, workdir, runs=3, warmup=1, num_calibration_images=2)
    finally:
        benchmark.logging.info = original
    return config, workdir, out, lines


def test_every_variant_is_exported_scored_and_timed(result):
    _, workdir, out, lines = result
    rows = {row["variant"]: row for row in out["rows"]}
    # Not quantization-aware: no qat_int8 row, and the log says why.
    assert list(rows) == ["saved_model", "float", "fp16", "int8"]
    assert any("not quantization-aware" in line for line in lines)
    for row in rows.values():
        assert row["size_bytes"] > 0 and all(v > 0 for v in row["latency_ms"].values())
        assert set(row["metrics"]) == {"AP", "AP50"}
    assert set(rows["float"]["latency_ms"]) == {str(t) for t in benchmark.thread_counts()}
    assert set(rows["saved_model"]["latency_ms"]) == {"tf"}
    # fp16 halves the weights; int8 quarters them (plus the graph around them and the
    # quantization parameters: 0.354 of the float file measured).
    assert rows["fp16"]["size_bytes"] < 0.6 * rows["float"]["size_bytes"]
    assert rows["int8"]["size_bytes"] < 0.45 * rows["float"]["size_bytes"]
    assert rows["int8"]["edgetpu"] == "yes" and rows["float"]["edgetpu"].startswith("n/a")
    # Scored on the eval split (other shapes than the two it was fitted to): any AP in 0..1.
    assert all(0.0 <= v <= 1.0 for row in rows.values() for v in row["metrics"].values())
    # Progress lines while it works.
    assert any(line.startswith("benchmark 4/4: timing int8") for line in lines), lines
    # fp16 converted the float variant's graph archive (tflite.GraphArchives), not a new one.
    reused = [line for line in lines if "graph written for an earlier variant" in line]
    assert reused == ["Converting the float TFLite graph written for an earlier variant"], lines


def test_results_are_written_as_table_json_and_picture(result):
    _, _, out, _ = result
    directory = out["output_dir"]
    table = open(os.path.join(directory, "benchmark.md")).read().strip().splitlines()
    assert len(table) == 2 + 4 and table[0].startswith("| variant | size (MB) | AP | AP50 |")
    assert table == out["table"].splitlines()
    saved = json.load(open(os.path.join(directory, "benchmark.json")))
    assert [r["variant"] for r in saved["rows"]] == ["saved_model", "float", "fp16", "int8"]
    from PIL import Image

    picture = np.asarray(Image.open(os.path.join(directory, "benchmark.png")))
    assert picture.shape[2] in (3, 4) and picture.std() > 0


def test_numbers_equal_ondevice_eval_on_the_same_file(result):
    """The int8 row's AP and AP50 are what `ondevice-eval --tflite` prints for its file (one
    start of the CLI, with the config given as flags); every row's are what ondevice-eval's
    scoring of exports gives for the file the row names."""
    config, _, out, _ = result
    for row in out["rows"]:
        metrics = evaluate_exported(config, row["path"], expect_format=row["format"])
        assert {k: metrics[k] for k in ("AP", "AP50")} == row["metrics"], row["variant"]
    (row,) = [r for r in out["rows"] if r["variant"] == "int8"]
    command = [
        sys.executable,
        "-m",
        "ondevice_vision.eval",
        "--config=ondevice_vision/configs/ssdlite_mobilenet_v3_small_shapes.py",
        "--config.model.input_size=128,128",
        "--config.data.image_size=128",
        f"--config.data.num_eval={NUM_EVAL}",
        "--config.eval.num_visualizations=0",
        f"--tflite={row['path']}",
    ]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads(run.stdout.strip().splitlines()[-1])
    assert metrics["AP"] == row["metrics"]["AP"] and metrics["AP50"] == row["metrics"]["AP50"]
