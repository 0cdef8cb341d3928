"""Schedules, optimizer, progress line, run bookkeeping and config errors of the training engine."""

import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from ondevice_vision import files, progress, tasks
from ondevice_vision.configs import common, ssdlite_mobilenet_v3_small_shapes
from ondevice_vision.train import optimizer, strategy
from ondevice_vision.train import trainer as trainer_lib

STEPS = np.array([0, 1, 5, 9, 10, 11, 40, 77, 99, 100, 130])


def _reference(kind, base, total, warmup, warmup_lr, power=0.9, end=0.0):
    """OD API `cosine_decay_with_warmup` / DeepLab poly, written out in NumPy."""
    step = STEPS.astype(np.float64)
    progress_ = np.clip((step - warmup) / max(1, total - warmup), 0, 1)
    if kind == "cosine":
        decayed = end + 0.5 * (base - end) * (1 + np.cos(np.pi * progress_))
    elif kind == "poly":
        decayed = end + (base - end) * (1 - progress_) ** power
    else:
        decayed = np.full_like(step, base)
    if warmup:
        return np.where(step < warmup, warmup_lr + (base - warmup_lr) * step / warmup, decayed)
    return decayed


@pytest.mark.parametrize(
    "kind,warmup,warmup_lr,end",
    [
        ("cosine", 10, 0.13333, 0.0),
        ("cosine", 0, 0.0, 0.01),
        ("poly", 0, 0.0, 0.0),
        ("poly", 10, 0.001, 0.0),
        ("constant", 10, 0.0, 0.0),
    ],
)
def test_schedules_match_reference_formulas(kind, warmup, warmup_lr, end):
    schedule = optimizer.WarmupSchedule(kind, 0.4, 100, warmup, warmup_lr, end_learning_rate=end)
    got = np.array([float(schedule(s)) for s in STEPS])
    reference = _reference(kind, 0.4, 100, warmup, warmup_lr, end=end)
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-7)  # float32 near zero
    restored = optimizer.WarmupSchedule.from_config(schedule.get_config())
    assert float(restored(37)) == pytest.approx(float(schedule(37)))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"schedule": "step"}, "train.schedule"),
        ({"total_steps": 0}, "train.total_steps"),
        ({"warmup_steps": 100}, "train.warmup_steps"),
    ],
)
def test_schedule_config_errors_name_the_key(kwargs, match):
    args = {"schedule": "cosine", "base_learning_rate": 0.1, "total_steps": 100, **kwargs}
    with pytest.raises(ValueError, match=match):
        optimizer.WarmupSchedule(**args)


def test_optimizer_choice_and_errors():
    tc = common.train_config()
    tc.optimizer, tc.clip_gradient_norm = "momentum", 0.0
    sgd = optimizer.build_optimizer(tc)
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.momentum == 0.9
    assert sgd.global_clipnorm is None
    tc.optimizer, tc.clip_gradient_norm = "adam", 5.0
    adam = optimizer.build_optimizer(tc)
    assert isinstance(adam, keras.optimizers.Adam) and adam.global_clipnorm == 5.0
    tc.optimizer = "lamb"
    with pytest.raises(ValueError, match="train.optimizer"):
        optimizer.build_optimizer(tc)


