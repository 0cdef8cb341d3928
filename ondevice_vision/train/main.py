"""`ondevice-train`: train (and evaluate) a detector or segmenter from a config file.

    ondevice-train --config=ondevice_vision/configs/ssdlite_mobilenet_v3_small_shapes.py \
        --workdir=workdir/shapes --mode=train_and_eval --config.train.batch_size=32

A killed run restarts from its last checkpoint when started again with the same workdir; SIGTERM
(preemption) makes it checkpoint and exit with status 0 at the next step boundary. Several hosts:
`--strategy=multi_worker_mirrored` with TF_CONFIG set on each; Cloud TPU: `--strategy=tpu
--tpu=local` (docs/distributed.md).
"""

from __future__ import annotations

import json
import sys

from absl import flags, logging
from ml_collections import config_dict, config_flags

from ondevice_vision import cli

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
flags.DEFINE_string(
    "tpu", None, "With --strategy=tpu: 'local' on a Cloud TPU VM, a TPU name or grpc://host:8470."
)
flags.DEFINE_enum("mixed_precision", "none", ["none", "float16", "bfloat16"], "Compute dtype.")
flags.DEFINE_integer(
    "cpu_replicas",
    0,
    "Split the CPU into this many logical devices (with --strategy=mirrored: multi-replica "
    "training without GPUs, for tests).",
)
flags.DEFINE_bool(
    "deterministic",
    False,
    "tf.config.experimental.enable_op_determinism(): bit-reproducible runs (slower; the input "
    "pipeline keeps its order).",
)
flags.DEFINE_bool(
    "adopt_workdir",
    False,
    "Train into a --workdir that holds files other than a run's (refused without this flag).",
)
flags.mark_flags_as_required(["config", "workdir"])


def _config_override_error(argv, error) -> str | None:
    """Names the --config.<key> override that does not exist in the config, if any."""
    config_arg = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if config_arg is None and "--config" in argv[:-1]:
        config_arg = argv[argv.index("--config") + 1]
    if config_arg is None:
        return None
    try:
        config = FLAGS["config"].parser.parse(config_arg)
    except Exception:  # the config file itself is broken: let the original error speak
        return None
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        path = arg[len("--config.") :].split("=", 1)[0]
        node, walked = config, "config"
        for part in path.split("."):
            if not isinstance(node, config_dict.ConfigDict) or part not in node:
                keys = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else ""
                return (
                    f"--config.{path}: the config has no key {part!r} under {walked} "
                    f"(from {config_arg}). Keys of {walked}: {keys}"
                )
            node, walked = node[part], f"{walked}.{part}"
    return f"bad config override: {error}"


def parse_flags(argv):
    """absl's parser, with a clear message for `--config.some.key=...` naming a missing key
    (ml_collections raises a bare AttributeError for those)."""
    try:
        return cli.parse_flags(argv)
    except (AttributeError, KeyError) as e:
        message = _config_override_error(argv, e)
        if message is None:
            raise
        sys.stderr.write(f"ERROR: {message}\n")
        sys.exit(1)


def main(argv):
    del argv
    import keras
    import tensorflow as tf

    from ondevice_vision import files
    from ondevice_vision.configs.checks import check_config
    from ondevice_vision.eval.evaluate import check_eval_split, evaluate, evaluate_checkpoint
    from ondevice_vision.train import strategy as strategy_lib
    from ondevice_vision.train.trainer import NonFiniteLossError, Trainer
    from ondevice_vision.workdir_owner import claim_workdir

    config, workdir = FLAGS.config, FLAGS.workdir
    check_config(config)
    try:
        files.check_writable_dir(workdir)
    except PermissionError as e:
        sys.exit(f"ERROR: {e}")
    claim_workdir(workdir, adopt=FLAGS.adopt_workdir)
    if FLAGS.mode == "train_and_eval":
        check_eval_split(config)  # an empty or unreadable eval split fails now, not after training
    if FLAGS.cpu_replicas:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * FLAGS.cpu_replicas
        )
    # Python, NumPy, TensorFlow and Keras seeds: the same initial weights on every worker.
    keras.utils.set_random_seed(config.train.seed)
    if FLAGS.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = strategy_lib.create_strategy(FLAGS.strategy, FLAGS.tpu)
    precision = None if FLAGS.mixed_precision == "none" else FLAGS.mixed_precision
    result = {}
    if FLAGS.mode in ("train", "train_and_eval"):
        trainer = Trainer(config, workdir, strategy, mixed_precision=precision)

        def eval_fn(model, step):
            metrics = evaluate(config, model, workdir, step)
            logging.info("eval at step %d: %s", step, json.dumps(_headline(metrics)))
            return metrics

        try:
            result = trainer.train(eval_fn if FLAGS.mode == "train_and_eval" else None)
        except NonFiniteLossError as e:
            logging.error("%s", e)
            sys.exit(f"ERROR: {e}")
        if result.get("early_stopped"):
            result = {
                **(result.get("metrics") or {}),
                "step": result["step"],
                "early_stopped": True,
            }
        elif FLAGS.mode == "train_and_eval" and trainer.is_chief and not result.get("preempted"):
            step = result["step"]
            metrics, _ = trainer.evaluate(eval_fn, step)
            result = {**metrics, "step": step}
    else:
        result = evaluate_checkpoint(config, workdir)
    print(json.dumps(_headline(result)))


def _headline(metrics: dict) -> dict:
    """JSON-friendly scalars (per-class lists and matrices stay in the metrics file)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (bool, int, float, str)) or v is None}


def run():
    cli.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
