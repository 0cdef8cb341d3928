"""What travels inside every export directory besides the model: `labels.json` and `export.json`.

    OUT/saved_model.pb, OUT/variables/   (format saved_model)
    OUT/model.tflite                     (format tflite)
    OUT/labels.json   LabelMap: model class index -> dataset id and name
    OUT/export.json   task, format, quantization, input size, palette, signatures, provenance
    OUT/anchors.npy   detection with --postprocess=none only: the anchors the raw outputs decode with

Both are plain JSON, so a server or phone app reads them without this package.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from ondevice_vision import files, tasks
from ondevice_vision.data.label_map import LabelMap

INFO_FILE = "export.json"
LABELS_FILE = "labels.json"
TFLITE_FILE = "model.tflite"
# Detection exports without the post-processing op (--postprocess=none): the anchors to decode with.
ANCHORS_FILE = "anchors.npy"
# Everything an export writes at its top level (a SavedModel's own files and ours); --overwrite
# refuses a folder holding anything else, as replacing it would delete the user's file.
EXPORT_NAMES = frozenset(
    {
        INFO_FILE,
        LABELS_FILE,
        TFLITE_FILE,
        ANCHORS_FILE,
        "saved_model.pb",
        "fingerprint.pb",
        "variables",
        "assets",
    }
)
FORMATS = ("saved_model", "tflite")
QUANTIZATIONS = ("none", "fp16", "int8")


@dataclasses.dataclass(frozen=True)
class ExportInfo:
    task: str
    format: str
    quantization: str = "none"
    # (height, width) the network runs at; None: a segmentation SavedModel at the image's own size.
    input_size: tuple[int, int] | None = None
    num_classes: int = 0
    # Segmentation: uint8 [K, 3] colours per class index (Cityscapes palette for Cityscapes data).
    palette: tuple[tuple[int, int, int], ...] | None = None
    signatures: tuple[str, ...] = ()
    # Free-form details: checkpoint, NMS settings, TFLite input/output types...
    extra: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.task not in tasks.TASKS:
            raise ValueError(f"export task must be one of {tasks.TASKS}, got {self.task!r}")
        if self.format not in FORMATS:
            raise ValueError(f"export format must be one of {FORMATS}, got {self.format!r}")
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(
                f"quantization must be one of {QUANTIZATIONS}, got {self.quantization!r}"
            )

    def to_json(self) -> str:
        payload = dataclasses.asdict(self)
        return json.dumps(payload, indent=1, default=str)

    @classmethod
    def from_json(cls, text: str) -> ExportInfo:
        payload = json.loads(text)
        if payload.get("input_size") is not None:
            payload["input_size"] = tuple(int(v) for v in payload["input_size"])
        if payload.get("palette") is not None:
            payload["palette"] = tuple(tuple(int(c) for c in rgb) for rgb in payload["palette"])
        payload["signatures"] = tuple(payload.get("signatures", ()))
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in fields})


def check_replaceable(export_dir: str, overwrite: bool) -> None:
    """--overwrite replaces only what is recognisably one of our exports (it has export.json):
    pointed at a folder of photos or a home directory by mistake, it must not delete them."""
    if not os.path.lexists(export_dir):
        return
    if not overwrite:
        raise FileExistsError(f"{export_dir}: already exists (pass --overwrite to replace it)")
    if os.path.islink(export_dir) or not os.path.isdir(export_dir):
        raise FileExistsError(f"{export_dir}: exists and is not an export directory; not replaced")
    entries = os.listdir(export_dir)
    if entries and not os.path.isfile(os.path.join(export_dir, INFO_FILE)):
        raise FileExistsError(
            f"{export_dir}: exists and holds no {INFO_FILE}, so it is not an ondevice-export "
            "directory; refusing to replace it (choose another --export_dir)"
        )
    foreign = sorted(e for e in entries if e not in EXPORT_NAMES)
    if foreign:
        raise FileExistsError(
            f"{export_dir}: holds files an export does not write ({', '.join(foreign[:5])}"
            f"{f' and {len(foreign) - 5} more' if len(foreign) > 5 else ''}); replacing the "
            "folder would delete them: move them out or choose another --export_dir"
        )


def write_export_files(
    directory: str, info: ExportInfo, label_map: LabelMap, arrays: dict | None = None
) -> None:
    """labels.json, export.json and `arrays` (name -> NumPy array, saved with np.save)."""
    if label_map.num_classes != info.num_classes:
        raise ValueError(
            f"label map has {label_map.num_classes} classes but the model predicts "
            f"{info.num_classes}"
        )
    label_map.save(os.path.join(directory, LABELS_FILE))
    for name, array in (arrays or {}).items():
        with files.atomic_write(os.path.join(directory, name), "wb") as f:
            np.save(f, array)
    with files.atomic_write(os.path.join(directory, INFO_FILE)) as f:
        f.write(info.to_json())


def read_export_files(directory: str) -> tuple[ExportInfo, LabelMap]:
    """The ExportInfo and LabelMap of an export directory; clear errors naming missing files."""
    info_path = os.path.join(directory, INFO_FILE)
    labels_path = os.path.join(directory, LABELS_FILE)
    for path in (info_path, labels_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path} not found: {directory} is not an ondevice-export directory"
            )
    try:
        info = ExportInfo.from_json(files.read_text(info_path))
        label_map = LabelMap.load(labels_path)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{directory}: unreadable {INFO_FILE} / {LABELS_FILE}: {e}") from e
    return info, label_map
