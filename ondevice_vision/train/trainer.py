"""One training loop for both tasks under any tf.distribute strategy.

The step is ours (a `tf.function` over several steps per call), not `model.fit`: the same code
runs on one device, MirroredStrategy, MultiWorkerMirroredStrategy and TPUStrategy.

Replica-count independence: each replica's loss is its share of the global loss (local sums
divided by the normaliser summed over all replicas, L2 divided by the replica count), and the step
sums the replicas' gradients itself before the optimizer sees them, so gradient clipping and the
finite check act on the global gradient. With `train.sync_batch_norm` the batch statistics are
global too, and a run gives the same losses on 1 or N replicas for the same global batch.

Faults: SIGTERM / SIGINT checkpoint at the next step boundary and return (all workers agree on
the step); a non-finite loss stops the run before anything is saved (or the update is skipped,
with `train.nan_policy="skip"`), and weights are checked to be finite before every save.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

import keras
import tensorflow as tf
from absl import logging

from ondevice_vision import checkpoints, tasks
from ondevice_vision.configs.checks import check_config
from ondevice_vision.eval.best_checkpoint import BestCheckpoint
from ondevice_vision.progress import Progress
from ondevice_vision.quantization import qat
from ondevice_vision.tasks import recorded_labels
from ondevice_vision.train.bn_recalibration import BatchNormRecalibration, batch_norm_layers
from ondevice_vision.train.ema import WeightAverages
from ondevice_vision.train.freezing import apply_trainable
from ondevice_vision.train.init_from_checkpoint import initialise_from_checkpoint
from ondevice_vision.train.optimizer import build_optimizer, build_schedule
from ondevice_vision.train.preemption import Preemption, run_interruptible
from ondevice_vision.train.strategy import worker_info
from ondevice_vision.train.train_input import TrainInput
from ondevice_vision.workdir_lock import workdir_lock

REGULARIZED_WEIGHTS = ("kernel", "depthwise_kernel")
MIXED_PRECISION = ("float16", "bfloat16")


class NonFiniteLossError(RuntimeError):
    pass


@contextlib.contextmanager
def _dtype_policy(mixed_precision: str | None):
    """Builds layers under a mixed policy without leaving it set for the rest of the process."""
    if not mixed_precision:
        yield
        return
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(f"mixed_{mixed_precision}")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _float32(outputs):
    """Heads may compute in float16/bfloat16; losses are always computed in float32."""
    return tf.nest.map_structure(
        lambda t: tf.cast(t, tf.float32) if t.dtype.is_floating else t, outputs
    )


class Trainer:
    def __init__(
        self, config, workdir: str, strategy: tf.distribute.Strategy, mixed_precision=None
    ):
        check_config(config)
        self.config = config
        self.workdir = workdir
        self.strategy = strategy
        self.task = tasks.get_task(config)
        self.is_chief, self.worker_index = worker_info(strategy)
        if mixed_precision not in (None, *MIXED_PRECISION):
            raise ValueError(
                f"mixed_precision must be one of {MIXED_PRECISION} or None, got {mixed_precision!r}"
            )
        self.mixed_precision = mixed_precision
        tc = config.train
        self.global_batch = tc.batch_size
        replicas = strategy.num_replicas_in_sync
        if self.global_batch % replicas:
            raise ValueError(
                f"train.batch_size {self.global_batch} is not divisible by the {replicas} replicas"
            )
        self.per_replica_batch = self.global_batch // replicas
        self.label_map = None  # the training data's, once its dataset is built
        self.input = TrainInput(
            strategy,
            self._build_train_dataset,
            self.global_batch,
            data_service=tc.get("data_service", ""),
            data_service_sharding=tc.get("data_service_sharding", "off"),
        )
        logging.info(
            "Strategy %s: %d replicas on %d input workers, per-replica batch %d, global batch %d",
            type(strategy).__name__,
            replicas,
            self.input.workers,
            self.per_replica_batch,
            self.global_batch,
        )
        with strategy.scope():
            with _dtype_policy(mixed_precision):
                self.model = self.task.build_model(config)
            apply_trainable(self.model, tc.get("trainable", "all"))
            self.quantization = qat.for_training(config, self.model)
            self.ema = None
            if tc.get("ema_decay"):
                self.ema = WeightAverages(self.model, tc.ema_decay)
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
        self.loss_scaled = isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)
        if mixed_precision:
            logging.info(
                "Mixed precision: layers compute in %s, variables and losses are float32%s",
                mixed_precision,
                ", dynamic loss scaling" if mixed_precision == "float16" else "",
            )
        if tc.get("sync_batch_norm"):
            for layer in batch_norm_layers(self.model, trainable_only=False):
                layer.synchronized = True
        self.regularized = [
            v for v in self.model.trainable_variables if v.name in REGULARIZED_WEIGHTS
        ]
        self.schedule = build_schedule(tc)
        # Set by the signal handler, read by the compiled loop before every step.
        self._stop_requested = tf.Variable(False, trainable=False, name="stop_requested")
        self._data_seed_offset = 0
        self._bn_recalibration = None
        self._best = None

    # ---------------------------------------------------------------- data
    def _build_train_dataset(self, batch_size, input_context):
        config = self.config
        if self._data_seed_offset:
            config = config.copy_and_resolve_references()
            config.train.seed = config.train.seed + self._data_seed_offset
        ds, self.label_map = self.task.build_dataset(
            config, "train", batch_size, input_context=input_context
        )
        return ds

    def _train_dataset(self, input_context=None):
        """One replica's training batches (benchmarks/train_step.py times the loop on them)."""
        return self._build_train_dataset(self.per_replica_batch, input_context)

    def _loss_keys(self, element_spec) -> list[str]:
        """Names of the loss terms, known before the loop is traced (tracing it twice to find
        them out would double the start-up time)."""
        _, labels_spec = element_spec
        outputs_spec = tf.nest.map_structure(
            lambda t: tf.TensorSpec(t.shape, tf.float32), self.model.output
        )
        probe = tf.function(
            lambda o, lab: self.task.compute_losses(self.config, o, lab)[0], autograph=False
        )
        keys = list(probe.get_concrete_function(outputs_spec, labels_spec).structured_outputs)
        if self.config.train.weight_decay and self.regularized:
            keys.append("l2")
        return [*keys, "loss"]

    # ---------------------------------------------------------------- step
    def _replica_step(self, images, labels):
        ctx = tf.distribute.get_replica_context()
        tc = self.config.train
        replicas = self.strategy.num_replicas_in_sync
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            outputs = _float32(
                qat.training_forward(self.quantization, self.config, self.model, images, self.step)
            )
            # The name scopes let a profile tell the step's parts apart (docs/speed.md).
            with tf.name_scope("losses"):
                sums, normalizer = self.task.compute_losses(self.config, outputs, labels)
                norm = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(normalizer))
                norm = tf.maximum(norm, 1.0)
                terms = {k: tf.reduce_sum(v) / norm for k, v in sums.items()}
                loss = tf.add_n(list(terms.values()))
            if tc.weight_decay and self.regularized:
                with tf.name_scope("l2"):
                    l2 = tf.add_n(
                        [tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in self.regularized]
                    )
                    terms["l2"] = 0.5 * tc.weight_decay * l2 / replicas
                    loss += terms["l2"]
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        pairs = [(g, v) for g, v in zip(grads, variables, strict=True) if g is not None]
        summed = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [g for g, _ in pairs])
        with tf.name_scope("grad_norm"):
            grad_norm = tf.linalg.global_norm(summed)
            if self.loss_scaled:
                grad_norm /= tf.cast(self.optimizer.dynamic_scale, grad_norm.dtype)
        with tf.name_scope("optimizer"):
            self.optimizer.apply(summed, [v for _, v in pairs])
        if self.ema is not None:
            self.ema.update(self.step)
        terms["loss"] = loss
        return terms, grad_norm

    def _build_train_loop(self, keys=None):
        """`train_loop(iterator, num_steps)` -> (mean loss terms of the good steps, status).

        status: {"grad_norm" of the last step, "bad": non-finite steps, "first_bad_step"}.
        """
        tc = self.config.train
        if keys is None:
            keys = self._loss_keys(self._train_dataset().element_spec)
        if not tc.get("jit_compile"):
            return self._loop_over(keys, self._replica_step)
        if self.strategy.num_replicas_in_sync > 1:
            logging.warning("train.jit_compile is for one device; training without XLA.")
            return self._loop_over(keys, self._replica_step)
        compiled = self._loop_over(keys, tf.function(self._replica_step, jit_compile=True))
        return _xla_or_plain(compiled, lambda: self._loop_over(keys, self._replica_step))

    def _loop_over(self, keys, replica_step):
        strategy, tc = self.strategy, self.config.train
        stop_on_bad = tc.nan_policy == "stop"
        # float16 gradients overflow now and then by design: the loss scale handles those.
        check_grads = self.mixed_precision != "float16"

        # The loop needs autograph (a tensor loop with breaks); the step inside does not, and
        # converting the model's losses and matching would cost more than tracing them.
        replica_step = tf.autograph.experimental.do_not_convert(self._replica_step)

        @tf.function
        def train_loop(iterator, num_steps):
            totals = {k: tf.constant(0.0) for k in keys}
            good = tf.constant(0, tf.int64)
            bad = tf.constant(0, tf.int64)
            first_bad_step = tf.constant(-1, tf.int64)
            grad_norm = tf.constant(0.0)
            for _ in tf.range(num_steps):
                if self._stop_now():
                    break
                images, labels = self.input.next_batch(iterator)
                per_replica, norms = strategy.run(replica_step, args=(images, labels))
                terms = {
                    k: strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica[k], axis=None)
                    for k in keys
                }
                # Every replica holds the same (all-reduced) norm.
                grad_norm = strategy.experimental_local_results(norms)[0]
                self.step.assign_add(1)
                finite = tf.math.is_finite(terms["loss"])
                if check_grads:
                    finite = tf.logical_and(finite, tf.math.is_finite(grad_norm))
                if finite:
                    totals = {k: totals[k] + terms[k] for k in keys}
                    good += 1
                else:
                    bad += 1
                    if first_bad_step < 0:
                        first_bad_step = self.step.read_value()
                    if stop_on_bad:
                        break
            means = {k: v / tf.cast(tf.maximum(good, 1), v.dtype) for k, v in totals.items()}
            status = {"grad_norm": grad_norm, "bad": bad, "first_bad_step": first_bad_step}
            return means, status

        return train_loop

    def _stop_now(self):
        """Inside the loop: whether a stop was requested on any worker (read before each step)."""
        if self.input.workers == 1:
            return self._stop_requested.read_value()
        strategy = self.strategy
        per_replica = strategy.run(lambda: tf.cast(self._stop_requested.read_value(), tf.int32))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None) > 0

    def _build_agreement(self):
        """All workers stop together: a signal on any of them stops all (one tiny all-reduce)."""
        strategy = self.strategy

        @tf.function
        def any_worker(flag):
            per_replica = strategy.run(lambda: tf.cast(flag, tf.int32))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None) > 0

        return any_worker

    @tf.function(autograph=False)
    def _weights_finite(self):
        return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in self.model.weights])

    # ---------------------------------------------------------------- init
    def _initialise_weights(self):
        tc = self.config.train
        if tc.get("init_checkpoint"):
            mode = tc.init_checkpoint_mode
            initialise_from_checkpoint(self.model, tc.init_checkpoint, mode, self.task.class_layers)
        if tc.get("imagenet_weights"):
            from ondevice_vision.backbones import load_imagenet_weights

            path = None if tc.imagenet_weights == "auto" else tc.imagenet_weights
            # Both task models expose their nested Backbone as `.backbone`.
            used = load_imagenet_weights(self.model.backbone, path)
            logging.info("Backbone initialised from ImageNet weights %s", used)

    def make_checkpoint(self) -> tf.train.Checkpoint:
        """What a checkpoint holds (the data iterator is attached when there is one)."""
        # The inner optimizer, not the loss-scale wrapper: checkpoints then stay compatible when
        # train.nan_policy or --mixed_precision change between restarts (the dynamic loss scale
        # is not saved; it re-adapts within a few steps).
        optimizer = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        extra = {} if self.quantization is None else {"quantization": self.quantization}
        return tf.train.Checkpoint(model=self.model, optimizer=optimizer, step=self.step, **extra)

    def averaged_weights(self):
        """Inside the block the model holds what inference uses: the moving averages of its
        weights when train.ema_decay is on, else the weights themselves."""
        return self.ema.swapped_in() if self.ema is not None else contextlib.nullcontext()

    def recalibrate_batch_norm(self) -> None:
        """Moving BN statistics from `train.bn_recalibration_steps` fresh training batches
        (under the averaged weights with train.ema_decay: those are what inference uses)."""
        with self.averaged_weights():
            self._recalibrate_batch_norm()

    def _recalibrate_batch_norm(self) -> None:
        steps = int(self.config.train.get("bn_recalibration_steps") or 0)
        if steps <= 0:
            return
        if self.quantization is not None and int(self.step.numpy()) >= int(
            self.config.train.quantization.delay
        ):
            # Quantization-aware training froze the statistics at `delay` and trained the folded
            # weights against them: they are part of the network now, and new ones would change
            # what training simulated (and the int8 export computes).
            logging.info(
                "Batch-norm statistics stay frozen (quantization-aware since step %d)",
                int(self.config.train.quantization.delay),
            )
            return
        if self._bn_recalibration is None:
            self._bn_recalibration = BatchNormRecalibration(
                self.model, self.strategy, self.input.next_batch
            )
        self._bn_recalibration.run(self.input.make_iterator(), steps)

    def _restore(self, checkpoint):
        """Resumes from the run's latest checkpoint; returns the data iterator to train on."""
        tc = self.config.train
        if self.is_chief:
            checkpoints.tidy_checkpoint_dir(self.workdir)
        latest = checkpoints.restore_newest_readable(checkpoint, self.workdir)
        if not latest:
            self._initialise_weights()
        save_data = self.input.saves_position and tc.checkpoint_data_iterator
        restore_data = bool(latest) and save_data and checkpoints.has_entry(latest, "data")
        if latest and not restore_data:
            # A fresh pipeline with the original seed would replay the run's first batches.
            self._data_seed_offset = int(self.step.numpy())
            logging.info(
                "The data position is not in %s: the input restarts with seed offset %d",
                latest,
                self._data_seed_offset,
            )
        if self.ema is not None:
            if latest and checkpoints.has_entry(latest, checkpoints.EMA_ENTRY):
                tf.train.Checkpoint(ema=self.ema).read(latest).expect_partial()
            else:
                self.ema.reset_to_weights()
            checkpoint.ema = self.ema
        iterator = self.input.make_iterator()
        if restore_data:
            self._check_same_batch_size()
            tf.train.Checkpoint(data=iterator).read(latest).expect_partial()
            logging.info("Restored the input pipeline position from %s", latest)
        if save_data:
            checkpoint.data = iterator
        return iterator

    def _check_same_batch_size(self) -> None:
        """The saved input position holds batches of the run's batch size: another one fails
        inside TensorFlow with a message naming no key."""
        saved = checkpoints.read_config(self.workdir)
        before = (saved or {}).get("train", {}).get("batch_size")
        if before is not None and before != self.config.train.batch_size:
            raise ValueError(
                f"config.train.batch_size: {self.config.train.batch_size}, but the run being "
                f"resumed in {self.workdir} used {before} (its config.json), and its saved input "
                f"position holds batches of {before}: resume with "
                f"--config.train.batch_size={before}, or train into a new workdir"
            )

    # ---------------------------------------------------------------- eval
    def evaluate(self, eval_fn, step: int) -> tuple[dict | None, bool]:
        """`eval_fn(model, step) -> metrics` on the chief, with the weights inference uses;
        keeps checkpoints/best and counts evaluations for early stopping.

        Returns (metrics or None off the chief, whether early stopping ends the run)."""
        if not self.is_chief:
            return None, False
        tc = self.config.train
        if self._best is None:
            self._best = BestCheckpoint.for_run(self.config, self.workdir)
        with self.averaged_weights():
            metrics = eval_fn(self.model, step)
            # One input worker: the best checkpoint is written by this process alone (several
            # workers would all have to take part in the save: run ondevice-eval --watch).
            saved = self._inference_checkpoint() if self.input.workers == 1 else None
            self._best.update(metrics, step, saved)
        patience = int(tc.get("early_stopping_patience") or 0)
        stop = bool(patience) and self._best.stale >= patience
        if stop:
            logging.warning(
                "Early stopping at step %d: %s has not improved on %.4f (step %d) by more than "
                "%g for %d evaluations (train.early_stopping_patience=%d)",
                step,
                self._best.metric,
                self._best.value,
                self._best.step,
                self._best.min_delta,
                self._best.stale,
                patience,
            )
        return metrics, stop

    def _inference_checkpoint(self) -> tf.train.Checkpoint:
        """What checkpoints/best holds: the weights as they are now, the step, QAT ranges."""
        extra = {} if self.quantization is None else {"quantization": self.quantization}
        return tf.train.Checkpoint(model=self.model, step=self.step, **extra)

    # ---------------------------------------------------------------- train
    def train(self, eval_fn=None) -> dict:
        """Trains to train.total_steps (resuming if the workdir has a checkpoint).

        `eval_fn(model, step) -> metrics` runs every eval.every_steps (not at the end: call
        `evaluate` for that). Returns {"step", "preempted", "early_stopped", loss terms of the
        last logged interval, "lr"} (and "metrics" of the evaluation that stopped the run early).
        """
        # Only the chief writes into the workdir, so only the chief locks it.
        lock = workdir_lock(self.workdir) if self.is_chief else contextlib.nullcontext()
        try:
            with lock:
                return self._train(eval_fn)
        finally:
            checkpoints.cleanup_worker_dirs(self.is_chief, self.worker_index, self.workdir)

    def _train(self, eval_fn):
        run = self._start_run(eval_fn)
        if run is None:
            return {"step": int(self.step.numpy()), "preempted": False}
        self._stop_requested.assign(False)
        with Preemption(on_request=lambda: self._stop_requested.assign(True)) as preemption:
            while int(self.step.numpy()) < self.config.train.total_steps:
                first_step = int(self.step.numpy())
                num_steps = self._steps_to_next_boundary(run, first_step)
                means, status = self._run_steps(run, num_steps)
                step = int(self.step.numpy())
                self._apply_nan_policy(run, status, step, num_steps)
                # A stop request can end the loop before its first step: nothing ran, so there
                # is nothing to log or save (logging would write zeros over this step's losses).
                if step > first_step:
                    self._finish_interval(run, step, means, status)
                if self._stop_agreed(run, preemption):
                    if run.saved_step != step:
                        self._save(run, step)
                    logging.warning(
                        "Stopped at step %d after a signal; the next start resumes.", step
                    )
                    run.preempted = True
                    break
                if run.eval_now(step) and step < self.config.train.total_steps:
                    if self._evaluate_during_run(run, eval_fn, step):
                        break
        run.writer.close()
        return {
            "step": int(self.step.numpy()),
            "preempted": run.preempted,
            "early_stopped": run.early_stopped,
            **run.last_scalars,
            **({"metrics": run.stop_metrics} if run.early_stopped else {}),
        }

    def _evaluate_during_run(self, run: _Run, eval_fn, step: int) -> bool:
        """An evaluation between steps; True when early stopping ends the run (saved here)."""
        metrics, stop = self.evaluate(eval_fn, step)
        if run.any_worker is not None:
            stop = bool(run.any_worker(tf.constant(stop)))
        if stop:
            if run.saved_step != step:
                self._save(run, step)
            run.early_stopped, run.stop_metrics = True, metrics
        return stop

    def _start_run(self, eval_fn) -> _Run | None:
        """Restores (or initialises) the run; None when it has already reached total_steps."""
        tc = self.config.train
        checkpoint = self.make_checkpoint()
        iterator = self._restore(checkpoint)
        manager = checkpoints.make_manager(
            checkpoint, self.workdir, tc.keep_checkpoints, self.is_chief, self.worker_index
        )
        if self.is_chief:
            checkpoints.write_config(self.config, self.workdir)
            # What the class indices mean, for export and eval (tasks/recorded_labels.py).
            label_map = self.label_map or self.task.label_map(self.config)
            recorded_labels.record(self.workdir, label_map)
        start = int(self.step.numpy())
        if start >= tc.total_steps:
            logging.info("Already trained %d/%d steps.", start, tc.total_steps)
            return None
        writer = (
            tf.summary.create_file_writer(os.path.join(self.workdir, "train"))
            if self.is_chief
            else tf.summary.create_noop_writer()
        )
        return _Run(
            iterator=iterator,
            manager=manager,
            writer=writer,
            train_loop=self._build_train_loop(self._loss_keys(self.input.element_spec)),
            any_worker=self._build_agreement() if self.input.workers > 1 else None,
            progress=Progress(tc.total_steps, self.global_batch, start),
            eval_every=self.config.eval.every_steps if eval_fn else 0,
            saved_step=start,
        )

    # Scheduling: one call of the compiled loop runs up to the next step that logs, saves,
    # evaluates or ends the run.
    def _steps_to_next_boundary(self, run: _Run, step: int) -> int:
        tc = self.config.train
        steps_per_loop = tc.steps_per_loop or tc.log_every_steps
        boundaries = [tc.total_steps, _next_multiple(step, steps_per_loop)]
        boundaries.append(_next_multiple(step, tc.log_every_steps))
        boundaries.append(_next_multiple(step, tc.checkpoint_every_steps))
        if run.eval_every:
            boundaries.append(_next_multiple(step, run.eval_every))
        return min(boundaries) - step

    def _run_steps(self, run: _Run, num_steps: int):
        step = int(self.step.numpy())
        try:
            return run_interruptible(run.train_loop, run.iterator, tf.constant(num_steps, tf.int64))
        except tf.errors.OutOfRangeError as e:
            raise ValueError(
                f"The training input ran out of data after step {step}: the data source "
                "yields fewer examples than one batch per worker (check the dataset "
                "filters and the number of workers)."
            ) from e

    def _apply_nan_policy(self, run: _Run, status: dict, step: int, num_steps: int) -> None:
        """train.nan_policy: "stop" raises before anything is saved; "skip" counts and warns
        (the compiled loop already left those updates out)."""
        bad, first_bad = int(status["bad"]), int(status["first_bad_step"])
        if not bad:
            return
        if self.config.train.nan_policy == "stop":
            raise NonFiniteLossError(
                f"Non-finite loss or gradient at step {first_bad}; stopped without "
                f"saving. The last good checkpoint is "
                f"{run.manager.latest_checkpoint or '(none)'} in {self.workdir}. Lower "
                "train.base_learning_rate, set train.clip_gradient_norm, or set "
                "train.nan_policy=skip."
            )
        run.skipped += bad
        logging.warning(
            "Non-finite loss or gradient at step %d (%d in steps %d-%d): those "
            "updates were skipped; %d skipped so far.",
            first_bad,
            bad,
            step - num_steps + 1,
            step,
            run.skipped,
        )

    def _finish_interval(self, run: _Run, step: int, means: dict, status: dict) -> None:
        """After steps ran: batch-norm recalibration, summaries and the checkpoint due now."""
        tc = self.config.train
        if step == tc.total_steps or run.eval_now(step):
            self.recalibrate_batch_norm()
        scalars = {k: float(v.numpy()) for k, v in means.items()}
        scalars["lr"] = float(self.schedule(step - 1))
        scalars["grad_norm"] = float(status["grad_norm"])
        run.last_scalars = scalars
        if step % tc.log_every_steps == 0 or step == tc.total_steps:
            self._write_summaries(run, step, scalars)
        if step % tc.checkpoint_every_steps == 0 or step == tc.total_steps:
            self._save(run, step)
            run.saved_step = step

    def _write_summaries(self, run: _Run, step: int, scalars: dict) -> None:
        speed = run.progress.update(step)
        logging.info(run.progress.line(step, scalars, speed))
        with run.writer.as_default(step=step):
            for k, v in scalars.items():
                name = k if k in ("lr", "grad_norm") else f"loss/{k}"
                tf.summary.scalar(name, v)
            tf.summary.scalar("speed/images_per_sec", speed["images_per_sec"])
            tf.summary.scalar("speed/steps_per_sec", speed["steps_per_sec"])
            tf.summary.scalar("skipped_steps", run.skipped)
        run.writer.flush()

    def _save(self, run: _Run, step: int) -> None:
        """A checkpoint of finite weights only (the last good one stays the latest otherwise)."""
        if not bool(self._weights_finite()):
            raise NonFiniteLossError(
                f"Non-finite weights at step {step}; not saving them. The last good "
                f"checkpoint is {run.manager.latest_checkpoint or '(none)'}."
            )
        checkpoints.save(run.manager, step)

    def _stop_agreed(self, run: _Run, preemption: Preemption) -> bool:
        """Whether this worker, or any worker of a multi-worker run, was asked to stop."""
        stop = preemption.requested
        if run.any_worker is not None:
            stop = bool(run.any_worker(tf.constant(stop)))
        return stop


