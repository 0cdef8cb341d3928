"""Config sections shared by every experiment: training schedule, checkpoints, evaluation.

Experiment files (`ssdlite_*.py`, `lraspp_*.py`) call these builders and override what their
recipe changes. `get_config("smoke")` of any experiment shrinks it to seconds on a CPU.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict


def train_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "batch_size": 64,  # global, over all replicas
            "total_steps": 10_000,
            "optimizer": "momentum",  # momentum | adam
            "momentum": 0.9,
            "schedule": "cosine",  # cosine | poly | constant
            "base_learning_rate": 0.1,
            "warmup_steps": 0,
            "warmup_learning_rate": 0.0,
            "poly_power": 0.9,
            "end_learning_rate": 0.0,
            # L2 on conv / dense kernels, added to the loss as 0.5 * wd * sum(w^2) (slim's
            # l2_regularizer), so the figure is comparable to the TF1 recipes.
            "weight_decay": 4e-5,
            "clip_gradient_norm": 0.0,  # 0: off
            "checkpoint_every_steps": 1000,
            "keep_checkpoints": 5,
            "log_every_steps": 100,
            # Steps run inside one tf.function call: fewer Python round trips on fast devices.
            "steps_per_loop": 0,  # 0: log_every_steps
            "nan_policy": "stop",  # stop | skip
            # XLA for the train step (one device; falls back to plain TensorFlow where XLA cannot
            # compile it). Slower on CPUs (docs/speed.md); for accelerators.
            "jit_compile": False,
            # Batch-norm statistics over the global batch (all replicas), not each replica's.
            "sync_batch_norm": False,
            "shuffle_buffer": 1000,
            # Parallel preprocessing hands examples on in the order they were read: the same
            # batches in every run and on every tf.data service worker (for comparing runs; a
            # little slower). False: whichever example is ready first.
            "ordered_input": False,
            "checkpoint_data_iterator": True,
            # "grpc://HOST:PORT" of a tf.data service dispatcher: its workers run the input
            # pipeline and stream batches here (docs/speed.md). "" = preprocess in this process.
            "data_service": "",
            # "off": every service worker runs the whole pipeline (a copy each); "dynamic": the
            # dispatcher hands out pieces of the source so each example is read once per epoch.
            "data_service_sharding": "off",
            "seed": 0,
            "init_checkpoint": config_dict.placeholder(str),
            # What init_checkpoint restores (ondevice_vision/train/init_from_checkpoint.py):
            # "all_but_class_layers" (alias "detection"): everything but the class-dependent
            # layers, which are re-initialised; "backbone" (alias "classification"): the feature
            # extractor only; "strict": every model variable, with equal shapes.
            "init_checkpoint_mode": "all_but_class_layers",
            # Before every evaluation and the final checkpoint, re-estimate the batch-norm moving
            # statistics as the mean over this many training batches (0: keep the moving
            # averages). docs/fine_tuning.md says why.
            "bn_recalibration_steps": 50,
            # "" none, "auto" the official keras.applications file, or a path to one.
            "imagenet_weights": "",
            # Moving averages of the weights, used by evaluation, the best checkpoint and export
            # (0: off; the OD API's use_moving_average uses 0.9999). train/ema.py.
            "ema_decay": 0.0,
            # Stop after this many evaluations without the best metric improving by more than
            # early_stopping_min_delta (0: never). Needs eval.every_steps.
            "early_stopping_patience": 0,
            "early_stopping_min_delta": 0.0,
            # What trains: "all", "head" (the backbone frozen, its batch norm in inference
            # mode), or a regular expression over weight paths (train/freezing.py).
            "trainable": "all",
            # Quantization-aware training (the OD API's graph_rewriter.quantization): from step
            # `delay` on, int8 weights and activations are simulated as the int8 TFLite export
            # will quantize them; ranges are moving averages with `ema_decay`.
            "quantization": ml_collections.ConfigDict(
                {
                    "enabled": False,
                    "delay": 0,
                    "ema_decay": 0.999,
                }
            ),
        }
    )


def eval_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "batch_size": 8,
            "every_steps": 0,  # train_and_eval: evaluate every N steps (0: at the end only)
            "max_images": 0,  # 0: the whole split
            "num_visualizations": 4,
            # Detection: the score from which a detection counts in the confusion matrix and
            # is drawn in the evaluation pictures.
            "score_threshold": 0.3,
            # The worst images of the split (detection: most missed objects; segmentation:
            # lowest mIoU), drawn into eval/worst_images_STEP.png.
            "num_worst_images": 8,
            # The metric that picks WORKDIR/checkpoints/best/ (and early stopping): any number
            # the evaluation reports ("" = the task's: AP for detection, mIoU for
            # segmentation; "val_loss" with mode "min").
            "best_metric": "",
            "best_metric_mode": "max",  # max | min
            # train_and_eval: the loss on the eval split (no augmentation) beside the metrics.
            "validation_loss": True,
        }
    )


# Pillow's Image.MAX_IMAGE_PIXELS (1024 * 1024 * 1024 // 4 // 3): a 48-megapixel phone photo
# passes, a 13000x13000 decompression bomb (0.5 GB decoded) does not.
MAX_IMAGE_PIXELS = 89_478_485


def config_words(arg: str | None, allowed) -> set[str]:
    """The words of a config argument (`FILE.py:coco14,smoke`), each checked against `allowed`.

    An unknown word is an error rather than silently ignored (`:smok` must not run the recipe).
    """
    words = {w for w in (arg or "").replace("+", ",").split(",") if w.strip()}
    words = {w.strip() for w in words}
    unknown = sorted(words - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown config argument {', '.join(unknown)!s} in {arg!r}; this config accepts "
            f"{', '.join(allowed) or 'no argument'} (comma-separated)"
        )
    return words


def shrink_for_smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A few steps on tiny inputs: proves a config builds, trains, checkpoints and evaluates."""
    config.train.batch_size = 2
    config.train.total_steps = 4
    config.train.warmup_steps = 1
    config.train.checkpoint_every_steps = 2
    config.train.log_every_steps = 2
    config.train.shuffle_buffer = 8
    config.train.imagenet_weights = ""
    # Smoke runs prove the plumbing; the re-estimation pass would only add tracing time
    # (tests/train/test_bn_recalibration.py covers it).
    config.train.bn_recalibration_steps = 0
    config.eval.batch_size = 2
    config.eval.max_images = 4
    config.eval.num_visualizations = 2
    # A second pass over the eval split (tests/eval/test_validation_loss.py covers it).
    config.eval.validation_loss = False
    return config
