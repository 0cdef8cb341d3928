"""`make demo`: the whole pipeline on the built-in synthetic data, on a CPU, in minutes.

1. The models table: every backbone's parameters and MAdds next to the published figures.
2. SSDLite + MobileNetV3-Small trained on synthetic shapes, COCO-evaluated, boxes drawn.
3. LR-ASPP + MobileNetV3-Small trained on synthetic segmentation data, mIoU, masks drawn.

Results land in --workdir (metrics.json, eval/predictions_*.png, TensorBoard logs).
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "workdir/demo", "Where the demo runs write everything.")
flags.DEFINE_enum("only", "all", ["all", "table", "detection", "segmentation"], "Run one part.")
flags.DEFINE_integer("steps", 0, "Override the training steps of both demos (0: the configs').")

DETECTION_CONFIG = "ssdlite_mobilenet_v3_small_shapes"
SEGMENTATION_CONFIG = "lraspp_mobilenet_v3_small_shapes"


def _load_config(name):
    import importlib

    return importlib.import_module(f"ondevice_vision.configs.{name}").get_config()


def _train_and_evaluate(name: str, workdir: str) -> dict:
    from ondevice_vision import files
    from ondevice_vision.eval.evaluate import evaluate
    from ondevice_vision.train.strategy import create_strategy
    from ondevice_vision.train.trainer import Trainer

    config = _load_config(name)
    if FLAGS.steps:
        config.train.total_steps = FLAGS.steps
        config.train.warmup_steps = min(config.train.warmup_steps, FLAGS.steps // 4)
        config.train.checkpoint_every_steps = FLAGS.steps
    files.check_writable_dir(workdir)
    start = time.perf_counter()
    trainer = Trainer(config, workdir, create_strategy("auto"))
    trainer.train()
    train_seconds = time.perf_counter() - start
    metrics = evaluate(config, trainer.model, workdir, int(trainer.step.numpy()))
    picture = os.path.join(workdir, "eval", f"predictions_{int(trainer.step.numpy())}.png")
    return {
        "config": name,
        "steps": int(trainer.step.numpy()),
        "train_seconds": round(train_seconds, 1),
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        "pictures": picture,
        "tensorboard": f"tensorboard --logdir {workdir}",
    }


def main(argv):
    del argv
    summary = {}
    if FLAGS.only in ("all", "table"):
        from ondevice_vision.info import format_table, models_table

        print(format_table(models_table()), flush=True)
    for part, config in (("detection", DETECTION_CONFIG), ("segmentation", SEGMENTATION_CONFIG)):
        if FLAGS.only not in ("all", part):
            continue
        logging.info("Training %s ...", config)
        summary[part] = _train_and_evaluate(config, os.path.join(FLAGS.workdir, part))
        print(json.dumps(summary[part]), flush=True)
    if summary:
        print(json.dumps(summary))


if __name__ == "__main__":
    app.run(main)
