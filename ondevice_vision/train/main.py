"""`ondevice-train`: train (and evaluate) a detector or segmenter from a config file.

    ondevice-train --config=ondevice_vision/configs/ssdlite_mobilenet_v3_small_shapes.py \
        --workdir=workdir/shapes --mode=train_and_eval --config.train.batch_size=32

A killed run restarts from its last checkpoint when started again with the same workdir.
"""

from __future__ import annotations

import json

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (path[:arg]).")
flags.DEFINE_string("workdir", None, "Where checkpoints, summaries and results go.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "train_and_eval"], "What to run.")
flags.DEFINE_enum(
    "strategy",
    "auto",
    ["auto", "one_device", "mirrored", "multi_worker_mirrored", "tpu"],
    "tf.distribute strategy; auto = mirrored with several GPUs, else one device.",
)
flags.DEFINE_string("tpu", None, "TPU address (grpc://... or name) with --strategy=tpu.")
flags.DEFINE_enum("mixed_precision", "none", ["none", "float16", "bfloat16"], "Compute dtype.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    import tensorflow as tf

    from ondevice_vision.train import loop
    from ondevice_vision.train import strategy as strategy_lib

    config, workdir = FLAGS.config, FLAGS.workdir
    loop.check_workdir(workdir)
    tf.random.set_seed(config.train.seed)
    strategy = strategy_lib.create_strategy(FLAGS.strategy, FLAGS.tpu)
    precision = None if FLAGS.mixed_precision == "none" else FLAGS.mixed_precision
    result = {}
    if FLAGS.mode in ("train", "train_and_eval"):
        trainer = loop.Trainer(config, workdir, strategy, mixed_precision=precision)

        def eval_fn(model, step):
            if trainer.is_chief:
                metrics = loop.evaluate(config, model, workdir, step)
                logging.info("eval at step %d: %s", step, json.dumps(_headline(metrics)))

        result = trainer.train(eval_fn if FLAGS.mode == "train_and_eval" else None)
        if FLAGS.mode == "train_and_eval" and trainer.is_chief:
            result = loop.evaluate(config, trainer.model, workdir, result["step"])
    else:
        from ondevice_vision.eval.main import evaluate_checkpoint

        result = evaluate_checkpoint(config, workdir)
    print(json.dumps(_headline(result)))


def _headline(metrics: dict) -> dict:
    """JSON-friendly scalars (per-class lists and matrices stay in the metrics file)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) or v is None}


def run():
    app.run(main)


if __name__ == "__main__":
    run()
