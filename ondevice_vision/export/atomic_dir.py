"""Write a directory atomically: build it under a temporary name beside the target, then rename.

A crash (or an exception) while exporting leaves at most a hidden `.NAME.tmp-*` directory next to
the target, never a half-written model at the target itself. Replacing an existing export swaps the
directories with two renames, so a reader sees the old or the new export, never a mix.
Local filesystems only: object stores (gs://) have no atomic directory rename.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile


@contextlib.contextmanager
def atomic_directory(target: str, overwrite: bool = False):
    """Yields a fresh temporary directory that becomes `target` when the block exits cleanly.

    Raises FileExistsError (before any work is done) when `target` exists and `overwrite` is False.
    """
    target = os.path.abspath(target)
    if "://" in target:
        raise ValueError(f"atomic export needs a local directory, got {target}")
    if os.path.lexists(target) and not overwrite:
        raise FileExistsError(f"export directory {target} already exists (pass --overwrite)")
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(target)}.tmp-")
    try:
        yield tmp
        _replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace(new: str, target: str) -> None:
    if not os.path.lexists(target):
        os.rename(new, target)
        return
    old = tempfile.mkdtemp(dir=os.path.dirname(target), prefix=f".{os.path.basename(target)}.old-")
    os.rmdir(old)  # only the unique name is wanted; rename needs it free
    os.rename(target, old)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
