"""Exponential moving averages of the trainable weights (`train.ema_decay`; 0 = off).

The Object Detection API's `use_moving_average` and TF Model Garden's `ema` (trainable weights
only, its default): after every optimizer update, each trainable weight w has an average

    a <- d_t * a + (1 - d_t) * w,    d_t = min(ema_decay, (1 + t) / (10 + t))

where t is the number of updates before this one (tf.train.ExponentialMovingAverage's
`num_updates` rule: a fresh run is not held at its random initial weights for thousands of steps).
Batch-norm moving statistics are not averaged: they are re-estimated under the averaged weights
(train.bn_recalibration_steps) before every evaluation.

The averages live in the checkpoint under `ema/averages/<variable path>`; evaluation, the best
checkpoint and export use them in place of the weights (checkpoints.restore_weights).
"""

from __future__ import annotations

import contextlib

import tensorflow as tf

from ondevice_vision import checkpoints


class WeightAverages(tf.Module):
    def __init__(self, model, decay: float):
        super().__init__(name="ema")
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema_decay must be in (0, 1) (0: off), got {decay}")
        self.decay = float(decay)
        self.weights = list(model.trainable_variables)
        keys = [checkpoints.average_key(v) for v in self.weights]
        if len(set(keys)) != len(keys):
            raise ValueError("train.ema_decay: the model has several weights with one path")
        # aggregation: every replica holds the same weights after the update, so the first
        # replica's average is everyone's.
        self.averages = {
            key: tf.Variable(
                v.value,
                trainable=False,
                name=f"ema_{i}",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
            for i, (key, v) in enumerate(zip(keys, self.weights, strict=True))
        }
        self._pairs = list(zip(self.averages.values(), self.weights, strict=True))

    def update(self, num_updates):
        """One update (inside the train step, after the optimizer's)."""
        t = tf.cast(num_updates, tf.float32)
        decay = tf.minimum(self.decay, (1.0 + t) / (10.0 + t))
        for average, weight in self._pairs:
            value = tf.cast(weight.value, average.dtype)
            average.assign(decay * average + (1.0 - decay) * value)

    def reset_to_weights(self) -> None:
        """Averages = the current weights (a run that turns EMA on, or resumes without one)."""
        for average, weight in self._pairs:
            average.assign(weight)

    @contextlib.contextmanager
    def swapped_in(self):
        """The model computes with the averages inside the block; its weights come back after."""
        saved = [w.numpy() for w in self.weights]
        for average, weight in self._pairs:
            weight.assign(average)
        try:
            yield
        finally:
            for weight, value in zip(self.weights, saved, strict=True):
                weight.assign(value)
