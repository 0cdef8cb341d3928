"""Files that are either complete or absent: write beside the target, then rename over it.

A crash or kill mid-write leaves at most a hidden temporary file, never a truncated result that a
later run or a user would read as valid.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w"):
    """`with atomic_write(path, "wb") as f: ...` — the file appears only if the block succeeds."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(
        dir=directory, prefix="." + os.path.basename(path), suffix=".tmp"
    )
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def write_json(data, path: str, **dump_options) -> str:
    with atomic_write(path, "w") as f:
        json.dump(data, f, **dump_options)
    return path


def write_png(image, path: str) -> str:
    from PIL import Image

    with atomic_write(path, "wb") as f:
        Image.fromarray(image).save(f, format="PNG")
    return path
