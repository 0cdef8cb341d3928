"""The export / predict CLIs' argument handling and their errors on bad paths (no models built)."""

from __future__ import annotations

import pytest

from ondevice_vision.configs import (
    lraspp_mobilenet_v3_large_cityscapes,
    lraspp_mobilenet_v3_small_shapes,
    ssdlite_mobilenet_v3_large_320_coco,
)
from ondevice_vision.data.label_map import LabelMap
from ondevice_vision.export.export_info import ExportInfo, read_export_files, write_export_files
from ondevice_vision.export.exported_model import load_exported_model
from ondevice_vision.export.main import export, parse_size, resolve_input_size
from ondevice_vision.predict import list_inputs, output_name


def test_parse_size():
    assert parse_size("1024,2048") == (1024, 2048)
    assert parse_size("320x320") == (320, 320)
    assert parse_size("320") == (320, 320)  # the same parser as ondevice-info's
    assert parse_size(None) is None
    for bad in ("a,b", "0,10", "1,2,3", "-5"):
        with pytest.raises(ValueError, match="--input_size"):
            parse_size(bad)


def test_input_size_defaults():
    detection = ssdlite_mobilenet_v3_large_320_coco.get_config()
    cityscapes = lraspp_mobilenet_v3_large_cityscapes.get_config()
    assert resolve_input_size(detection, None, "saved_model") == (320, 320)
    assert resolve_input_size(detection, (300, 400), "tflite") == (300, 400)
    # Segmentation SavedModels run at each image's size; TFLite needs a fixed one.
    assert resolve_input_size(cityscapes, None, "saved_model") is None
    assert resolve_input_size(cityscapes, None, "tflite") == (1024, 2048)
    shapes = lraspp_mobilenet_v3_small_shapes.get_config()
    del shapes.model["input_size"]
    assert resolve_input_size(shapes, None, "tflite") == (128, 128)  # data.crop_size


def test_quantization_needs_tflite(tmp_path):
    config = ssdlite_mobilenet_v3_large_320_coco.get_config()
    with pytest.raises(ValueError, match="--format=tflite"):
        export(config, None, None, str(tmp_path / "x"), fmt="saved_model", quantization="int8")
    with pytest.raises(ValueError, match="format must be"):
        export(config, None, None, str(tmp_path / "x"), fmt="onnx")


def test_predict_inputs(tmp_path):
    (tmp_path / "b.PNG").write_bytes(b"")
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "readme.md").write_text("x")
    assert list_inputs(str(tmp_path)) == [str(tmp_path / "a.jpg"), str(tmp_path / "b.PNG")]
    assert list_inputs(str(tmp_path / "a.jpg")) == [str(tmp_path / "a.jpg")]
    with pytest.raises(FileNotFoundError, match="missing"):
        list_inputs(str(tmp_path / "missing"))
    assert output_name("/x/photo.jpg") != output_name("/x/photo.png")
    assert output_name("/x/a.b.jpg") != output_name("/x/a_b.jpg")


def test_loading_something_that_is_not_an_export(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_exported_model(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="neither saved_model.pb nor model.tflite"):
        load_exported_model(str(tmp_path))
    (tmp_path / "saved_model.pb").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="export.json not found"):
        load_exported_model(str(tmp_path))
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(ValueError, match="expected a .tflite file"):
        load_exported_model(str(tmp_path / "model.onnx"))


def test_export_files_round_trip(tmp_path):
    labels = LabelMap(("person", "car"), (1, 3))
    info = ExportInfo(
        task="segmentation",
        format="tflite",
        quantization="int8",
        input_size=(64, 96),
        num_classes=2,
        palette=((1, 2, 3), (4, 5, 6)),
        signatures=("serving_default",),
        extra={"checkpoint": "ckpt-3"},
    )
    write_export_files(str(tmp_path), info, labels)
    assert read_export_files(str(tmp_path)) == (info, labels)
    with pytest.raises(ValueError, match="label map has 2 classes but the model predicts 3"):
        write_export_files(str(tmp_path), ExportInfo("detection", "tflite", num_classes=3), labels)
    with pytest.raises(ValueError, match="quantization must be one of"):
        ExportInfo("detection", "tflite", quantization="int4")
    (tmp_path / "export.json").write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        read_export_files(str(tmp_path))