def test_optimizer_applies_the_gradient_it_is_given_under_a_strategy():
    """Keras would sum the gradient over replicas again; ours are already summed by the step."""
    tc = common.train_config()
    tc.update(optimizer="momentum", momentum=0.0, schedule="constant", base_learning_rate=0.5)
    tc.clip_gradient_norm = 1.0
    one = strategy.create_strategy("one_device")
    with one.scope():
        variable = tf.Variable([0.0, 0.0])
        opt = optimizer.build_optimizer(tc)
        opt.build([variable])

    @tf.function
    def step():
        one.run(lambda: opt.apply([tf.constant([3.0, 4.0])], [variable]))

    step()
    # Clipped to norm 1 ([0.6, 0.8]), times the learning rate.
    np.testing.assert_allclose(variable.numpy(), [-0.3, -0.4], rtol=1e-6)


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_rate_and_eta_leave_out_the_tracing_interval():
    clock = _Clock()
    p = progress.Progress(total_steps=100, global_batch_size=4, start_step=0, clock=clock)
    clock.now = 30.0  # the first 10 steps include tf.function tracing
    first = p.update(10)
    assert first["steps_per_sec"] == pytest.approx(10 / 30) and math.isinf(first["eta_seconds"])
    clock.now = 31.0
    second = p.update(20)
    assert second["steps_per_sec"] == pytest.approx(10.0)
    assert second["images_per_sec"] == pytest.approx(40.0)
    assert second["eta_seconds"] == pytest.approx(8.0)
    clock.now = 33.0
    third = p.update(30)  # 5 steps/s now, smoothed 0.7 * 10 + 0.3 * 5
    assert third["eta_seconds"] == pytest.approx(70 / 8.5)

    scalars = {"cls_loss": 0.75, "box_loss": 0.25, "loss": 1.0, "lr": 0.1, "grad_norm": 2.5}
    assert p.line(20, scalars, second) == (
        "step  20/100 | loss 1.0000 (cls_loss 0.7500 box_loss 0.2500) | lr 0.10000 | "
        "grad_norm 2.5 | 10.00 steps/s 40.0 img/s | ETA 8s"
    )
    assert p.line(10, scalars, first).endswith("| ETA ?")


@pytest.mark.parametrize(
    "seconds,text", [(0, "0s"), (59.9, "59s"), (61, "1m01s"), (3600, "1h00m"), (90061, "25h01m")]
)
def test_format_duration(seconds, text):
    assert progress.format_duration(seconds) == text


def test_next_multiple():
    assert [trainer_lib._next_multiple(s, 5) for s in (0, 4, 5, 9)] == [5, 5, 10, 10]
    assert trainer_lib._next_multiple(3, 0) == 4


def _smoke():
    config = ssdlite_mobilenet_v3_small_shapes.get_config("smoke")
    config.model.input_size = (32, 32)
    return config


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("nan_policy", "ignore", "train.nan_policy"),
        ("optimizer", "rmsprop", "train.optimizer"),
        ("schedule", "exponential", "train.schedule"),
    ],
)
def test_trainer_rejects_bad_train_settings(tmp_path, key, value, match):
    config = _smoke()
    config.train[key] = value
    with pytest.raises(ValueError, match=match):
        trainer_lib.Trainer(config, str(tmp_path), strategy.create_strategy("one_device"))


def test_unknown_task_is_named():
    config = _smoke()
    config.task = "keypoints"
    with pytest.raises(ValueError, match="keypoints"):
        tasks.get_task(config)


def test_check_workdir_creates_or_names_the_directory(tmp_path):
    files.check_writable_dir(str(tmp_path / "a" / "b"))
    assert os.path.isdir(tmp_path / "a" / "b") and not os.listdir(tmp_path / "a" / "b")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(PermissionError, match=f"workdir {blocker}/run is not writable"):
        files.check_writable_dir(str(blocker / "run"))


