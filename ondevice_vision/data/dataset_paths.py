"""File names taken from a dataset, made safe to open and to hand to TensorFlow.

- Confinement: a file name written in an annotation file (COCO `file_name`, VOC `<filename>`, a
  VOC image-set line) must name a file under the dataset folder. An absolute name, or one whose
  `..` parts climb out of the folder, is an error naming the annotation file and the name: such a
  name would make us read (and train on, or leak through predictions) any file on the machine.
  The check is on the name, not on where symbolic links lead: a link inside the folder is the
  folder owner's own choice (datasets often link `images/` to other storage) and is followed.
- Encoding: POSIX file names are bytes. Python hands undecodable ones (Latin-1 names, say) to us
  as `str` with surrogate escapes, which `tf.constant` refuses with a message that names no file.
  Paths therefore go to TensorFlow as the file system's own bytes (`os.fsencode`), and every such
  file is read like any other.
"""

from __future__ import annotations

import os
from collections.abc import Sequence


def join_inside(directory: str, name: str, source: str) -> str:
    """`directory/name`; ValueError naming `source` and `name` when `name` leads outside it."""
    normalised = os.path.normpath(name)
    if os.path.isabs(name) or normalised == ".." or normalised.startswith(".." + os.sep):
        raise ValueError(
            f"{source}: file name {name!r} points outside the dataset folder {directory}; "
            "file names must be relative paths inside it"
        )
    return os.path.join(directory, name)


def tf_paths(paths: Sequence[str]) -> list[bytes]:
    """Paths as the bytes the file system stores (any name, UTF-8 or not, reaches TensorFlow)."""
    return [os.fsencode(p) for p in paths]
