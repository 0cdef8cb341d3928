"""export/tflite.py's graph-archive reuse (its conversions are tested per task and format in the
other tests/export modules)."""

from types import SimpleNamespace

import pytest

from ondevice_vision.export.tflite import GraphArchives


def test_graph_archives_write_each_graph_once_for_one_model(tmp_path):
    model = object()
    written = []

    def write(directory):
        written.append(directory)

    graphs = GraphArchives(str(tmp_path))
    first = SimpleNamespace(model=model, input_size=(128, 128))
    again = SimpleNamespace(model=model, input_size=(128, 128))
    other_size = SimpleNamespace(model=model, input_size=(96, 128))
    path = graphs.path("float", first, write)
    assert graphs.path("float", again, write) == path and written == [path]
    assert graphs.path("float", other_size, write) != path and len(written) == 2
    assert graphs.path("int8", first, write) not in (path, written[1]) and len(written) == 3
    with pytest.raises(ValueError, match="one model's graphs"):
        graphs.path("float", SimpleNamespace(model=object(), input_size=(128, 128)), write)
