"""A workdir is empty, one of ours (marker), or refused in one line; --adopt_workdir takes it."""

import os

import pytest

from ondevice_vision.workdir_owner import MARKER, claim_workdir


def test_a_folder_of_other_files_is_refused_unless_adopted(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.json").write_text('{"editor": "mine"}')
    (home / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=f"workdir {home}: holds files that are not a run's"):
        claim_workdir(str(home))
    assert sorted(os.listdir(home)) == ["config.json", "notes.txt"]
    claim_workdir(str(home), adopt=True)
    assert os.path.isfile(home / MARKER)
    claim_workdir(str(home))  # ours from now on


def test_new_empty_and_earlier_run_folders_are_ours(tmp_path):
    claim_workdir(str(tmp_path / "new"))
    assert os.listdir(tmp_path / "new") == [MARKER]
    earlier = tmp_path / "earlier"  # a run's folder from before the marker
    (earlier / "checkpoints").mkdir(parents=True)
    (earlier / "config.json").write_text("{}")
    (earlier / ".worker_1_scratch").mkdir()
    claim_workdir(str(earlier))
    assert os.path.isfile(earlier / MARKER)
