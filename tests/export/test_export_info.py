"""--overwrite replaces only what is recognisably one of our exports."""

import os

import pytest

from ondevice_vision.export.export_info import INFO_FILE, check_replaceable


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
