"""A task is the model + data contract every tool shares: eval, export, info and the trainer.

The config's `task` field picks one; each module has the same few functions:

    build_model(config)                                     -> keras.Model
    build_dataset(config, split, batch_size, input_context) -> (batched dataset, LabelMap)
    compute_losses(config, outputs, labels)                 -> (per-image loss sums, normaliser)
    predict(config, model, images)                          -> dict of post-processed outputs
    visualize(config, images, predictions, labels, label_map) -> one uint8 picture
    palette(config, num_classes)                            -> class colours for exports, or None
"""

from __future__ import annotations

import importlib

from ondevice_vision import checkpoints

_TASKS = {
    "detection": "ondevice_vision.tasks.detection",
    "segmentation": "ondevice_vision.tasks.segmentation",
}
TASKS = tuple(_TASKS)


def get_task(config):
    """The task module of a config (or of a task name)."""
    name = config.task if hasattr(config, "task") else config
    if name not in _TASKS:
        raise ValueError(f"config.task must be one of {sorted(_TASKS)}, got {name!r}")
    return importlib.import_module(_TASKS[name])


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
    if hasattr(task, "model_for_eval"):
        model = task.model_for_eval(config, model)
    return model, path
