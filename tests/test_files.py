"""Atomic, permission-correct, link-safe writes (local and through tf.io.gfile)."""

import os
import socket
import stat
import subprocess
import sys

import pytest
import tensorflow as tf

from ondevice_vision import files

_OUT = {"capture_output": True, "text": True, "check": True}


def test_atomic_write_never_leaves_a_partial_file(tmp_path):
    target = tmp_path / "metrics.json"
    files.write_json({"a": 1}, str(target))
    with pytest.raises(RuntimeError):
        with files.atomic_write(str(target)) as f:
            f.write('{"a": 2')
            raise RuntimeError("killed mid-write")
    assert files.read_json(str(target)) == {"a": 1}
    assert sorted(os.listdir(tmp_path)) == ["metrics.json"]


def test_a_planted_link_at_a_predictable_temporary_name_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    # The old scheme wrote NAME.tmp-<pid>: an attacker could plant that name as a link.
    for name in (f"out.json.tmp-{os.getpid()}", ".out.json.tmp", f".write-test-{os.getpid()}"):
        os.symlink(victim, tmp_path / name)
    files.write_json({"ok": True}, str(tmp_path / "out.json"))
    files.check_writable_dir(str(tmp_path))
    assert victim.read_text() == "precious"
    assert files.read_json(str(tmp_path / "out.json")) == {"ok": True}


def test_outputs_get_the_usual_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        path = files.write_json({}, str(tmp_path / "labels.json"))
        png = files.write_png(tf.zeros([4, 4, 3], tf.uint8).numpy(), str(tmp_path / "p.png"))
        with files.atomic_directory(str(tmp_path / "export")) as tmp:
            files.write_json({}, os.path.join(tmp, "export.json"))
    finally:
        os.umask(previous)
    for p in (path, png, str(tmp_path / "export" / "export.json")):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o644, p
    assert stat.S_IMODE(os.stat(tmp_path / "export").st_mode) == 0o755


def test_remote_paths_go_through_gfile():
    path = "ram://files_test/dir/a.json"
    files.write_json({"x": [1, 2]}, path)
    assert files.read_json(path) == {"x": [1, 2]}
    assert tf.io.gfile.listdir("ram://files_test/dir") == ["a.json"]


def test_interrupted_directory_writes_are_cleaned_up_next_time(tmp_path):
    target = tmp_path / "export"
    (tmp_path / ".export.tmp-abc123").mkdir()  # what a killed export leaves
    (tmp_path / ".export.tmp-abc123" / "saved_model.pb").write_bytes(b"half")
    (tmp_path / "notes").mkdir()
    with files.atomic_directory(str(target)) as tmp:
        (open(os.path.join(tmp, "x"), "w")).close()
    assert sorted(os.listdir(tmp_path)) == ["export", "notes"]


def test_a_live_writers_temporary_folder_is_not_a_leftover(tmp_path):
    """Two exports to one folder at once: neither deletes the other's folder in progress."""
    target = tmp_path / "export"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], **_OUT)
    host = socket.gethostname()
    live = tmp_path / f".export.tmp-{host}~{os.getppid()}~x1"  # the test runner's parent
    gone = tmp_path / f".export.tmp-{host}~{int(dead.stdout)}~x2"  # a process that has ended
    elsewhere = tmp_path / f".export.old-another-host~{int(dead.stdout)}~x3"
    for folder in (live, gone, elsewhere):
        folder.mkdir()
    removed = files.remove_leftovers(str(target))
    assert removed == [str(gone)]
    assert live.exists() and elsewhere.exists()
    with files.atomic_directory(str(target)) as tmp:
        assert os.path.basename(tmp).startswith(f".export.tmp-{host}~{os.getpid()}~")
