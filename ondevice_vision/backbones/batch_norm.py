"""Batch normalization whose training forward and backward are TensorFlow's fused kernels.

Keras 3's `BatchNormalization` computes a training step from separate ops (`tf.nn.moments`:
mean, squared difference, mean; then rsqrt, multiplications and additions), each a full pass
over the activation tensor, and about twice as many in the backward pass, where the moments'
gradients broadcast by `Tile`. On a CPU that was the largest single part of an SSDLite training
step (docs/speed.md). TensorFlow's `FusedBatchNormV3` and its gradient do the same arithmetic in
one pass each (oneDNN kernels on x86).

The result is the same function: the normalised output and the gradients agree with Keras' path
to float rounding, and the moving statistics get the same update from the same biased batch
variance (the fused kernel returns Bessel's unbiased variance for running averages; it is scaled
back by (n - 1) / n). Tested against Keras' layer in tests/backbones/test_batch_norm.py.

Everything else keeps Keras' own path, so inference, exports and checkpoints are unchanged:
inference mode, frozen layers, synchronized BN (`train.sync_batch_norm`), masks, renorm, inputs
that are not 4-D channels-last, feature maps under 4x4 (or of unknown size), and an epsilon
below the fused kernel's minimum.
"""

from __future__ import annotations

import keras
import tensorflow as tf

# The fused kernel raises smaller epsilons to this (cuDNN's minimum); such layers stay unfused.
_MIN_FUSED_EPSILON = 1.001e-5
# Feature maps smaller than 4x4 stay unfused: over so few values per channel the fused kernel's
# batch variance departs from Keras' two-pass one by far more than rounding (SSDLite's 1x1 extra
# layers at batch 2 changed some gradients by 20%; tests/backbones/test_batch_norm.py), and such
# maps cost next to nothing either way.
_MIN_FUSED_PIXELS = 16


@keras.saving.register_keras_serializable(package="ondevice_vision")
class BatchNormalization(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization with the fused training step (same weights and names)."""

    def _fusable(self, inputs, mask) -> bool:
        return (
            mask is None
            and not self.synchronized
            and not self.renorm
            and len(inputs.shape) == 4
            and self.axis in (-1, 3, [3], [-1])
            and (inputs.shape[1] or 0) * (inputs.shape[2] or 0) >= _MIN_FUSED_PIXELS
            and self.epsilon >= _MIN_FUSED_EPSILON
            and keras.backend.backend() == "tensorflow"
        )

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable and self._fusable(inputs, mask)):
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, tf.float32)  # as Keras' path: statistics in float32
        channels = x.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels])
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels])
        y, mean, unbiased = tf.compat.v1.nn.fused_batch_norm(
            x, gamma, beta, epsilon=self.epsilon, data_format="NHWC", is_training=True
        )
        shape = tf.shape(x)
        n = tf.cast(shape[0] * shape[1] * shape[2], tf.float32)
        variance = unbiased * tf.math.divide_no_nan(n - 1.0, n)
        momentum = self.momentum
        moving_mean = tf.cast(self.moving_mean, tf.float32)
        moving_variance = tf.cast(self.moving_variance, tf.float32)
        self.moving_mean.assign(
            tf.cast(moving_mean * momentum + mean * (1.0 - momentum), self.moving_mean.dtype)
        )
        self.moving_variance.assign(
            tf.cast(
                moving_variance * momentum + variance * (1.0 - momentum),
                self.moving_variance.dtype,
            )
        )
        return tf.cast(y, self.compute_dtype)
