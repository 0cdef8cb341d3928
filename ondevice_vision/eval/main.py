"""`ondevice-eval`: COCO mAP or mIoU of a checkpoint (the latest in --workdir, or --checkpoint).

The metrics are written to WORKDIR/metrics.json, sent to TensorBoard (WORKDIR/eval) and printed
as one JSON object on the last line of stdout.
"""

from __future__ import annotations

import json

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (path[:arg]).")
flags.DEFINE_string("workdir", None, "Training workdir (checkpoints/ inside).")
flags.DEFINE_string("checkpoint", None, "A checkpoint prefix or directory (default: latest).")
flags.mark_flags_as_required(["config", "workdir"])


def evaluate_checkpoint(config, workdir: str, checkpoint: str | None = None) -> dict:
    import tensorflow as tf

    from ondevice_vision.train import checkpointing, loop, tasks

    path = checkpointing.latest_or_given(workdir, checkpoint)
    model = tasks.get_task(config).build_model(config)
    tf.train.Checkpoint(model=model).read(path).expect_partial().assert_existing_objects_matched()
    step = _step_of(path)
    metrics = loop.evaluate(config, model, workdir, step)
    return {"checkpoint": path, "step": step, **metrics}


def _step_of(path: str):
    tail = path.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def main(argv):
    del argv
    result = evaluate_checkpoint(FLAGS.config, FLAGS.workdir, FLAGS.checkpoint)
    print(json.dumps(result))


def run():
    app.run(main)


if __name__ == "__main__":
    run()
