"""The config's `task` field picks a task module; each has the same few functions.

build_model(config), build_dataset(config, split, batch_size, input_context=None),
compute_losses(config, outputs, labels) -> (per-example loss sums, per-example normaliser),
predict(config, model, images), make_evaluator(config, label_map), visualize(...).
"""

from __future__ import annotations

import importlib

_TASKS = {
    "detection": "ondevice_vision.train.detection_task",
    "segmentation": "ondevice_vision.train.segmentation_task",
}


def get_task(config):
    name = config.task if hasattr(config, "task") else config
    if name not in _TASKS:
        raise ValueError(f"config.task must be one of {sorted(_TASKS)}, got {name!r}")
    return importlib.import_module(_TASKS[name])
