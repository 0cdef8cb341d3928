"""train.jit_compile: the XLA-compiled step trains as the plain one does, and a loop XLA cannot
compile falls back to plain TensorFlow with a warning instead of failing."""

import keras
import pytest
import tensorflow as tf

from ondevice_vision.train import trainer as trainer_lib
from ondevice_vision.train.strategy import create_strategy
from tests.helpers.export_fixtures import segmentation_config


def _losses(tmp_path, jit, batch=None, steps=2):
    """(loss, gradient norm) of each of `steps` steps on one fixed batch (by default the first
    of the training pipeline), and the batch."""
    config = segmentation_config()
    config.train.jit_compile = jit
    config.train.batch_size = 2
    keras.utils.set_random_seed(0)
    trainer = trainer_lib.Trainer(config, str(tmp_path / str(jit)), create_strategy("one_device"))
    loop = trainer._build_train_loop()
    if batch is None:
        batch = next(iter(trainer._train_dataset()))
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    results = []
    for _ in range(steps):
        means, status = loop(iterator, tf.constant(1, tf.int64))
        results.append((float(means["loss"]), float(status["grad_norm"])))
    return results, batch


def test_xla_step_trains_as_the_plain_step(tmp_path, monkeypatch):
    """Losses and gradient norms of two steps agree to 1e-4 (seen: 1e-6 and closer). Weights
    are not compared: Adam's first update is about the learning rate times the sign of each
    gradient, so gradients that are zero but for rounding moved single weights by 1%."""
    warnings = []
    monkeypatch.setattr(trainer_lib.logging, "warning", lambda *a: warnings.append(a))
    plain, batch = _losses(tmp_path, jit=False)
    # The same batch: the pipeline's parallel map hands on whichever example is ready first
    # (under load two builds gave other first batches: losses 4% apart before any update).
    xla, _ = _losses(tmp_path, jit=True, batch=batch)
    assert not warnings  # it compiled
    for got, want in zip(xla, plain, strict=True):
        assert got == pytest.approx(want, rel=1e-4)


def _loop_of(step):
    """A train loop's signature, (iterator, num_steps), around a one-batch `step`."""
    return lambda iterator, num_steps: step(next(iterator))


def _formatted_length(x):
    return tf.strings.length(tf.strings.as_string(x))  # XLA has no kernel for AsString


def test_loop_xla_cannot_compile_falls_back_to_plain(monkeypatch):
    """The first call of the compiled loop fails to compile (having taken one batch); it and
    every later call run the plain loop (built once), with one warning; an error that is not about compiling is raised
    as it is."""
    warnings = []
    monkeypatch.setattr(trainer_lib.logging, "warning", lambda *a: warnings.append(a))
    built = []

    def build_plain():
        built.append(True)
        return _loop_of(tf.function(_formatted_length))

    compiled = _loop_of(tf.function(_formatted_length, jit_compile=True))
    loop = trainer_lib._xla_or_plain(compiled, build_plain)
    # The failed first attempt took "1.500000"; the plain loop then gets "22.250000", ...
    batches = iter(tf.constant([1.5, 22.25, 333.125, 4444.0625]))
    assert [int(loop(batches, 1)) for _ in range(3)] == [9, 10, 11]
    assert len(built) == 1
    assert len(warnings) == 1 and "XLA cannot compile" in warnings[0][0]

    def bad_batch(x):
        raise tf.errors.InvalidArgumentError(None, None, "a bad batch")

    loop = trainer_lib._xla_or_plain(_loop_of(bad_batch), build_plain)
    with pytest.raises(tf.errors.InvalidArgumentError, match="a bad batch"):
        loop(iter(tf.constant([1.0])), 1)
    assert len(built) == 1
