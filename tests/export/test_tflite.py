"""int8 calibration reports its progress (it reads many training images)."""

from ondevice_vision.configs import ssdlite_mobilenet_v3_small_shapes
from ondevice_vision.export import tflite
from ondevice_vision.export.tflite import representative_images


def test_calibration_shows_progress(monkeypatch):
    lines = []
    monkeypatch.setattr(tflite.logging, "info", lambda msg, *a: lines.append(msg % a))
    config = ssdlite_mobilenet_v3_small_shapes.get_config("smoke")
    batches = list(representative_images(config, (64, 64), 3)())
    assert len(batches) == 3 and batches[0][0].shape == (1, 64, 64, 3)
    assert any(line.startswith("int8 calibration: 3/3 images") for line in lines), lines
