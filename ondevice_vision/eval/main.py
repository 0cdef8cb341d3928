"""`ondevice-eval`: COCO mAP or mIoU of a checkpoint, a SavedModel export or a TFLite export.

    ondevice-eval --config=CONFIG --workdir=DIR                 # latest checkpoint in DIR
    ondevice-eval --config=CONFIG --saved_model=EXPORT_DIR [--workdir=RESULTS_DIR]
    ondevice-eval --config=CONFIG --tflite=EXPORT_DIR/model.tflite [--workdir=RESULTS_DIR]

The config names the dataset and the evaluation settings. With --workdir the metrics are written to
WORKDIR/metrics.json and TensorBoard (WORKDIR/eval); they are always printed as one JSON object on
the last line of stdout. Exported models are fed the same eval images as checkpoints (as uint8,
the exports' input type), and their detections are mapped from dataset ids back to model indices,
so the metrics and their JSON are the same as for a checkpoint.
"""

from __future__ import annotations

import json

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS


def define_flags():
    """Called by run(): importing this module (train/main.py, tests) defines no flags."""
    config_flags.DEFINE_config_file("config", None, "Experiment config file (path[:arg]).")
    flags.DEFINE_string("workdir", None, "Training workdir (checkpoints/ inside); results go here.")
    flags.DEFINE_string("checkpoint", None, "A checkpoint prefix or directory (default: latest).")
    flags.DEFINE_string("saved_model", None, "Evaluate this SavedModel export directory instead.")
    flags.DEFINE_string("tflite", None, "Evaluate this TFLite model (or its export directory).")
    flags.DEFINE_integer("num_threads", None, "TFLite interpreter threads (default: TFLite's).")
    flags.mark_flags_as_required(["config"])


def evaluate_checkpoint(config, workdir: str, checkpoint: str | None = None) -> dict:
    import tensorflow as tf

    from ondevice_vision.train import checkpointing, loop, tasks

    path = checkpointing.latest_or_given(workdir, checkpoint)
    model = tasks.get_task(config).build_model(config)
    tf.train.Checkpoint(model=model).read(path).expect_partial().assert_existing_objects_matched()
    step = _step_of(path)
    metrics = loop.evaluate(config, model, workdir, step)
    return {"checkpoint": path, "step": step, **metrics}


def exported_predict_fn(exported):
    """loop.evaluate's predict_fn for an ExportedModel: eval images in, model-index outputs out."""
    import numpy as np
    import tensorflow as tf

    def predict(images):
        pixels = np.clip(np.rint(images.numpy()), 0, 255).astype(np.uint8)
        outputs = exported.predict(pixels)
        if exported.task == "detection":
            outputs["detection_classes"] = exported.to_contiguous(
                outputs["detection_classes"], outputs["num_detections"]
            )
        return {k: tf.constant(v) for k, v in outputs.items()}

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
    from ondevice_vision.train import loop, tasks

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
        loop.check_workdir(workdir)
    metrics = loop.evaluate(config, None, workdir, None, predict_fn=exported_predict_fn(exported))
    info = exported.info
    return {
        "model": model_path,
        "format": info.format,
        "quantization": info.quantization,
        **metrics,
    }


def _step_of(path: str):
    tail = path.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def main(argv):
    del argv
    exported = [
        (p, f) for p, f in ((FLAGS.saved_model, "saved_model"), (FLAGS.tflite, "tflite")) if p
    ]
    if len(exported) > 1:
        raise app.UsageError("pass at most one of --saved_model and --tflite")
    if exported:
        if FLAGS.checkpoint:
            raise app.UsageError("--checkpoint does not apply to --saved_model / --tflite")
        ((path, fmt),) = exported
        result = evaluate_exported(FLAGS.config, path, FLAGS.workdir, FLAGS.num_threads, fmt)
    else:
        if not FLAGS.workdir:
            raise app.UsageError("--workdir is required to evaluate a checkpoint")
        result = evaluate_checkpoint(FLAGS.config, FLAGS.workdir, FLAGS.checkpoint)
    print(json.dumps(result, default=str))


def run():
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
