import numpy as np
import pytest
import tensorflow as tf

from ondevice_vision.heads import losses


def _np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _np_focal(labels, logits, alpha, gamma):
    """Focal loss written from the paper's definition: -alpha_t (1 - p_t)^gamma log(p_t)."""
    p = _np_sigmoid(logits)
    p_t = np.where(labels == 1, p, 1 - p)
    alpha_t = np.where(labels == 1, alpha, 1 - alpha)
    return -alpha_t * (1 - p_t) ** gamma * np.log(p_t)


def _np_huber(targets, preds, delta):
    d = np.abs(preds - targets)
    return np.where(d <= delta, 0.5 * d**2, delta * (d - 0.5 * delta)).sum(-1)


def _batch(rng, b=2, a=6, k=3):
    cls_targets = rng.integers(0, k + 1, (b, a)).astype(np.int32)
    cls_targets[1] = 0  # second image: background only, no positives
    cls_weights = np.ones((b, a), np.float32)
    cls_weights[0, 1] = 0.0  # an ignored anchor
    cls_targets[0, 1] = 0
    box_weights = (cls_targets > 0).astype(np.float32)
    targets = {
        "cls_targets": cls_targets,
        "cls_weights": cls_weights,
        "box_targets": rng.normal(size=(b, a, 4)).astype(np.float32),
        "box_weights": box_weights,
        "num_positives": box_weights.sum(1),
    }
    box_outputs = rng.normal(size=(b, a, 4)).astype(np.float32) * 2
    class_outputs = rng.normal(size=(b, a, k + 1)).astype(np.float32) * 3
    return box_outputs, class_outputs, targets


def _np_detection_loss(box_outputs, class_outputs, targets, k, alpha, gamma, delta, bg_zeros=False):
    one_hot = np.eye(k + 1)[targets["cls_targets"]]
    if bg_zeros:
        one_hot[..., 0] = 0
    focal = _np_focal(one_hot, class_outputs.astype(np.float64), alpha, gamma)
    cls_sum = (focal * targets["cls_weights"][..., None]).sum((1, 2))
    box_sum = (_np_huber(targets["box_targets"], box_outputs, delta) * targets["box_weights"]).sum(
        1
    )
    # Plain per-image sums: the trainer divides by the positives of the global batch.
    return cls_sum, box_sum


def test_focal_loss_matches_numpy_reference():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 7)).astype(np.float32) * 4
    labels = (rng.uniform(size=(4, 7)) < 0.3).astype(np.float32)
    for alpha, gamma in [(0.75, 2.0), (0.25, 2.0), (0.5, 0.5), (0.75, 0.0)]:
        got = losses.sigmoid_focal_loss(labels, logits, alpha=alpha, gamma=gamma)
        assert got.dtype == tf.float32
        np.testing.assert_allclose(
            got.numpy(),
            _np_focal(labels, logits.astype(np.float64), alpha, gamma),
            rtol=1e-5,
            atol=1e-8,
        )


def test_focal_alpha_weights_positives():
    logits = tf.constant([0.0, 0.0])
    loss = losses.sigmoid_focal_loss(tf.constant([1.0, 0.0]), logits, alpha=0.75, gamma=2.0).numpy()
    # Same p_t = 0.5 for both, so the only difference is alpha vs 1 - alpha.
    np.testing.assert_allclose(loss[0] / loss[1], 3.0, rtol=1e-6)


def test_focal_without_alpha_and_gamma_is_sigmoid_cross_entropy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(10,)).astype(np.float32)
    labels = (rng.uniform(size=10) < 0.5).astype(np.float32)
    got = losses.sigmoid_focal_loss(labels, logits, alpha=None, gamma=0.0)
    expected = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-6)


def test_focal_is_finite_for_extreme_logits():
    logits = tf.constant([-100.0, 100.0, -100.0, 100.0])
    labels = tf.constant([1.0, 0.0, 0.0, 1.0])
    loss = losses.sigmoid_focal_loss(labels, logits).numpy()
    assert np.all(np.isfinite(loss))
    np.testing.assert_allclose(loss, [0.75 * 100.0, 0.25 * 100.0, 0.0, 0.0], rtol=1e-5)


