"""The validation loss is the task's loss over the whole eval split, labelled pixels only."""

import numpy as np
import pytest
import tensorflow as tf

from ondevice_vision.configs import lraspp_mobilenet_v3_small_shapes
from ondevice_vision.eval.validation_loss import validation_loss


def test_segmentation_validation_loss_is_the_cross_entropy_over_labelled_pixels():
    config = lraspp_mobilenet_v3_small_shapes.get_config("smoke")
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 4, 4, 4)).astype(np.float32)
    masks = rng.integers(0, 4, size=(3, 4, 4, 1)).astype(np.uint8)
    masks[0, :2] = 255  # ignored
    masks[2] = 255  # an image with nothing labelled
    dataset = tf.data.Dataset.from_tensor_slices(
        (np.arange(3, dtype=np.float32).reshape(3, 1, 1, 1), {"mask": masks})
    ).batch(2)

    def model(images, training):
        assert not training
        return tf.gather(tf.constant(logits), tf.cast(tf.reshape(images, [-1]), tf.int32))

    result = validation_loss(config, model, dataset)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    labelled = masks[..., 0] != 255
    picked = np.take_along_axis(log_p, np.where(labelled, masks[..., 0], 0)[..., None], -1)[..., 0]
    expected = -picked[labelled].mean()
    assert result["val_ce_loss"] == pytest.approx(expected, rel=1e-5)
    assert result["val_loss"] == pytest.approx(expected, rel=1e-5)
