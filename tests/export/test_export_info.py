"""--overwrite replaces only what is recognisably one of our exports."""

import os

import pytest

from ondevice_vision.data.label_map import LabelMap
from ondevice_vision.export.export_info import INFO_FILE, check_replaceable
from ondevice_vision.export.exported_model import load_exported_model


def test_overwrite_refuses_a_folder_that_is_not_an_export(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(FileExistsError, match=f"{photos}: exists and holds no export.json"):
        check_replaceable(str(photos), overwrite=True)
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        check_replaceable(str(photos), overwrite=False)
    assert os.listdir(photos) == ["holiday.jpg"]
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(FileExistsError, match="not an export directory"):
        check_replaceable(str(tmp_path / "a_file"), overwrite=True)


def test_overwrite_accepts_an_export_an_empty_folder_or_nothing(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    (export / INFO_FILE).write_text("{}")
    check_replaceable(str(export), overwrite=True)
    (tmp_path / "empty").mkdir()
    check_replaceable(str(tmp_path / "empty"), overwrite=True)
    check_replaceable(str(tmp_path / "missing"), overwrite=False)


def test_overwrite_refuses_an_export_holding_files_it_did_not_write(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    for name in (INFO_FILE, "labels.json", "model.tflite"):
        (export / name).write_text("{}")
    (export / "model_edgetpu.tflite").write_bytes(b"compiled by the user")
    (export / "notes.txt").write_text("mine")
    with pytest.raises(
        FileExistsError,
        match=f"{export}: holds files an export does not write \\(model_edgetpu.tflite, "
        "notes.txt\\)",
    ):
        check_replaceable(str(export), overwrite=True)
    assert (export / "notes.txt").read_text() == "mine"


def test_a_malformed_label_map_names_the_file(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text('{"names": ["a"]}')
    with pytest.raises(ValueError, match=f"{path}: not a label map .*missing key 'classes'"):
        LabelMap.load(str(path))
    path.write_text("{not json")
    with pytest.raises(ValueError, match=f"{path}: malformed JSON"):
        LabelMap.load(str(path))
    path.write_bytes(b'\xef\xbb\xbf{"classes": [{"index": 0, "id": 1, "name": "cat"}]}')
    assert LabelMap.load(str(path)).names == ("cat",)


def test_a_malformed_tflite_file_names_the_file(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    (export / "model.tflite").write_bytes(b"not a flatbuffer" * 8)
    (export / "labels.json").write_text('{"classes": [{"index": 0, "id": 0, "name": "a"}]}')
    (export / INFO_FILE).write_text('{"task": "detection", "format": "tflite", "num_classes": 1}')
    with pytest.raises(ValueError, match=f"{export}/model.tflite: not a readable TFLite model"):
        load_exported_model(str(export / "model.tflite"))
