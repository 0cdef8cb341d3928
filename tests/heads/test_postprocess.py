import numpy as np
import tensorflow as tf

from ondevice_vision.heads import box_coder
from ondevice_vision.heads.postprocess import postprocess

NUM_CLASSES = 3
LOW = -30.0  # sigmoid(-30) ~ 9e-14, below the default 1e-8 score threshold


def _logit(p):
    return float(np.log(p / (1 - p)))


def _run(anchors, scores_by_anchor, **kwargs):
    """Anchors double as the decoded boxes (zero box codes); scores_by_anchor: {(a, class): p}."""
    anchors = np.asarray(anchors, np.float32)
    logits = np.full((1, len(anchors), NUM_CLASSES + 1), LOW, np.float32)
    for (a, k), p in scores_by_anchor.items():
        logits[0, a, k + 1] = _logit(p)
    out = postprocess(tf.zeros([1, len(anchors), 4]), logits, anchors, **kwargs)
    n = int(out["num_detections"][0])
    return (
        out["detection_boxes"][0, :n].numpy(),
        out["detection_scores"][0, :n].numpy(),
        out["detection_classes"][0, :n].numpy(),
        out,
    )


def _iou(a, b):
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_overlap_above_iou_threshold_is_suppressed():
    base = [0.0, 0.0, 0.5, 0.5]
    for right, suppressed in [(0.7, True), (0.8, True), (0.85, False), (1.0, False)]:
        other = [0.0, 0.0, 0.5, right]
        assert (_iou(base, other) > 0.6) == suppressed
        boxes, scores, classes, _ = _run([base, other], {(0, 1): 0.9, (1, 1): 0.8})
        assert len(boxes) == (1 if suppressed else 2), right
        np.testing.assert_allclose(boxes[0], base, atol=1e-6)
        np.testing.assert_allclose(scores[0], 0.9, rtol=1e-5)
        np.testing.assert_array_equal(classes, 1)


def test_classes_are_suppressed_independently():
    box = [0.1, 0.1, 0.4, 0.4]
    boxes, scores, classes, _ = _run([box, box], {(0, 0): 0.9, (1, 2): 0.7})
    np.testing.assert_array_equal(classes, [0, 2])
    np.testing.assert_allclose(scores, [0.9, 0.7], rtol=1e-5)
    # The same anchor may also be reported for two classes.
    boxes, scores, classes, _ = _run([box], {(0, 0): 0.6, (0, 1): 0.5})
    np.testing.assert_array_equal(classes, [0, 1])


def test_score_threshold():
    anchors = [[0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 0.7, 0.7]]
    _, scores, classes, _ = _run(anchors, {(0, 0): 0.4, (1, 1): 0.6}, score_threshold=0.5)
    np.testing.assert_allclose(scores, [0.6], rtol=1e-5)
    np.testing.assert_array_equal(classes, [1])
    # Default threshold 1e-8 keeps the 0.4 detection and drops the near-zero columns.
    _, scores, _, _ = _run(anchors, {(0, 0): 0.4, (1, 1): 0.6})
    np.testing.assert_allclose(scores, [0.6, 0.4], rtol=1e-5)


def test_background_column_is_dropped():
    anchors = np.array([[0.0, 0.0, 0.2, 0.2]], np.float32)
    logits = np.full((1, 1, NUM_CLASSES + 1), LOW, np.float32)
    logits[0, 0, 0] = 10.0  # confident background
    out = postprocess(tf.zeros([1, 1, 4]), logits, anchors)
    assert int(out["num_detections"][0]) == 0


def test_max_total_and_per_class_limits_keep_the_best():
    # Ten disjoint boxes along a row, scores rising with the index.
    anchors = [[0.0, i / 10, 0.1, (i + 1) / 10] for i in range(10)]
    probs = {(i, i % 2): 0.05 + 0.09 * i for i in range(10)}
    _, scores, _, out = _run(anchors, probs, max_total_detections=3)
    assert out["detection_boxes"].shape == (1, 3, 4)
    np.testing.assert_allclose(scores, [0.86, 0.77, 0.68], rtol=1e-5)
    _, scores, classes, _ = _run(anchors, probs, max_detections_per_class=2)
    np.testing.assert_allclose(scores, [0.86, 0.77, 0.68, 0.59], rtol=1e-5)
    np.testing.assert_array_equal(sorted(classes), [0, 0, 1, 1])


def test_decodes_clips_and_types():
    anchors = np.array([[0.2, 0.2, 0.4, 0.4], [0.8, 0.8, 1.0, 1.0]], np.float32)
    codes = np.array([[[1.0, -2.0, 0.5, 0.3], [2.0, 2.0, 1.0, 1.0]]], np.float32)
    logits = np.full((1, 2, NUM_CLASSES + 1), LOW, np.float32)
    logits[0, 0, 3] = 2.0
    logits[0, 1, 1] = 1.0
    out = postprocess(tf.constant(codes, tf.float16), tf.constant(logits, tf.float16), anchors)
    assert out["detection_classes"].dtype == tf.int32
    assert out["num_detections"].dtype == tf.int32
    assert out["detection_boxes"].shape == (1, 100, 4)
    assert int(out["num_detections"][0]) == 2
    decoded = box_coder.decode(tf.cast(tf.constant(codes, tf.float16), tf.float32), anchors)
    expected = np.clip(decoded.numpy()[0], 0.0, 1.0)
    np.testing.assert_allclose(out["detection_boxes"][0, :2].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(out["detection_classes"][0, :2].numpy(), [2, 0])
    assert out["detection_boxes"].numpy().max() <= 1.0
    assert decoded.numpy().max() > 1.0  # the second box really was clipped


def test_batch_images_are_independent():
    anchors = np.array([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.55]], np.float32)
    logits = np.full((2, 2, NUM_CLASSES + 1), LOW, np.float32)
    logits[0, :, 1] = [3.0, 2.0]  # image 0: overlapping pair, one survives
    logits[1, 1, 2] = 1.0  # image 1: a single detection
    out = postprocess(tf.zeros([2, 2, 4]), logits, anchors)
    np.testing.assert_array_equal(out["num_detections"].numpy(), [1, 1])
    np.testing.assert_array_equal(out["detection_classes"][:, 0].numpy(), [0, 1])
