"""One training loop for both tasks under any tf.distribute strategy, plus the evaluation loop.

The step is ours (a `tf.function` over several steps per call), not `model.fit`: the same code
runs on one device, MirroredStrategy, MultiWorkerMirroredStrategy and TPUStrategy. Each replica's
loss is its share of the global loss (local sums divided by the normaliser summed over all
replicas), and Keras' optimizer sums the replicas' gradients, so results do not depend on the
replica count.
"""

from __future__ import annotations

import json
import os
import signal
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from ondevice_vision.train import checkpointing, tasks
from ondevice_vision.train.optimizer import build_optimizer, build_schedule
from ondevice_vision.train.progress import Progress
from ondevice_vision.train.strategy import worker_info

REGULARIZED_WEIGHTS = ("kernel", "depthwise_kernel")


class NonFiniteLossError(RuntimeError):
    pass


class _Preemption:
    """SIGTERM / SIGINT set a flag; the loop checkpoints and exits at the next step boundary."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        del frame
        logging.warning("Signal %d received: checkpointing and stopping.", signum)
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _atomic_write_json(path, payload):
    tmp = f"{path}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(json.dumps(payload, indent=1, default=_json_default))
    tf.io.gfile.rename(tmp, path, overwrite=True)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def check_workdir(workdir: str) -> None:
    """Fails early, naming the directory, when the workdir cannot be created or written."""
    try:
        tf.io.gfile.makedirs(workdir)
        probe = os.path.join(workdir, f".write-test-{os.getpid()}")
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("ok")
        tf.io.gfile.remove(probe)
    except (OSError, tf.errors.OpError) as e:
        raise PermissionError(f"workdir {workdir} is not writable: {e}") from e


class Trainer:
    def __init__(
        self, config, workdir: str, strategy: tf.distribute.Strategy, mixed_precision=None
    ):
        self.config = config
        self.workdir = workdir
        self.strategy = strategy
        self.task = tasks.get_task(config)
        self.is_chief, self.worker_index = worker_info(strategy)
        self.mixed_precision = mixed_precision
        if mixed_precision:
            keras.mixed_precision.set_global_policy(f"mixed_{mixed_precision}")
        tc = config.train
        self.global_batch = tc.batch_size
        replicas = strategy.num_replicas_in_sync
        if self.global_batch % replicas:
            raise ValueError(
                f"train.batch_size {self.global_batch} is not divisible by the {replicas} replicas"
            )
        self.per_replica_batch = self.global_batch // replicas
        logging.info(
            "Strategy %s: %d replicas, per-replica batch %d, global batch %d",
            type(strategy).__name__,
            replicas,
            self.per_replica_batch,
            self.global_batch,
        )
        if tc.nan_policy not in ("stop", "skip"):
            raise ValueError(f"train.nan_policy must be stop or skip, got {tc.nan_policy!r}")
        with strategy.scope():
            self.model = self.task.build_model(config)
            self.optimizer = build_optimizer(tc)
            if mixed_precision == "float16":
                self.optimizer = keras.optimizers.LossScaleOptimizer(self.optimizer)
            elif tc.nan_policy == "skip":
                # The loss-scale wrapper skips updates with non-finite gradients; at scale 1.0
                # (halved only after such a step, an exact power of two) float32 is unchanged.
                self.optimizer = keras.optimizers.LossScaleOptimizer(
                    self.optimizer, initial_scale=1.0, dynamic_growth_steps=10**9
                )
            self.optimizer.build(self.model.trainable_variables)
            self.step = tf.Variable(
                0,
                dtype=tf.int64,
                trainable=False,
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
                name="global_step",
            )
        self.regularized = [
            v for v in self.model.trainable_variables if v.name in REGULARIZED_WEIGHTS
        ]
        self.schedule = build_schedule(tc)

    # ---------------------------------------------------------------- data
    def _train_dataset(self, input_context):
        ds, _ = self.task.build_dataset(
            self.config, "train", self.per_replica_batch, input_context=input_context
        )
        return ds

    def _make_iterator(self):
        dist = self.strategy.distribute_datasets_from_function(self._train_dataset)
        return iter(dist)

    # ---------------------------------------------------------------- step
    def _replica_step(self, images, labels):
        ctx = tf.distribute.get_replica_context()
        replicas = self.strategy.num_replicas_in_sync
        wd = self.config.train.weight_decay
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            outputs = self.model(images, training=True)
            sums, normalizer = self.task.compute_losses(self.config, outputs, labels)
            global_norm = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(normalizer))
            global_norm = tf.maximum(global_norm, 1.0)
            terms = {k: tf.reduce_sum(v) / global_norm for k, v in sums.items()}
            loss = tf.add_n(list(terms.values()))
            if wd and self.regularized:
                l2 = tf.add_n(
                    [tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in self.regularized]
                )
                terms["l2"] = 0.5 * wd * l2 / replicas
                loss += terms["l2"]
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply(grads, variables)
        terms["loss"] = loss
        return terms

    def _build_train_loop(self):
        strategy = self.strategy

        @tf.function
        def train_loop(iterator, num_steps):
            totals = None
            done = tf.constant(0, tf.int64)
            bad_step = tf.constant(-1, tf.int64)
            for _ in tf.range(num_steps):
                images, labels = next(iterator)
                per_replica = strategy.run(self._replica_step, args=(images, labels))
                terms = {
                    k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                    for k, v in per_replica.items()
                }
                self.step.assign_add(1)
                done += 1
                totals = terms if totals is None else {k: totals[k] + terms[k] for k in terms}
                if not tf.math.is_finite(terms["loss"]):
                    bad_step = self.step.read_value()
                    if self.config.train.nan_policy == "stop":
                        break
            means = {k: v / tf.cast(tf.maximum(done, 1), v.dtype) for k, v in totals.items()}
            return means, bad_step

        return train_loop

    # ---------------------------------------------------------------- init
    def _initialise_weights(self):
        tc = self.config.train
        if tc.get("init_checkpoint"):
            path = tc.init_checkpoint
            if tf.io.gfile.isdir(path):
                path = tf.train.latest_checkpoint(path) or path
            logging.info("Initialising the model from %s", path)
            checkpointing.restore_model_only(self.model, path)
        if tc.get("imagenet_weights"):
            from ondevice_vision.backbones import load_imagenet_weights

            path = None if tc.imagenet_weights == "auto" else tc.imagenet_weights
            used = load_imagenet_weights(self.model.get_layer("backbone"), path)
            logging.info("Backbone initialised from ImageNet weights %s", used)

    # ---------------------------------------------------------------- train
    def train(self, eval_fn=None) -> dict:
        config, tc = self.config, self.config.train
        iterator = self._make_iterator()
        checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, step=self.step)
        if tc.checkpoint_data_iterator:
            checkpoint.iterator = iterator
        manager = checkpointing.make_manager(
            checkpoint, self.workdir, tc.keep_checkpoints, self.is_chief, self.worker_index
        )
        restored = checkpointing.restore_latest(checkpoint, manager)
        if not restored:
            self._initialise_weights()
        if self.is_chief:
            checkpointing.write_config(config, self.workdir)
        start = int(self.step.numpy())
        if start >= tc.total_steps:
            logging.info("Already trained %d/%d steps.", start, tc.total_steps)
            return {"step": start}
        writer = (
            tf.summary.create_file_writer(os.path.join(self.workdir, "train"))
            if self.is_chief
            else tf.summary.create_noop_writer()
        )
        train_loop = self._build_train_loop()
        steps_per_loop = tc.steps_per_loop or tc.log_every_steps
        progress = Progress(tc.total_steps, self.global_batch, start)
        eval_every = config.eval.every_steps
        last_scalars = {}
        with _Preemption() as preemption:
            while int(self.step.numpy()) < tc.total_steps:
                step = int(self.step.numpy())
                boundaries = [tc.total_steps, _next_multiple(step, steps_per_loop)]
                boundaries.append(_next_multiple(step, tc.log_every_steps))
                boundaries.append(_next_multiple(step, tc.checkpoint_every_steps))
                if eval_fn and eval_every:
                    boundaries.append(_next_multiple(step, eval_every))
                num_steps = min(boundaries) - step
                means, bad_step = train_loop(iterator, tf.constant(num_steps, tf.int64))
                step = int(self.step.numpy())
                bad_step = int(bad_step.numpy())
                if bad_step >= 0 and tc.nan_policy == "stop":
                    raise NonFiniteLossError(
                        f"Non-finite loss at step {bad_step}; stopped without saving. The last "
                        f"good checkpoint is {manager.latest_checkpoint or '(none)'} in "
                        f"{self.workdir}. Lower train.base_learning_rate or set "
                        "train.nan_policy=skip."
                    )
                if bad_step >= 0:
                    logging.warning(
                        "Non-finite loss at step %d: that update was skipped.", bad_step
                    )
                scalars = {k: float(v.numpy()) for k, v in means.items()}
                scalars["lr"] = float(self.schedule(step - 1))
                last_scalars = scalars
                if step % tc.log_every_steps == 0 or step == tc.total_steps:
                    speed = progress.update(step)
                    logging.info(progress.line(step, scalars, speed))
                    with writer.as_default(step=step):
                        for k, v in scalars.items():
                            tf.summary.scalar(f"loss/{k}" if k not in ("lr",) else k, v)
                        tf.summary.scalar("speed/images_per_sec", speed["images_per_sec"])
                        tf.summary.scalar("speed/steps_per_sec", speed["steps_per_sec"])
                    writer.flush()
                if step % tc.checkpoint_every_steps == 0 or step == tc.total_steps:
                    checkpointing.save(manager, step)
                if preemption.requested:
                    checkpointing.save(manager, step)
                    logging.warning(
                        "Stopped at step %d after a signal; the next start resumes.", step
                    )
                    break
                if eval_fn and eval_every and step % eval_every == 0 and step < tc.total_steps:
                    eval_fn(self.model, step)
        checkpointing.cleanup_worker_dirs(self.is_chief, self.worker_index, self.workdir)
        return {"step": int(self.step.numpy()), **last_scalars}


def _next_multiple(step: int, every: int) -> int:
    every = max(1, int(every))
    return (step // every + 1) * every


# -------------------------------------------------------------------- evaluation
def evaluate(config, model, workdir: str | None, step: int | None = None, predict_fn=None) -> dict:
    """Runs the task's evaluator over the eval split; writes metrics JSON, summaries, pictures."""
    task = tasks.get_task(config)
    dataset, label_map = task.build_dataset(config, "eval", config.eval.batch_size)
    evaluator = task.make_evaluator(config, label_map)
    if predict_fn is None:
        predict_fn = tf.function(lambda images: task.predict(config, model, images))
    pictures = None
    images_seen = 0
    start = time.perf_counter()
    for images, labels in dataset:
        predictions = {k: v.numpy() for k, v in predict_fn(images).items()}
        labels_np = {k: v.numpy() for k, v in labels.items()}
        evaluator.update(predictions, labels_np)
        if pictures is None and config.eval.num_visualizations:
            n = config.eval.num_visualizations
            sub = {k: v[:n] for k, v in predictions.items()}
            pictures = task.visualize(config, images.numpy()[:n], sub, labels_np, label_map)
        images_seen += int(images.shape[0])
    elapsed = time.perf_counter() - start
    metrics = evaluator.result()
    logging.info(
        "Evaluated %d images in %.1fs (%.1f img/s)",
        images_seen,
        elapsed,
        images_seen / max(elapsed, 1e-9),
    )
    if workdir:
        eval_dir = os.path.join(workdir, "eval")
        tf.io.gfile.makedirs(eval_dir)
        payload = {"step": step, "num_images": images_seen, **metrics}
        _atomic_write_json(os.path.join(workdir, "metrics.json"), payload)
        if step is not None:
            _atomic_write_json(os.path.join(eval_dir, f"metrics_{step}.json"), payload)
        evaluator.write(eval_dir)
        writer = tf.summary.create_file_writer(eval_dir)
        with writer.as_default(step=step or 0):
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and v is not None and np.isfinite(v):
                    tf.summary.scalar(f"metrics/{k}", v)
            if pictures is not None:
                tf.summary.image("predictions", pictures[np.newaxis], step=step or 0)
        writer.flush()
        if pictures is not None:
            from ondevice_vision.export.drawing import save_png

            name = f"predictions_{step}.png" if step is not None else "predictions.png"
            save_png(pictures, os.path.join(eval_dir, name))
    return metrics
