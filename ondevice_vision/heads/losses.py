"""SSDLite training losses: sigmoid focal classification loss + smooth L1 (Huber) box loss.

Elementwise semantics follow the TF Object Detection API's `SigmoidFocalClassificationLoss` (alpha
weights the positive entries) and `WeightedSmoothL1LocalizationLoss` (Huber summed over the four
box coordinates). Everything is computed in float32 whatever the model's output dtype.
"""

from __future__ import annotations

import tensorflow as tf


def sigmoid_focal_loss(labels, logits, alpha: float = 0.75, gamma: float = 2.0):
    """Elementwise focal loss; labels in [0, 1] with the same shape as logits. float32 result."""
    labels = tf.cast(labels, tf.float32)
    logits = tf.cast(logits, tf.float32)
    cross_entropy = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    probs = tf.sigmoid(logits)
    p_t = labels * probs + (1.0 - labels) * (1.0 - probs)
    modulating = tf.pow(1.0 - p_t, gamma) if gamma else 1.0
    alpha_weight = labels * alpha + (1.0 - labels) * (1.0 - alpha) if alpha is not None else 1.0
    return modulating * alpha_weight * cross_entropy


def smooth_l1(targets, preds, delta: float = 1.0):
    """Huber loss summed over the last (coordinate) axis: [..., 4] -> [...]. float32 result."""
    diff = tf.abs(tf.cast(preds, tf.float32) - tf.cast(targets, tf.float32))
    quadratic = tf.minimum(diff, delta)
    # 0.5 * d^2 for |d| <= delta, delta * (|d| - delta / 2) beyond: the tf.keras/tf.losses Huber.
    per_coord = 0.5 * quadratic * quadratic + delta * (diff - quadratic)
    return tf.reduce_sum(per_coord, axis=-1)


def detection_loss(
    box_outputs,
    class_outputs,
    targets: dict,
    num_classes: int,
    alpha: float = 0.75,
    gamma: float = 2.0,
    delta: float = 1.0,
    cls_weight: float = 1.0,
    box_weight: float = 1.0,
    encode_background_as_zeros: bool = False,
    normalize_box_loss_by_codesize: bool = False,
) -> dict:
    """Per-image SSD losses.

    Args:
      box_outputs: [B, A, 4] encoded box predictions. class_outputs: [B, A, K + 1] logits with the
        background in column 0. targets: batched `assign_targets` outputs (cls_targets [B, A],
        cls_weights [B, A], box_targets [B, A, 4], box_weights [B, A], num_positives [B]).
      encode_background_as_zeros: the OD API option of that name; when True the background column's
        target is 0 for every anchor (background anchors are all-zero one-hots).
      normalize_box_loss_by_codesize: the OD API option `normalize_loc_loss_by_codesize` (divides
        the box loss by 4).

    Returns dict(cls_loss [B], box_loss [B], total [B]): each image's weighted sums, not yet
    normalised. The trainer divides them by the positive anchors of the whole global batch (the
    OD API's `normalize_loss_by_num_matches`), which a per-image division cannot express.
    """
    num_slots = class_outputs.shape[-1]
    if num_slots is not None and num_slots != num_classes + 1:
        raise ValueError(
            f"detection_loss: class_outputs has {num_slots} columns, expected num_classes + 1 = "
            f"{num_classes + 1}"
        )
    one_hot = tf.one_hot(tf.cast(targets["cls_targets"], tf.int32), num_classes + 1)
    if encode_background_as_zeros:
        one_hot = tf.concat([tf.zeros_like(one_hot[..., :1]), one_hot[..., 1:]], axis=-1)
    cls_weights = tf.cast(targets["cls_weights"], tf.float32)
    focal = sigmoid_focal_loss(one_hot, class_outputs, alpha=alpha, gamma=gamma)
    cls_sum = tf.reduce_sum(focal * cls_weights[..., tf.newaxis], axis=[1, 2])

    box_weights = tf.cast(targets["box_weights"], tf.float32)
    huber = smooth_l1(targets["box_targets"], box_outputs, delta=delta)
    box_sum = tf.reduce_sum(huber * box_weights, axis=1)

    if normalize_box_loss_by_codesize:
        box_sum /= 4.0
    cls_loss = cls_weight * cls_sum
    box_loss = box_weight * box_sum
    return {"cls_loss": cls_loss, "box_loss": box_loss}