def test_imagenet_weights_initialise_a_segmenters_backbone(tmp_path):
    """train.imagenet_weights works for segmentation configs too (the trainer once looked up a
    layer named "backbone" that only the detector had)."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    from ondevice_vision.backbones import build_backbone
    from ondevice_vision.configs import lraspp_mobilenet_v3_small_shapes

    reference = keras.applications.MobileNetV3Small(
        input_shape=(64, 64, 3), include_top=False, weights=None, include_preprocessing=False
    )
    rng = np.random.default_rng(0)
    reference.set_weights([rng.normal(size=w.shape).astype("float32") for w in reference.weights])
    path = str(tmp_path / "weights.h5")
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, reference)
    config = lraspp_mobilenet_v3_small_shapes.get_config("smoke")
    config.model.reduced_tail = None  # the keras.applications architecture
    config.train.imagenet_weights = path
    trainer = trainer_lib.Trainer(config, str(tmp_path / "run"), strategy.create_strategy("auto"))
    trainer._initialise_weights()
    expected = build_backbone("mobilenet_v3_small", include_top=False)
    from ondevice_vision.backbones import load_imagenet_weights

    load_imagenet_weights(expected, path)
    by_name = {v.path: v.numpy() for v in expected.weights}
    loaded = {v.path: v.numpy() for v in trainer.model.backbone.weights}
    shared = sorted(set(by_name) & set(loaded))
    assert len(shared) > 50
    for name in shared:
        np.testing.assert_array_equal(loaded[name], by_name[name], err_msg=name)


def test_a_second_trainer_on_a_locked_workdir_is_refused(tmp_path):
    from ondevice_vision.workdir_lock import WorkdirLockedError, workdir_lock

    config = ssdlite_mobilenet_v3_small_shapes.get_config("smoke")
    workdir = str(tmp_path / "run")
    trainer = trainer_lib.Trainer(config, workdir, strategy.create_strategy("one_device"))
    with workdir_lock(workdir):
        with pytest.raises(WorkdirLockedError, match="in use by the training run"):
            trainer.train()
    assert not os.path.exists(os.path.join(workdir, "checkpoints"))


def test_a_stop_before_a_loops_first_step_logs_nothing_over_the_last_step(tmp_path):
    """A signal that lands between two loops stops the next one before its first step: the
    trainer saves and stops, and writes no zero losses over the last step's (a multi-worker run
    once logged loss 0.0 at its stop step that way)."""
    import signal
    import time

    from tests.helpers.train_cli import scalars

    config = ssdlite_mobilenet_v3_small_shapes.get_config("smoke")
    config.train.total_steps = 6
    config.train.warmup_steps = 0
    config.train.steps_per_loop = 1
    config.train.log_every_steps = 1
    config.train.checkpoint_every_steps = 6
    trainer = trainer_lib.Trainer(config, str(tmp_path), strategy.create_strategy("one_device"))
    build = trainer._build_train_loop
    calls = []

    def build_with_signal(keys=None):
        loop = build(keys)

        def loop_with_signal(iterator, num_steps):
            calls.append(int(trainer.step.numpy()))
            if len(calls) == 3:  # after step 2: the signal arrives before the loop's first step
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.5)  # the main thread's handler sets the stop flag meanwhile
            return loop(iterator, num_steps)

        return loop_with_signal

    trainer._build_train_loop = build_with_signal
    result = trainer.train()
    assert result["preempted"] and result["step"] == 2
    losses = scalars(str(tmp_path), "loss/loss")
    assert sorted(losses) == [1, 2] and min(losses.values()) > 0, losses
    assert result["loss"] == pytest.approx(losses[2])
    assert trainer_lib.checkpoints.latest_checkpoint(str(tmp_path)).endswith("-2")


def test_a_resumed_run_with_another_batch_size_names_the_key(tmp_path):
    """The check the trainer makes before restoring a saved input position (which holds batches
    of the run's size; another size fails inside TensorFlow naming no key)."""
    from ondevice_vision import checkpoints

    config = _smoke()
    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    earlier = config.copy_and_resolve_references()
    earlier.train.batch_size = 4
    checkpoints.write_config(earlier, workdir)
    config.train.batch_size = 2
    trainer = trainer_lib.Trainer(config, workdir, strategy.create_strategy("one_device"))
    with pytest.raises(
        ValueError,
        match=r"config.train.batch_size: 2, but the run being resumed in .* used 4 .*"
        r"--config.train.batch_size=4",
    ):
        trainer._check_same_batch_size()
    checkpoints.write_config(config, workdir)
    trainer._check_same_batch_size()