@dataclasses.dataclass
class _Run:
    """The state of one `Trainer.train` call between its steps."""

    iterator: object
    manager: tf.train.CheckpointManager
    writer: object
    train_loop: object
    any_worker: object
    progress: Progress
    eval_every: int
    saved_step: int
    last_scalars: dict = dataclasses.field(default_factory=dict)
    skipped: int = 0
    preempted: bool = False
    early_stopped: bool = False
    stop_metrics: dict | None = None

    def eval_now(self, step: int) -> bool:
        return bool(self.eval_every and step % self.eval_every == 0)


def _xla_or_plain(compiled, build_plain):
    """`train.jit_compile`: the loop with the XLA-compiled step, or, if XLA cannot compile it
    (an op without an XLA kernel, e.g. in a custom loss), the plain loop from the first call on.
    The failed call used one batch of the input and trained nothing."""
    current = {"loop": None}

    def train_loop(iterator, num_steps):
        if current["loop"] is not None:
            return current["loop"](iterator, num_steps)
        try:
            result = compiled(iterator, num_steps)
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as e:
            if "compil" not in str(e).lower():
                raise
            logging.warning(
                "train.jit_compile: XLA cannot compile this train step, training without it (%s)",
                str(e).strip().splitlines()[0][:300],
            )
            current["loop"] = build_plain()
            return current["loop"](iterator, num_steps)
        current["loop"] = compiled
        return result

    return train_loop


def _next_multiple(step: int, every: int) -> int:
    every = max(1, int(every))
    return (step // every + 1) * every
