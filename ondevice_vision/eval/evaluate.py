"""The evaluate driver: a checkpoint, an in-memory model or an export -> metrics on disk.

    metrics = evaluate(config, model, workdir, step)          # what train_and_eval calls
    evaluate_checkpoint(config, workdir)                      # ondevice-eval
    evaluate_exported(config, "exports/x/model.tflite")       # ondevice-eval --tflite=...

Writes WORKDIR/metrics.json (and eval/metrics_STEP.json), TensorBoard scalars and a picture of
the first predictions under WORKDIR/eval, all through tf.io.gfile (gs:// workdirs work).
"""

from __future__ import annotations

import math
import os

import numpy as np
import tensorflow as tf
from absl import logging

from ondevice_vision import checkpoints, files, tasks
from ondevice_vision.eval.validation_loss import validation_loss
from ondevice_vision.tasks import recorded_labels


def evaluate(
    config,
    model,
    workdir: str | None,
    step: int | None = None,
    predict_fn=None,
    allow_other_label_map: bool = False,
) -> dict:
    """Runs the task's evaluator over the eval split; writes metrics JSON, summaries, pictures.

    `predict_fn(images) -> outputs` replaces the model (exported models use this). Eval data whose
    label map differs from the one the run recorded in `workdir` is refused unless
    `allow_other_label_map` (tasks/recorded_labels.py).
    """
    task = tasks.get_task(config)
    dataset, label_map = task.build_dataset(config, "eval", config.eval.batch_size)
    if predict_fn is None:
        recorded_labels.check(workdir, label_map, "the eval data", allow_other_label_map)
    evaluator = task.make_evaluator(config, label_map)
    if predict_fn is None:
        predict_fn = tf.function(
            lambda images: task.predict(config, model, images), autograph=False
        )

    def visualize(images, predictions, labels):
        return task.visualize(config, images, predictions, labels, label_map)

    total = config.eval.max_images or _known_length(dataset, config.eval.batch_size)
    metrics = evaluator.run(dataset, predict_fn, visualize, total_images=total)
    warn_if_nothing_scored(metrics, evaluator.num_images)
    if model is not None and config.eval.get("validation_loss", True):
        metrics.update(validation_loss(config, model, dataset))
    if workdir:
        _write_results(workdir, step, metrics, evaluator)
    return metrics


def check_eval_split(config) -> None:
    """Reads the eval split's source as evaluation will (every file checked), before training:
    a missing, empty or imageless eval split otherwise surfaces after the whole run."""
    dataset, _ = tasks.get_task(config).build_dataset(config, "eval", config.eval.batch_size)
    if int(dataset.cardinality()) == 0:
        raise ValueError(
            f"config.data: the eval split of data source {config.data.source!r} is empty"
        )


def warn_if_nothing_scored(metrics: dict, num_images: int) -> bool:
    """A loud warning when every headline metric is -1 (COCOeval's "nothing to score": no
    ground-truth box in the split) or NaN (mIoU with no labelled pixel), or no image was
    evaluated; returns whether it warned."""
    scores = [v for k, v in metrics.items() if isinstance(v, float) and not k.startswith("loss")]
    if num_images and not (scores and all(v == -1 or math.isnan(v) for v in scores)):
        return False
    logging.warning(
        "NOTHING WAS SCORED: %d eval images, every metric is -1 or NaN (%s). The eval split has no "
        "ground-truth labels (or none the model's classes cover): these numbers mean nothing.",
        num_images,
        ", ".join(f"{k}={v}" for k, v in list(metrics.items())[:4] if isinstance(v, float)),
    )
    return True


def _known_length(dataset, batch_size: int) -> int | None:
    batches = int(dataset.cardinality())
    return batches * batch_size if batches > 0 else None


def _write_results(workdir: str, step: int | None, metrics: dict, evaluator) -> None:
    eval_dir = os.path.join(workdir, "eval")
    files.makedirs(eval_dir)
    payload = {"step": step, "num_images": evaluator.num_images, **metrics}
    files.write_json(payload, os.path.join(workdir, "metrics.json"))
    if step is not None:
        files.write_json(payload, os.path.join(eval_dir, f"metrics_{step}.json"))
    evaluator.write(eval_dir)
    pictures = evaluator.pictures
    figures = evaluator.figures()
    writer = tf.summary.create_file_writer(eval_dir)
    with writer.as_default(step=step or 0):
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and v is not None and np.isfinite(v):
                tf.summary.scalar(f"metrics/{k}", v)
        for k, v in metrics.items():
            # Beside the training run's loss/<term> curves (TensorBoard overlays the runs).
            if k.startswith("val_") and k != "val_loss":
                tf.summary.scalar(f"loss/{k[4:]}", v)
        for k, v in evaluator.scalars(metrics).items():
            if v is not None and np.isfinite(v):
                tf.summary.scalar(k, v)
        if pictures is not None:
            tf.summary.image("predictions", pictures[np.newaxis], step=step or 0)
        for name, picture in figures.items():
            tf.summary.image(name, picture[np.newaxis], step=step or 0)
    writer.flush()
    suffix = f"_{step}" if step is not None else ""
    if pictures is not None:
        files.write_png(pictures, os.path.join(eval_dir, f"predictions{suffix}.png"))
    for name, picture in figures.items():
        files.write_png(picture, os.path.join(eval_dir, f"{name}{suffix}.png"))


def evaluate_checkpoint(
    config,
    workdir: str,
    checkpoint: str | None = None,
    allow_other_label_map: bool = False,
    moving_averages: bool = True,
) -> dict:
    """Metrics of the latest (or the given) checkpoint; results written to `workdir`."""
    model, path = tasks.load_trained_model(config, workdir, checkpoint, moving_averages)
    step = checkpoints.step_of(path)
    metrics = evaluate(config, model, workdir, step, allow_other_label_map=allow_other_label_map)
    return {"checkpoint": path, "step": step, **metrics}


def exported_predict_fn(exported):
    """evaluate's predict_fn for an ExportRunner: eval images in, model-index outputs out."""

    def predict(images):
        pixels = np.clip(np.rint(np.asarray(images)), 0, 255).astype(np.uint8)
        return exported.predict_model_indices(pixels)

    return predict


def evaluate_exported(
    config,
    model_path: str,
    workdir: str | None = None,
    num_threads: int | None = None,
    expect_format: str | None = None,
) -> dict:
    """Metrics of a SavedModel / TFLite export on the config's eval data."""
    from ondevice_vision.export.exported_model import load_exported_model

    exported = load_exported_model(model_path, num_threads=num_threads)
    if expect_format and exported.info.format != expect_format:
        raise ValueError(f"{model_path} is a {exported.info.format} export, not {expect_format}")
    if exported.task != config.task:
        raise ValueError(f"{model_path} is a {exported.task} model but the config is {config.task}")
    _, data_label_map = tasks.get_task(config).build_dataset(config, "eval", 1)
    if tuple(data_label_map.dataset_ids) != tuple(exported.label_map.dataset_ids):
        raise ValueError(
            f"{model_path} predicts classes {exported.label_map.names[:5]}... (ids "
            f"{exported.label_map.dataset_ids[:5]}...) but the eval data has "
            f"{data_label_map.names[:5]}... (ids {data_label_map.dataset_ids[:5]}...)"
        )
    if workdir:
        files.check_writable_dir(workdir)
    metrics = evaluate(config, None, workdir, None, predict_fn=exported_predict_fn(exported))
    info = exported.info
    return {
        "model": model_path,
        "format": info.format,
        "quantization": info.quantization,
        **metrics,
    }
