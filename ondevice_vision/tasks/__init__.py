"""Tasks: everything that differs between detection and segmentation, one `Task` object each.

The config's `task` field names one; `get_task(config)` returns its `Task` (tasks/task.py says
what a Task holds). This module's `_TASKS` is the only registry keyed by task name: the trainer,
the evaluator driver, the exporters, the export runners, ondevice-predict and fine-tuning all ask
the Task, and no module outside a task's own files compares a task name
(tests/test_package_layers.py checks it).

    tasks/detection.py     SSDLite (models/ssdlite.py), COCO-style boxes, anchor targets, focal
                           loss; evaluator eval/detection.py, export export/detection.py
    tasks/segmentation.py  LR-ASPP (models/lraspp.py), crops, cross-entropy; evaluator
                           eval/segmentation.py, export export/segmentation.py

A third task is a module that ends in `TASK = task_of_module(__name__, ...)`, its evaluator and
export classes, a line below and its name in configs/checks.py's TASKS.
"""

from __future__ import annotations

import importlib

from ondevice_vision import checkpoints
from ondevice_vision.tasks.task import Task

_TASKS = {
    "detection": "ondevice_vision.tasks.detection",
    "segmentation": "ondevice_vision.tasks.segmentation",
}
TASKS = tuple(_TASKS)


def get_task(config) -> Task:
    """The Task of a config (or of a task name)."""
    name = config.task if hasattr(config, "task") else config
    if name not in _TASKS:
        raise ValueError(f"config.task must be one of {sorted(_TASKS)}, got {name!r}")
    return importlib.import_module(_TASKS[name]).TASK


def load_trained_model(
    config, workdir: str | None, checkpoint: str | None = None, moving_averages: bool = True
):
    """The config's model with a checkpoint's weights -> (model, checkpoint path).

    `checkpoint` (a prefix, a directory or "best") wins over the latest checkpoint of `workdir`;
    the weights' moving averages replace them where the checkpoint has them (train.ema_decay),
    unless `moving_averages` is False.
    """
    if not workdir and not checkpoint:
        raise ValueError("pass --workdir (latest checkpoint) or --checkpoint")
    path = checkpoints.latest_or_given(workdir, checkpoint)
    task = get_task(config)
    model = task.build_model(config)
    checkpoints.restore_weights(model, path, moving_averages)
    # A task may evaluate the trained weights in another network (segmentation: another output
    # stride by dilation, eval.output_stride).
    return task.model_for_eval(config, model), path
