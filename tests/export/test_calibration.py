"""int8 calibration sources (export/calibration.py): the images chosen reach the converter, and
sets that cannot calibrate are refused."""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from PIL import Image

from ondevice_vision import tasks
from ondevice_vision.configs import (
    lraspp_mobilenet_v3_small_shapes,
    ssdlite_mobilenet_v3_small_shapes,
)
from ondevice_vision.data.label_map import LabelMap
from ondevice_vision.export import calibration, tflite
from ondevice_vision.export.calibration import Calibration

SIZE = (48, 48)


def _folder(directory, high, count=3, seed=0):
    """`count` PNGs of random pixels in 0..high, of other sizes than the network input."""
    directory.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = rng.integers(0, high + 1, (40 + 8 * i, 56, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(directory / f"{i}.png")
    return str(directory)


def test_default_source_shows_progress(monkeypatch):
    lines = []
    monkeypatch.setattr(calibration.logging, "info", lambda msg, *a: lines.append(msg % a))
    config = ssdlite_mobilenet_v3_small_shapes.get_config("smoke")
    batches = list(Calibration(config, (64, 64), 3)())
    assert len(batches) == 3 and batches[0][0].shape == (1, 64, 64, 3)
    assert any(line.startswith("int8 calibration: 3/3 images") for line in lines), lines


def test_folder_images_reach_the_converter(tmp_path):
    """A dark folder and a bright one give the uint8 input other ranges; the same folder twice
    gives the same file, byte for byte."""
    config = lraspp_mobilenet_v3_small_shapes.get_config("smoke")
    model = tasks.get_task(config).build_model(config)
    labels = LabelMap.contiguous([f"class_{i}" for i in range(config.model.num_classes)])
    export = tasks.get_task(config).make_export(config, model, labels, SIZE)
    dark = _folder(tmp_path / "dark", high=60)
    bright = _folder(tmp_path / "bright", high=255, seed=1)

    def convert(directory):
        source = Calibration(config, SIZE, 3, directory=directory)
        flatbuffer = tflite.convert(config, export, "int8", representative=source)
        scale, zero_point = Interpreter(model_content=flatbuffer).get_input_details()[0][
            "quantization"
        ]
        return flatbuffer, scale, source.report()

    dark_file, dark_scale, dark_report = convert(dark)
    bright_file, bright_scale, bright_report = convert(bright)
    assert dark_report["images"] == 3 and dark_report["pixel_max"] <= 60
    assert bright_report["pixel_max"] > 200
    # The input range is the range calibration saw: pixel_max / 255 per uint8 step.
    assert dark_scale == pytest.approx(dark_report["pixel_max"] / 255, rel=0.05)
    assert bright_scale == pytest.approx(bright_report["pixel_max"] / 255, rel=0.05)
    assert convert(dark)[0] == dark_file != bright_file


def test_split_source_uses_unaugmented_images():
    config = ssdlite_mobilenet_v3_small_shapes.get_config("smoke")
    config.data.num_eval = 4
    source = Calibration(config, (64, 64), 4, split="eval")
    batches = [b[0] for b in source()]
    expected = tasks.get_task(config).source_images(config, "eval")
    first = next(iter(expected)).numpy().astype(np.float32)
    assert len(batches) == 4 and source.report()["source"].startswith("data split eval")
    if first.shape[:2] == (64, 64):  # shapes pictures at the input size: unchanged pixels
        np.testing.assert_allclose(batches[0][0], first, atol=1e-3)
    with pytest.raises(ValueError, match="data split eval: 4 images, fewer than the 5"):
        list(Calibration(config, (64, 64), 5, split="eval")())


def test_sets_that_cannot_calibrate_are_refused(tmp_path):
    config = ssdlite_mobilenet_v3_small_shapes.get_config("smoke")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: 0 readable images"):
        Calibration(config, SIZE, 3, directory=str(tmp_path / "empty"))
    few = _folder(tmp_path / "few", high=255, count=2)
    (tmp_path / "few" / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="few: 2 readable images, fewer than the 3"):
        Calibration(config, SIZE, 3, directory=few)
    assert Calibration(config, SIZE, 2, directory=few).files == [f"{few}/0.png", f"{few}/1.png"]
    with pytest.raises(FileNotFoundError, match="missing: calibration folder not found"):
        Calibration(config, SIZE, 3, directory=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="at most one"):
        Calibration(config, SIZE, 3, directory=few, split="eval")
