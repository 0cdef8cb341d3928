"""Multi-scale, flip and sliding-window inference (tasks/segmentation_inference.py)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from ondevice_vision.configs import base_segmentation
from ondevice_vision.tasks import segmentation as segmentation_task
from ondevice_vision.tasks import segmentation_inference as inference

K = 3


def _pointwise_model():
    """Per-pixel logits (a 1x1 conv): mirror- and window-equivariant, so flips and windows done
    right change nothing."""
    inputs = keras.Input((None, None, 3))
    conv = layers.Conv2D(K, 1, kernel_initializer="glorot_normal", bias_initializer="ones")
    return keras.Model(inputs, conv(inputs / 127.5 - 1.0))


def _images(h=21, w=30, batch=2):
    rng = np.random.default_rng(1)
    return rng.uniform(0, 255, (batch, h, w, 3)).astype(np.float32)


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_flip_is_mirrored_back():
    model, images = _pointwise_model(), _images()
    plain = _softmax(model(images).numpy())
    flipped = inference.class_probabilities(model, images, flip=True).numpy()
    np.testing.assert_allclose(flipped, plain, atol=1e-6)


def test_scales_average_the_probabilities_at_the_input_size():
    model, images = _pointwise_model(), _images()
    got = inference.class_probabilities(model, images, scales=(0.5, 1.0), flip=True).numpy()
    # Scale 0.5 of 21 x 30: int((21 - 1) * 0.5 + 1) = 11, int(29 * 0.5 + 1) = 15 (DeepLab).
    small = tf.image.resize(images, (11, 15), method="bilinear")
    runs = []
    for x in (small, images):
        for mirrored in (False, True):
            y = x[:, :, ::-1] if mirrored else x
            logits = model(y).numpy()
            logits = logits[:, :, ::-1] if mirrored else logits
            runs.append(_softmax(tf.image.resize(logits, (21, 30), method="bilinear").numpy()))
    np.testing.assert_allclose(got, np.mean(runs, axis=0), atol=1e-5)
    assert np.abs(got - runs[2]).max() > 1e-3  # the half-size runs changed the result


@pytest.mark.parametrize("window, stride", [((8, 12), (5, 7)), ((8, 12), None), ((40, 7), (3, 3))])
def test_sliding_window_covers_every_pixel(window, stride):
    model, images = _pointwise_model(), _images()
    plain = _softmax(model(images).numpy())
    got = inference.class_probabilities(model, images, window=window, window_stride=stride)
    np.testing.assert_allclose(got.numpy(), plain, atol=1e-6)


def test_sliding_window_averages_overlapping_windows():
    """A model whose output depends on its whole input (a global mean) sees each window alone."""
    inputs = keras.Input((None, None, 3))
    mean = layers.Lambda(lambda x: tf.reduce_mean(x, axis=(1, 2), keepdims=True))(inputs)
    logits = layers.Lambda(lambda t: t[0][..., :K] * 0.0 + t[1][..., :K] / 50.0)([inputs, mean])
    model = keras.Model(inputs, logits)
    images = _images(h=6, w=10, batch=1)
    got = inference.class_probabilities(model, images, window=(6, 6), window_stride=(6, 4)).numpy()
    left = _softmax(images[:, :, 0:6].mean(axis=(1, 2)) / 50.0)
    right = _softmax(images[:, :, 4:10].mean(axis=(1, 2)) / 50.0)
    np.testing.assert_allclose(got[0, 0, 0], left[0], atol=1e-6)
    np.testing.assert_allclose(got[0, 0, 9], right[0], atol=1e-6)
    np.testing.assert_allclose(got[0, 0, 5], (left[0] + right[0]) / 2, atol=1e-6)


def test_task_predict_uses_the_eval_options():
    config = base_segmentation.segmentation_config("mobilenet_v3_small")
    config.eval.scales = (0.5, 1.0)
    config.eval.flip = True
    model, images = _pointwise_model(), _images()
    got = segmentation_task.predict(config, model, images)
    want = inference.class_probabilities(model, images, scales=(0.5, 1.0), flip=True)
    np.testing.assert_allclose(got["probabilities"].numpy(), want.numpy(), atol=1e-6)
    np.testing.assert_array_equal(got["semantic_map"].numpy(), np.argmax(want.numpy(), -1))
    config.eval.scales, config.eval.flip = (1.0,), False
    config.eval.window = (0, 0)
    assert inference.is_plain(inference.eval_options(config))


def test_a_checkpoint_evaluates_at_another_output_stride(tmp_path):
    """eval.output_stride=16 / 8 on an OS32 checkpoint: same weights, dilated convolutions."""
    from ondevice_vision import tasks
    from ondevice_vision.configs import lraspp_mobilenet_v3_small_cityscapes_deeplab as deeplab

    config = deeplab.get_config()
    config.model.num_classes = 3
    config.data.crop_size = (65, 65)
    os32 = segmentation_task.build_model(config)
    rng = np.random.default_rng(0)
    for variable in os32.weights:  # away from the initial values, so a missed copy shows
        variable.assign(variable + rng.normal(0, 0.05, variable.shape))
    path = tf.train.Checkpoint(model=os32).write(str(tmp_path / "ckpt"))
    images = _images(h=65, w=97, batch=1)
    plain = os32(images, training=False).numpy()
    for output_stride in (16, 8):
        config.eval.output_stride = output_stride
        model, _ = tasks.load_trained_model(config, None, path)
        assert model.output_stride == output_stride
        for ours, theirs in zip(model.weights, os32.weights, strict=True):
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
        dilated = model(images, training=False).numpy()
        assert dilated.shape == plain.shape
        # Dilation changes the computation, not the weights.
        assert np.abs(dilated - plain).max() > 1e-3
