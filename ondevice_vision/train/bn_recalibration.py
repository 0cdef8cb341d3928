"""Re-estimates batch-norm moving statistics from training batches (`train.bn_recalibration_steps`).

Inference uses each BN layer's moving mean and variance, an exponential average with momentum
m over the training steps: it forgets its initial value (mean 0, variance 1) only after several
times 1 / (1 - m) steps, 333 for the DeepLab recipe's 0.997, and until then describes weights
that changed long ago. A short run, a fine-tune, or a quantisation-aware phase therefore
evaluates with statistics that do not match its own weights, whatever the loss says. The fix
used here (as in PyTorch's `torch.optim.swa_utils.update_bn` and the QAT literature): with the
weights fixed, forward N training batches in training mode and set every moving statistic to
the plain mean of the N batch statistics. The trainer does it before each evaluation and before
the final checkpoint, so evaluation, export and the saved model all use statistics of the final
weights. Layers frozen with `trainable=False` keep theirs.
"""

from __future__ import annotations

import time

import keras
import tensorflow as tf
from absl import logging


def batch_norm_layers(layer) -> list[keras.layers.BatchNormalization]:
    """The BN layers of a model (nested models included) whose statistics training updates."""
    found = []
    for child in getattr(layer, "layers", []):
        if isinstance(child, keras.layers.BatchNormalization):
            if child.trainable:
                found.append(child)
        else:
            found.extend(batch_norm_layers(child))
    return found


class BatchNormRecalibration:
    """`run(iterator, steps)` re-estimates the statistics of `model` on `steps` batches.

    `next_batch(iterator)` returns (images, labels) per replica, as the train loop gets them.
    """

    def __init__(self, model, strategy, next_batch):
        self.model = model
        self.strategy = strategy
        self.layers = batch_norm_layers(model)
        self.stats = [v for bn in self.layers for v in (bn.moving_mean, bn.moving_variance)]
        with strategy.scope():
            self.sums = [
                tf.Variable(tf.zeros(v.shape, tf.float32), trainable=False) for v in self.stats
            ]
        self._forward = self._build_forward(next_batch)

    def _build_forward(self, next_batch):
        strategy = self.strategy

        @tf.function
        def forward(iterator):
            images, _ = next_batch(iterator)
            strategy.run(lambda x: self.model(x, training=True), args=(images,))
            for total, stat in zip(self.sums, self.stats, strict=True):
                total.assign_add(tf.cast(stat.value, tf.float32))

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
            for total in self.sums:
                total.assign(tf.zeros_like(total))
            for _ in range(steps):
                self._forward(iterator)
            for total, stat in zip(self.sums, self.stats, strict=True):
                stat.assign(tf.cast(total / steps, stat.dtype))
        finally:
            for bn, momentum in zip(self.layers, momenta, strict=True):
                bn.momentum = momentum
        logging.info(
            "Re-estimated the statistics of %d batch-norm layers on %d training batches (%.1fs)",
            len(self.layers),
            steps,
            time.perf_counter() - start,
        )
