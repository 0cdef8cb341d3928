"""heads/tflite_postprocess.py on hand-made cases (the tests of real exports compare it with the
TFLite op itself: tests/export/test_raw_outputs.py)."""

from __future__ import annotations

import numpy as np

from ondevice_vision.heads import tflite_postprocess


def test_decode_inverts_the_center_size_encoding():
    anchors = np.array([[0.5, 0.5, 0.2, 0.4]], np.float32)  # ycenter, xcenter, h, w
    encodings = np.array([[1.0, -2.0, np.log(2.0) * 5, 0.0]], np.float32)
    (box,) = tflite_postprocess.decode_center_size(encodings, anchors, (10, 10, 5, 5))
    # ycenter 0.5 + 0.1 * 0.2, height 0.4; xcenter 0.5 - 0.2 * 0.4, width 0.4.
    np.testing.assert_allclose(box, [0.32, 0.22, 0.72, 0.62], atol=1e-6)


def test_fast_nms_keeps_the_best_class_suppresses_overlaps_and_breaks_ties_by_anchor():
    boxes = np.array(
        [
            [0.0, 0.0, 0.5, 0.5],  # 0
            [0.0, 0.0, 0.5, 0.45],  # 1: IoU 0.9 with 0
            [0.5, 0.5, 1.0, 1.0],  # 2
            [0.5, 0.5, 1.0, 1.0],  # 3: same box and score as 2, later anchor
            [0.2, 0.6, 0.3, 0.7],  # 4: below the score threshold
            [0.8, 0.0, 0.8, 0.3],  # 5: no area: overlaps nothing
        ],
        np.float32,
    )
    scores = np.array(  # background column first
        [
            [0.9, 0.1, 0.8],
            [0.0, 0.7, 0.2],
            [0.0, 0.6, 0.6],  # tie between classes: the first wins
            [0.0, 0.6, 0.1],
            [0.0, 0.05, 0.0],
            [0.0, 0.3, 0.0],
        ],
        np.float32,
    )
    out = tflite_postprocess.fast_nms(boxes, scores, 2, 4, 0.1, 0.6)
    assert out["num_detections"] == 3
    np.testing.assert_array_equal(out["detection_classes"], [1, 0, 0, 0])
    np.testing.assert_allclose(out["detection_scores"], [0.8, 0.6, 0.3, 0.0])
    np.testing.assert_array_equal(out["detection_boxes"][:3], boxes[[0, 2, 5]])
    # The score threshold is inclusive; max_detections caps.
    assert tflite_postprocess.fast_nms(boxes, scores, 2, 4, 0.05, 0.6)["num_detections"] == 4
    assert tflite_postprocess.fast_nms(boxes, scores, 2, 1, 0.1, 0.6)["num_detections"] == 1
