"""The training loss on the eval split: the task's own loss code, no augmentation, inference mode.

Summed over the split and divided by the normaliser summed over it (matched anchors for
detection, labelled pixels for segmentation), as a training step divides over its global batch,
so the numbers read on the same scale as the training losses (without the L2 term).
"""

from __future__ import annotations

import tensorflow as tf

from ondevice_vision import tasks


def validation_loss(config, model, dataset) -> dict:
    """{"val_<term>": mean, ..., "val_loss": their sum} over `dataset` ((images, labels))."""
    task = tasks.get_task(config)

    @tf.function(autograph=False)
    def sums_of(images, labels):
        outputs = tf.nest.map_structure(
            lambda t: tf.cast(t, tf.float32) if t.dtype.is_floating else t,
            model(images, training=False),
        )
        sums, normalizer = task.compute_losses(config, outputs, labels)
        return {k: tf.reduce_sum(v) for k, v in sums.items()}, tf.reduce_sum(normalizer)

    totals, norm = {}, 0.0
    for images, labels in dataset:
        sums, n = sums_of(images, labels)
        for k, v in sums.items():
            totals[k] = totals.get(k, 0.0) + float(v)
        norm += float(n)
    norm = max(norm, 1.0)
    result = {f"val_{k}": v / norm for k, v in totals.items()}
    result["val_loss"] = sum(result.values())
    return result
