"""The fused batch-norm training step computes what Keras' BatchNormalization computes: the same
outputs, gradients and moving statistics to float rounding, and whole models give the same loss
and gradients with it as with Keras' path (docs/speed.md: the speed-up it buys)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ondevice_vision import tasks
from ondevice_vision.backbones.batch_norm import BatchNormalization
from tests.helpers.export_fixtures import detection_config, segmentation_config


def _pair(shape, **options):
    """A Keras layer and ours with the same (non-default) weights."""
    rng = np.random.default_rng(1)
    keras_bn = keras.layers.BatchNormalization(**options)
    ours = BatchNormalization(**options)
    keras_bn.build(shape)
    ours.build(shape)
    for a, b in zip(keras_bn.weights, ours.weights, strict=True):
        value = a.numpy() + rng.uniform(0.1, 0.5, a.shape).astype(np.float32)
        a.assign(value)
        b.assign(value)
    return keras_bn, ours


def _step(layer, x, upstream, training=True):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(y * upstream)
    grads = tape.gradient(loss, [x, *layer.trainable_weights])
    return y, grads


def _assert_close(got, want, rtol=1e-4):
    got, want = np.asarray(got), np.asarray(want)
    scale = max(float(np.abs(want).max()), 1e-6)
    np.testing.assert_allclose(got, want, rtol=0, atol=rtol * scale)


def _fused_ops(fn, *args):
    graph = tf.function(fn).get_concrete_function(*args).graph
    return [op.type for op in graph.get_operations() if op.type.startswith("FusedBatchNorm")]


@pytest.mark.parametrize(
    "shape,options",
    [
        ((4, 9, 7, 16), {"epsilon": 1e-3, "momentum": 0.97}),
        ((2, 5, 5, 8), {"epsilon": 2e-5, "momentum": 0.9, "center": False}),
        ((3, 4, 4, 6), {"epsilon": 1e-3, "momentum": 0.0, "scale": False}),
        ((1, 4, 4, 4), {"epsilon": 1e-3, "momentum": 0.5}),  # the smallest fused map, batch 1
    ],
)
def test_fused_training_step_equals_keras_layer(shape, options):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(2.0, 3.0, shape).astype(np.float32))
    upstream = tf.constant(rng.normal(size=shape).astype(np.float32))
    keras_bn, ours = _pair(shape, **options)
    assert _fused_ops(lambda t: ours(t, training=True), x) == ["FusedBatchNormV3"]
    for run in (_step, tf.function(_step, reduce_retracing=False)):
        want_y, want_grads = run(keras_bn, x, upstream)
        got_y, got_grads = run(ours, x, upstream)
        _assert_close(got_y, want_y)
        assert len(got_grads) == len(want_grads)
        for got, want in zip(got_grads, want_grads, strict=True):
            _assert_close(got, want)
        for got, want in zip(
            ours.non_trainable_weights, keras_bn.non_trainable_weights, strict=True
        ):
            _assert_close(got.numpy(), want.numpy(), rtol=1e-5)


@pytest.mark.parametrize(
    "training,setting",
    [
        (False, None),
        (True, "synchronized"),
        (True, "frozen"),
        (True, "small_epsilon"),
        (True, "small_map"),
    ],
)
def test_other_cases_run_keras_own_path(training, setting):
    """Inference, frozen and synchronized layers, tiny epsilons and maps under 4x4 are Keras'
    computation, bit for bit (so exports and sync BN are untouched)."""
    shape = (2, 3, 5, 8) if setting == "small_map" else (2, 6, 6, 8)
    options = {"epsilon": 1e-6 if setting == "small_epsilon" else 1e-3}
    if setting == "synchronized":
        options["synchronized"] = True
    keras_bn, ours = _pair(shape, **options)
    if setting == "frozen":
        keras_bn.trainable = ours.trainable = False
    x = tf.constant(np.random.default_rng(0).normal(size=shape).astype(np.float32))
    assert _fused_ops(lambda t: ours(t, training=training), x) == []
    np.testing.assert_array_equal(ours(x, training=training), keras_bn(x, training=training))
    for got, want in zip(ours.weights, keras_bn.weights, strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def _model_step(task, config, model, images, labels):
    """Loss, moving statistics after the step, and each BatchNormalization call in the model as
    (layer, input, output, gradient of the loss with respect to the output, fused or not)."""
    calls = []
    call, fusable = BatchNormalization.call, BatchNormalization._fusable

    def recording_call(self, inputs, training=None, mask=None):
        outputs = call(self, inputs, training=training, mask=mask)
        calls.append([self, inputs, outputs, None, fusable(self, inputs, mask)])
        return outputs

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(BatchNormalization, "call", recording_call)
        with tf.GradientTape() as tape:
            outputs = model(images, training=True)
            sums, normalizer = task.compute_losses(config, outputs, labels)
            loss = tf.add_n([tf.reduce_sum(v) for v in sums.values()])
            loss /= tf.maximum(tf.reduce_sum(normalizer), 1.0)
    for record, upstream in zip(calls, tape.gradient(loss, [c[2] for c in calls]), strict=True):
        record[3] = upstream
    stats = [v.numpy().copy() for v in model.non_trainable_variables]
    return float(loss), stats, calls


@pytest.mark.parametrize("make_config", [detection_config, segmentation_config])
def test_models_give_keras_losses_statistics_and_layer_gradients(make_config, monkeypatch):
    """A whole model (the smoke configs: SSDLite V3-Small at 128x128, LR-ASPP V3-Small at 64x96)
    gives the same loss and moving statistics for one batch, fused or on Keras' path, and each
    fused layer, given the input and upstream gradient it met in the model, gives Keras'
    output and gradients.

    Whole-model gradients are not compared: SSDLite's extra layers end in 1x1 maps, whose BN at
    batch 2 normalises two values per channel, and there float rounding anywhere upstream (not
    only the fused kernel) moved single gradients by up to 3.5% in one of 12 batches. Bounds
    are 20-50x the largest differences seen over 12 detection and 6 segmentation batches:
    losses 4.5e-7 apart (relative), moving statistics 2.2e-6.
    """
    config = make_config()
    task = tasks.get_task(config)
    keras.utils.set_random_seed(0)
    images, labels = next(iter(task.build_dataset(config, "train", 2)[0]))
    model = task.build_model(config)
    weights = [v.numpy() for v in model.variables]
    fused_loss, fused_stats, calls = _model_step(task, config, model, images, labels)
    for v, w in zip(model.variables, weights, strict=True):
        v.assign(w)
    monkeypatch.setattr(BatchNormalization, "_fusable", lambda *args: False)
    loss, stats, _ = _model_step(task, config, model, images, labels)
    assert fused_loss == pytest.approx(loss, rel=1e-5)
    for got, want in zip(fused_stats, stats, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=5e-5)
    fused_calls = [c for c in calls if c[4]]
    assert len(fused_calls) > 10
    for layer, inputs, outputs, upstream, _ in fused_calls:
        # The weights the step met (moving statistics do not enter a training-mode output).
        want_y, want_grads = _step(layer, inputs, upstream)
        _assert_close(outputs, want_y)
        monkeypatch.undo()
        _, got_grads = _step(layer, inputs, upstream)
        monkeypatch.setattr(BatchNormalization, "_fusable", lambda *args: False)
        # Rounding in the per-channel sums of the gamma and beta gradients is relative to the
        # sum of |upstream|, not to the result (which cancels to near 0 in some layers).
        floor = 1e-5 * float(tf.reduce_max(tf.reduce_sum(tf.abs(upstream), axis=(0, 1, 2))))
        for got, want in zip(got_grads, want_grads, strict=True):
            atol = 1e-4 * float(np.abs(want).max()) + floor
            np.testing.assert_allclose(got, want, rtol=0, atol=atol, err_msg=layer.name)