def test_smooth_l1_matches_numpy_huber():
    rng = np.random.default_rng(2)
    targets = rng.normal(size=(3, 5, 4)).astype(np.float32)
    preds = rng.normal(size=(3, 5, 4)).astype(np.float32) * 2
    for delta in [1.0, 0.5]:
        got = losses.smooth_l1(targets, preds, delta=delta)
        assert got.shape == (3, 5)
        np.testing.assert_allclose(got.numpy(), _np_huber(targets, preds, delta), rtol=1e-5)
    # Matches Keras' Huber (mean over coords) times 4.
    keras_huber = tf.keras.losses.Huber(delta=1.0, reduction=None)(targets, preds)
    np.testing.assert_allclose(
        losses.smooth_l1(targets, preds).numpy(), 4 * keras_huber.numpy(), rtol=1e-5
    )


def test_detection_loss_matches_numpy_reference():
    rng = np.random.default_rng(3)
    box_outputs, class_outputs, targets = _batch(rng)
    out = losses.detection_loss(box_outputs, class_outputs, targets, num_classes=3)
    cls_ref, box_ref = _np_detection_loss(box_outputs, class_outputs, targets, 3, 0.75, 2.0, 1.0)
    np.testing.assert_allclose(out["cls_loss"].numpy(), cls_ref, rtol=1e-5)
    np.testing.assert_allclose(out["box_loss"].numpy(), box_ref, rtol=1e-5)
    assert out["box_loss"].numpy()[1] == 0.0  # no positives: no box loss


def test_detection_loss_weights_and_options():
    rng = np.random.default_rng(4)
    box_outputs, class_outputs, targets = _batch(rng)
    base = losses.detection_loss(box_outputs, class_outputs, targets, num_classes=3)
    weighted = losses.detection_loss(
        box_outputs,
        class_outputs,
        targets,
        num_classes=3,
        cls_weight=2.0,
        box_weight=0.5,
        normalize_box_loss_by_codesize=True,
    )
    np.testing.assert_allclose(weighted["cls_loss"], 2 * base["cls_loss"].numpy(), rtol=1e-6)
    np.testing.assert_allclose(weighted["box_loss"], base["box_loss"].numpy() / 8, rtol=1e-6)
    zeros_bg = losses.detection_loss(
        box_outputs, class_outputs, targets, num_classes=3, encode_background_as_zeros=True
    )
    cls_ref, _ = _np_detection_loss(
        box_outputs, class_outputs, targets, 3, 0.75, 2.0, 1.0, bg_zeros=True
    )
    np.testing.assert_allclose(zeros_bg["cls_loss"].numpy(), cls_ref, rtol=1e-5)


def test_ignored_anchor_has_no_classification_loss():
    rng = np.random.default_rng(5)
    box_outputs, class_outputs, targets = _batch(rng)
    changed = class_outputs.copy()
    changed[0, 1] += 50.0  # anchor (0, 1) is ignored
    a = losses.detection_loss(box_outputs, class_outputs, targets, num_classes=3)
    b = losses.detection_loss(box_outputs, changed, targets, num_classes=3)
    np.testing.assert_allclose(a["cls_loss"].numpy(), b["cls_loss"].numpy(), rtol=1e-6)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_half_precision_outputs_compute_in_float32(dtype):
    rng = np.random.default_rng(6)
    box_outputs, class_outputs, targets = _batch(rng)
    box_half = tf.cast(box_outputs, dtype)
    cls_half = tf.cast(class_outputs, dtype)
    out = losses.detection_loss(box_half, cls_half, targets, num_classes=3)
    ref = losses.detection_loss(
        tf.cast(box_half, tf.float32), tf.cast(cls_half, tf.float32), targets, num_classes=3
    )
    for key in ("cls_loss", "box_loss"):
        assert out[key].dtype == tf.float32
        np.testing.assert_allclose(out[key].numpy(), ref[key].numpy(), rtol=1e-6)


def test_gradients_are_finite():
    rng = np.random.default_rng(7)
    box_outputs, class_outputs, targets = _batch(rng)
    box_var = tf.Variable(box_outputs)
    cls_var = tf.Variable(class_outputs)
    with tf.GradientTape() as tape:
        out = losses.detection_loss(box_var, cls_var, targets, num_classes=3)
        total = tf.reduce_sum(out["cls_loss"] + out["box_loss"])
    grads = tape.gradient(total, [box_var, cls_var])
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    # Boxes of non-positive anchors get no gradient.
    np.testing.assert_array_equal(grads[0].numpy()[targets["box_weights"] == 0], 0.0)


def test_class_column_mismatch():
    rng = np.random.default_rng(8)
    box_outputs, class_outputs, targets = _batch(rng)
    with pytest.raises(ValueError, match="num_classes"):
        losses.detection_loss(box_outputs, class_outputs, targets, num_classes=4)
