"""Re-estimates batch-norm moving statistics from training batches (`train.bn_recalibration_steps`).

Inference uses each BN layer's moving mean and variance, an exponential average with momentum
m over the training steps: it forgets its initial value (mean 0, variance 1) only after several
times 1 / (1 - m) steps, 333 for the DeepLab recipe's 0.997, and until then describes weights
that changed long ago. A short run or a fine-tune therefore
evaluates with statistics that do not match its own weights, whatever the loss says. The fix
used here (as in PyTorch's `torch.optim.swa_utils.update_bn` and the QAT literature): with the
weights fixed, forward N training batches in training mode and set every moving statistic to
the plain mean of the N batch statistics. The trainer does it before each evaluation and before
the final checkpoint, so evaluation, export and the saved model all use statistics of the final
weights. Layers frozen with `trainable=False` keep theirs, and so does a quantization-aware run after its
`delay` (the trainer skips it: the folded weights were trained against the frozen statistics).
"""

from __future__ import annotations

import time

import keras
import tensorflow as tf
from absl import logging


def batch_norm_layers(layer, trainable_only: bool = True) -> list[keras.layers.BatchNormalization]:
    """The BN layers of a model (nested models included); by default those whose statistics
    training updates."""
    found = []
    for child in getattr(layer, "layers", []):
        if isinstance(child, keras.layers.BatchNormalization):
            if child.trainable or not trainable_only:
                found.append(child)
        else:
            found.extend(batch_norm_layers(child, trainable_only))
    return found


class BatchNormRecalibration:
    """`run(iterator, steps)` re-estimates the statistics of `model` on `steps` batches.

    `next_batch(iterator)` returns (images, labels) per replica, as the train loop gets them.
    """

    def __init__(self, model, strategy, next_batch):
        self.model = model
        self.strategy = strategy
        self.layers = batch_norm_layers(model)
        with strategy.scope():
            # Per layer: the sums over batches of the batch mean and of the batch mean square.
            self.sums = [
                (
                    tf.Variable(tf.zeros(bn.moving_mean.shape), trainable=False),
                    tf.Variable(tf.zeros(bn.moving_mean.shape), trainable=False),
                )
                for bn in self.layers
            ]
        self._forward = self._build_forward(next_batch)

    def _build_forward(self, next_batch):
        strategy = self.strategy

        @tf.function(autograph=False)
        def forward(iterator):
            images, _ = next_batch(iterator)
            strategy.run(lambda x: self.model(x, training=True), args=(images,))
            for bn, (mean_sum, square_sum) in zip(self.layers, self.sums, strict=True):
                mean = tf.cast(bn.moving_mean.value, tf.float32)
                variance = tf.cast(bn.moving_variance.value, tf.float32)
                mean_sum.assign_add(mean)
                square_sum.assign_add(variance + tf.square(mean))

        return forward

    def run(self, iterator, steps: int) -> None:
        if steps <= 0 or not self.layers:
            return
        start = time.perf_counter()
        momenta = [bn.momentum for bn in self.layers]
        # Momentum 0: each forward leaves one batch's statistics in the moving variables, which
        # `forward` adds up. The value is read when `forward` is traced, the first time only.
        for bn in self.layers:
            bn.momentum = 0.0
        try:
            for mean_sum, square_sum in self.sums:
                mean_sum.assign(tf.zeros_like(mean_sum))
                square_sum.assign(tf.zeros_like(square_sum))
            for _ in range(steps):
                self._forward(iterator)
            for bn, (mean_sum, square_sum) in zip(self.layers, self.sums, strict=True):
                mean = mean_sum / steps
                # The variance over all N batches' activations, not the mean of the per-batch
                # variances: with small batches (or 1x1 maps) the batch means scatter too.
                variance = tf.maximum(square_sum / steps - tf.square(mean), 0.0)
                bn.moving_mean.assign(tf.cast(mean, bn.moving_mean.dtype))
                bn.moving_variance.assign(tf.cast(variance, bn.moving_variance.dtype))
        finally:
            for bn, momentum in zip(self.layers, momenta, strict=True):
                bn.momentum = momentum
        logging.info(
            "Re-estimated the statistics of %d batch-norm layers on %d training batches (%.1fs)",
            len(self.layers),
            steps,
            time.perf_counter() - start,
        )
