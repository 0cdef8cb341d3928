"""The export class of each task: `task_export(config, model, label_map, ...)`."""

from __future__ import annotations

from ondevice_vision.export.detection import DetectionExport
from ondevice_vision.export.segmentation import SegmentationExport

EXPORTS = {"detection": DetectionExport, "segmentation": SegmentationExport}


def export_class(task: str):
    if task not in EXPORTS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(EXPORTS)}")
    return EXPORTS[task]


def task_export(config, model, label_map, input_size=None, **options):
    """The task's export object (serving functions, TFLite graph, details)."""
    if label_map.num_classes != config.model.num_classes:
        raise ValueError(
            f"label map has {label_map.num_classes} classes but model.num_classes is "
            f"{config.model.num_classes}"
        )
    return export_class(config.task)(config, model, label_map, input_size=input_size, **options)
