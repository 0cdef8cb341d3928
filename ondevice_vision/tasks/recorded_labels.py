"""The label map a training run records in its workdir, which export and eval then go by.

A model's class index k means what it meant in the data that trained it. The config's data at
export or eval time can say otherwise (another eval_dir, a renamed class, a dataset that is not on
this machine at all), so the trainer and `ondevice-import` write WORKDIR/labels.json once;
`ondevice-export` puts that map into every export without reading the data, and `ondevice-eval`
refuses data whose map differs unless told (`--allow_other_label_map`). Workdirs from before this
file existed fall back to the config's map (tasks' `label_map(config)`, which reads no image).
"""

from __future__ import annotations

import os

from absl import logging

from ondevice_vision import files
from ondevice_vision.data.label_map import UNUSED_PREFIX, LabelMap

LABELS_FILE = "labels.json"
ALLOW_FLAG = "--allow_other_label_map"


def labels_path(workdir: str) -> str:
    return os.path.join(workdir, LABELS_FILE)


def recorded(workdir: str | None) -> LabelMap | None:
    """The label map the run in `workdir` recorded, or None (no workdir, or none recorded)."""
    if not workdir or not files.exists(labels_path(workdir)):
        return None
    try:
        return LabelMap.load(labels_path(workdir))
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{labels_path(workdir)}: unreadable label map: {e}") from e


def difference(expected: LabelMap, other: LabelMap) -> str | None:
    """Where `other` first contradicts `expected`, in words, or None. A slot `other` leaves
    unused (a COCO subset without some categories) contradicts nothing."""
    if expected.num_classes != other.num_classes:
        return f"{expected.num_classes} classes vs {other.num_classes}"
    for i, (a, b) in enumerate(zip(expected.items(), other.items(), strict=True)):
        if a[0] != b[0] or (a[1] != b[1] and not b[1].startswith(UNUSED_PREFIX)):
            return f"class {i} is {a[1]!r} (id {a[0]}) vs {b[1]!r} (id {b[0]})"
    return None


def record(workdir: str, label_map: LabelMap, what: str = "the training data") -> None:
    """Writes WORKDIR/labels.json, or checks that the one there equals `label_map`."""
    existing = recorded(workdir)
    if existing is None:
        files.makedirs(workdir)
        label_map.save(labels_path(workdir))
        return
    if difference(existing, label_map):
        raise ValueError(
            f"{labels_path(workdir)}: this run's classes differ from {what}'s "
            f"({difference(existing, label_map)}); train into a new workdir, or delete the file "
            "if the classes really changed"
        )


def check(workdir: str | None, label_map: LabelMap, what: str, allow: bool = False) -> None:
    """Refuses `label_map` (of `what`) when it differs from the recorded one, unless `allow`."""
    existing = recorded(workdir)
    if existing is None or not difference(existing, label_map):
        return
    message = (
        f"{labels_path(workdir)}: the model was trained with other classes than {what} names "
        f"({difference(existing, label_map)})"
    )
    if allow:
        logging.warning("%s; going on as %s asks", message, ALLOW_FLAG)
        return
    raise ValueError(f"{message}; pass {ALLOW_FLAG} to use them anyway")


def trained_label_map(
    config, workdir: str | None, label_map_file: str | None = None, allow_other: bool = False
) -> LabelMap:
    """The label map of a trained model: `label_map_file` if given (checked against the recorded
    one), else the recorded one, else the config's (which reads no image)."""
    from ondevice_vision.tasks import get_task

    if label_map_file:
        given = LabelMap.load(label_map_file)
        check(workdir, given, label_map_file, allow_other)
        return given
    existing = recorded(workdir)
    if existing is not None:
        return existing
    return get_task(config).label_map(config)
