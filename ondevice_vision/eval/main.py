"""`ondevice-eval`: COCO mAP or mIoU of a checkpoint, a SavedModel export or a TFLite export.

    ondevice-eval --config=CONFIG --workdir=DIR                 # latest checkpoint in DIR
    ondevice-eval --config=CONFIG --saved_model=EXPORT_DIR [--workdir=RESULTS_DIR]
    ondevice-eval --config=CONFIG --tflite=EXPORT_DIR/model.tflite [--workdir=RESULTS_DIR]
    ondevice-eval --config=CONFIG --workdir=DIR --watch [--watch_timeout=600]   # evaluator job
    ondevice-eval --config=CONFIG --workdir=DIR --checkpoint=best   # the run's best checkpoint
    ondevice-eval --config=CITYSCAPES_CONFIG --workdir=DIR --config.data.eval_split=test \
        --cityscapes_submission=submission/      # test-server PNGs + submission.zip

The config names the dataset and the evaluation settings. With --workdir the metrics are written to
WORKDIR/metrics.json and TensorBoard (WORKDIR/eval); they are always printed as one JSON object on
the last line of stdout. Exported models are fed the same eval images as checkpoints (as uint8,
the exports' input type), and their detections are mapped from dataset ids back to model indices,
so the metrics and their JSON are the same as for a checkpoint.
"""

from __future__ import annotations

import json
import os

from absl import app, flags
from ml_collections import config_flags

from ondevice_vision import cli

FLAGS = flags.FLAGS


def define_flags():
    """Called by run(): importing this module (train/main.py, tests) defines no flags."""
    config_flags.DEFINE_config_file("config", None, "Experiment config file (path[:arg]).")
    flags.DEFINE_string("workdir", None, "Training workdir (checkpoints/ inside); results go here.")
    flags.DEFINE_string(
        "checkpoint",
        None,
        "A checkpoint prefix or directory, or 'best' (WORKDIR/checkpoints/best) (default: latest).",
    )
    flags.DEFINE_bool(
        "watch",
        False,
        "Score each new checkpoint of the run in --workdir as it appears (once each), keeping the "
        "best; ends at train.total_steps or after --watch_timeout idle seconds.",
    )
    flags.DEFINE_bool(
        "use_moving_averages",
        True,
        "Checkpoints with weight averages (train.ema_decay): score the averages (default) or, "
        "with --nouse_moving_averages, the trained weights themselves.",
    )
    flags.DEFINE_float(
        "watch_timeout", 600.0, "--watch: seconds without a new checkpoint before it ends."
    )
    flags.DEFINE_string("saved_model", None, "Evaluate this SavedModel export directory instead.")
    flags.DEFINE_string("tflite", None, "Evaluate this TFLite model (or its export directory).")
    flags.DEFINE_boolean(
        "allow_other_label_map",
        False,
        "Evaluate even when the eval data's classes differ from WORKDIR/labels.json, the ones "
        "the training run recorded.",
    )
    flags.DEFINE_bool(
        "adopt_workdir",
        False,
        "Write results into a --workdir that holds files other than a run's (refused without "
        "this flag, as ondevice-train refuses it).",
    )
    flags.DEFINE_integer("num_threads", None, "TFLite interpreter threads (default: TFLite's).")
    flags.DEFINE_string(
        "cityscapes_submission",
        None,
        "Segmentation checkpoints: instead of scoring, write the Cityscapes test-server labelId "
        "PNGs of the eval split here (e.g. with --config.data.eval_split=test) and DIR.zip.",
    )
    flags.mark_flags_as_required(["config"])


def cityscapes_submission(
    config, out_dir: str, workdir=None, checkpoint=None, expected_shape=(1024, 2048)
) -> dict:
    """--cityscapes_submission: the test-server PNGs of a checkpoint, and their zip."""
    from ondevice_vision import tasks

    write_submission = tasks.get_task(config).evaluator_class().write_submission
    if write_submission is None:
        raise ValueError("--cityscapes_submission: needs a segmentation config")
    model, path = tasks.load_trained_model(config, workdir, checkpoint)
    zip_path = out_dir.rstrip("/") + ".zip"
    written = write_submission(config, model, out_dir, zip_path, expected_shape)
    return {"checkpoint": path, "submission": out_dir, "zip": zip_path, "images": len(written)}


def main(argv):
    del argv
    from ondevice_vision.configs.checks import check_config
    from ondevice_vision.eval import evaluate

    check_config(FLAGS.config)
    if FLAGS.workdir and not FLAGS.cityscapes_submission and os.path.isdir(FLAGS.workdir):
        # Metrics and TensorBoard files go into it: a folder of someone else's is refused first
        # (a new one holds only what runs write).
        from ondevice_vision.workdir_owner import claim_workdir

        claim_workdir(FLAGS.workdir, adopt=FLAGS.adopt_workdir)
    exported = [
        (p, f) for p, f in ((FLAGS.saved_model, "saved_model"), (FLAGS.tflite, "tflite")) if p
    ]
    if len(exported) > 1:
        raise app.UsageError("pass at most one of --saved_model and --tflite")
    if exported:
        if FLAGS.checkpoint:
            raise app.UsageError("--checkpoint does not apply to --saved_model / --tflite")
        ((path, fmt),) = exported
        result = evaluate.evaluate_exported(
            FLAGS.config, path, FLAGS.workdir, FLAGS.num_threads, fmt
        )
    elif FLAGS.watch:
        from ondevice_vision.eval.watch import watch

        if not FLAGS.workdir:
            raise app.UsageError("--watch needs --workdir (the training run to watch)")
        if FLAGS.checkpoint:
            raise app.UsageError("--checkpoint does not apply to --watch")
        result = watch(FLAGS.config, FLAGS.workdir, FLAGS.watch_timeout)
    elif FLAGS.cityscapes_submission:
        result = cityscapes_submission(
            FLAGS.config, FLAGS.cityscapes_submission, FLAGS.workdir, FLAGS.checkpoint
        )
    else:
        if not FLAGS.workdir:
            raise app.UsageError("--workdir is required to evaluate a checkpoint")
        result = evaluate.evaluate_checkpoint(
            FLAGS.config,
            FLAGS.workdir,
            FLAGS.checkpoint,
            FLAGS.allow_other_label_map,
            FLAGS.use_moving_averages,
        )
    print(json.dumps(result, default=str))


def run():
    define_flags()
    cli.run(main)


if __name__ == "__main__":
    run()
