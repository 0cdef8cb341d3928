import numpy as np
import pytest
import tensorflow as tf

from ondevice_vision.heads import anchors as anchors_lib
from ondevice_vision.heads import box_coder
from ondevice_vision.heads import target_assigner as ta

# Four quadrants plus the whole image.
QUADRANT_ANCHORS = np.array(
    [
        [0.0, 0.0, 0.5, 0.5],
        [0.0, 0.5, 0.5, 1.0],
        [0.5, 0.0, 1.0, 0.5],
        [0.5, 0.5, 1.0, 1.0],
        [0.0, 0.0, 1.0, 1.0],
    ],
    np.float32,
)


def _assign(boxes, classes, crowd=None, anchors=QUADRANT_ANCHORS, num_classes=5, **kwargs):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    classes = np.asarray(classes, np.int32).reshape(-1)
    crowd = np.zeros(len(classes), bool) if crowd is None else np.asarray(crowd, bool)
    # One image as a batch of one, with one padding row (an image may have no boxes).
    out = ta.assign_targets_batch(
        np.concatenate([boxes, np.zeros((1, 4), np.float32)])[np.newaxis],
        np.concatenate([classes, [-1]]).astype(np.int32)[np.newaxis],
        np.concatenate([crowd, [False]])[np.newaxis],
        anchors,
        num_classes,
        **kwargs,
    )
    return {k: v[0].numpy() for k, v in out.items()}


def _np_iou(a, b):
    ymin = np.maximum(a[:, None, 0], b[None, :, 0])
    xmin = np.maximum(a[:, None, 1], b[None, :, 1])
    ymax = np.minimum(a[:, None, 2], b[None, :, 2])
    xmax = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ymax - ymin, 0, None) * np.clip(xmax - xmin, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(inter == 0, 0.0, inter / np.where(union == 0, 1, union))


def _np_assign(boxes, classes, crowd, anchors, matched_thr, unmatched_thr, force):
    """Reference: the OD API ArgMaxMatcher written out with loops, crowd matches ignored."""
    num_anchors = len(anchors)
    matches = np.full(num_anchors, -1)
    if len(boxes):
        iou = _np_iou(boxes, anchors)
        for a in range(num_anchors):
            best = iou[:, a].max()
            if best >= matched_thr:
                matches[a] = int(iou[:, a].argmax())
            elif best >= unmatched_thr:
                matches[a] = -2
        if force:
            forced = {}
            for row in range(len(boxes)):
                if not crowd[row]:
                    forced.setdefault(int(iou[row].argmax()), row)  # first row wins
            for a, row in forced.items():
                matches[a] = row
    cls_targets = np.zeros(num_anchors, np.int32)
    cls_weights = np.ones(num_anchors, np.float32)
    box_weights = np.zeros(num_anchors, np.float32)
    box_targets = np.zeros((num_anchors, 4), np.float32)
    for a, m in enumerate(matches):
        if m == -2 or (m >= 0 and crowd[m]):
            cls_weights[a] = 0.0
        elif m >= 0:
            cls_targets[a] = classes[m] + 1
            box_weights[a] = 1.0
            box_targets[a] = box_coder.encode(boxes[m : m + 1], anchors[a : a + 1]).numpy()[0]
    return cls_targets, cls_weights, box_targets, box_weights


def test_pairwise_iou_matches_numpy():
    rng = np.random.default_rng(0)
    a = np.sort(rng.uniform(0, 1, (6, 2, 2)), axis=1).transpose(0, 2, 1).reshape(6, 4)
    a = a[:, [0, 2, 1, 3]].astype(np.float32)  # sorted pairs -> valid yxyx
    b = QUADRANT_ANCHORS
    np.testing.assert_allclose(ta.pairwise_iou(a, b).numpy(), _np_iou(a, b), atol=1e-6)


def test_exact_overlap_is_positive_with_encoded_target():
    out = _assign([[0.0, 0.0, 0.5, 0.5]], [2])
    # IoU 1 with anchor 0, 0.25 with the whole-image anchor, 0 elsewhere.
    np.testing.assert_array_equal(out["cls_targets"], [3, 0, 0, 0, 0])
    np.testing.assert_array_equal(out["cls_weights"], [1, 1, 1, 1, 1])
    np.testing.assert_array_equal(out["box_weights"], [1, 0, 0, 0, 0])
    assert out["num_positives"] == 1.0
    np.testing.assert_allclose(out["box_targets"][0], [0, 0, 0, 0], atol=1e-5)
    np.testing.assert_array_equal(out["box_targets"][1:], np.zeros((4, 4)))


def test_force_match_below_threshold():
    # IoU 0.36 with anchor 0 (its best), below 0.5: only the force match makes it positive.
    box = [[0.0, 0.0, 0.3, 0.3]]
    out = _assign(box, [0])
    np.testing.assert_array_equal(out["cls_targets"], [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(out["box_weights"], [1, 0, 0, 0, 0])
    expected = box_coder.encode(np.float32(box), QUADRANT_ANCHORS[:1]).numpy()
    np.testing.assert_allclose(out["box_targets"][:1], expected, atol=1e-6)
    unforced = _assign(box, [0], force_match_for_each_row=False)
    np.testing.assert_array_equal(unforced["cls_targets"], [0, 0, 0, 0, 0])
    assert unforced["num_positives"] == 0.0


def test_between_thresholds_is_ignored():
    boxes = [[0.0, 0.0, 0.5, 0.6], [0.5, 0.5, 1.0, 0.75]]
    # IoUs: anchor 0 -> 0.833 (box 0), anchor 1 -> 0.1, anchor 2 -> 0, anchor 3 -> 0.5 (box 1),
    # anchor 4 -> 0.3.
    out = _assign(
        boxes,
        [1, 4],
        matched_threshold=0.6,
        unmatched_threshold=0.4,
        force_match_for_each_row=False,
    )
    np.testing.assert_array_equal(out["cls_targets"], [2, 0, 0, 0, 0])
    np.testing.assert_array_equal(out["cls_weights"], [1, 1, 1, 0, 1])
    np.testing.assert_array_equal(out["box_weights"], [1, 0, 0, 0, 0])
    # Equal thresholds: IoU 0.5 is a match (>= matched_threshold).
    same = _assign(boxes, [1, 4], force_match_for_each_row=False)
    np.testing.assert_array_equal(same["cls_targets"], [2, 0, 0, 5, 0])
    np.testing.assert_array_equal(same["cls_weights"], [1, 1, 1, 1, 1])


def test_crowd_matches_are_ignored():
    boxes = [[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]
    out = _assign(boxes, [2, 0], crowd=[False, True])
    np.testing.assert_array_equal(out["cls_targets"], [3, 0, 0, 0, 0])
    np.testing.assert_array_equal(out["cls_weights"], [1, 1, 1, 0, 1])
    np.testing.assert_array_equal(out["box_weights"], [1, 0, 0, 0, 0])
    assert out["num_positives"] == 1.0


def test_crowd_is_never_force_matched():
    # Best IoU 0.36 with anchor 3: a normal box would be force-matched, a crowd box is not.
    out = _assign([[0.5, 0.5, 0.8, 0.8]], [1], crowd=[True])
    np.testing.assert_array_equal(out["cls_targets"], [0, 0, 0, 0, 0])
    np.testing.assert_array_equal(out["cls_weights"], [1, 1, 1, 1, 1])
    assert out["num_positives"] == 0.0


def test_force_match_beats_crowd():
    # Anchor 0's best match is the crowd box (IoU 1), but the small normal box's best anchor is
    # anchor 0 too, so the force match makes it positive.
    boxes = [[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.2, 0.2]]
    out = _assign(boxes, [0, 3], crowd=[True, False])
    np.testing.assert_array_equal(out["cls_targets"], [4, 0, 0, 0, 0])
    np.testing.assert_array_equal(out["cls_weights"], [1, 1, 1, 1, 1])


def test_no_boxes_is_all_background():
    out = _assign(np.zeros((0, 4)), np.zeros((0,)))
    np.testing.assert_array_equal(out["cls_targets"], np.zeros(5))
    np.testing.assert_array_equal(out["cls_weights"], np.ones(5))
    np.testing.assert_array_equal(out["box_weights"], np.zeros(5))
    np.testing.assert_array_equal(out["box_targets"], np.zeros((5, 4)))
    assert out["num_positives"] == 0.0
    assert out["cls_targets"].dtype == np.int32


def _random_example(rng, n):
    centers = rng.uniform(0.1, 0.9, (n, 2))
    sizes = rng.uniform(0.05, 0.6, (n, 2))
    boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1).clip(0, 1)
    classes = rng.integers(0, 5, n)
    crowd = rng.uniform(size=n) < 0.25
    return boxes.astype(np.float32), classes.astype(np.int32), crowd


@pytest.mark.parametrize("thresholds", [(0.5, 0.5), (0.5, 0.3)])
@pytest.mark.parametrize("force", [True, False])
def test_random_cases_match_numpy_reference(thresholds, force):
    anchors = anchors_lib.ssd_anchors([(3, 3), (2, 2), (1, 1)])
    rng = np.random.default_rng(42)
    for n in [0, 1, 3, 8]:
        boxes, classes, crowd = _random_example(rng, n)
        out = _assign(
            boxes,
            classes,
            crowd,
            anchors=anchors,
            matched_threshold=thresholds[0],
            unmatched_threshold=thresholds[1],
            force_match_for_each_row=force,
        )
        cls_t, cls_w, box_t, box_w = _np_assign(
            boxes, classes, crowd, anchors, thresholds[0], thresholds[1], force
        )
        np.testing.assert_array_equal(out["cls_targets"], cls_t)
        np.testing.assert_array_equal(out["cls_weights"], cls_w)
        np.testing.assert_array_equal(out["box_weights"], box_w)
        np.testing.assert_allclose(out["box_targets"], box_t, atol=1e-5)
        assert out["num_positives"] == box_w.sum()


def test_runs_inside_tf_data_map_with_unknown_box_count():
    anchors = anchors_lib.ssd_anchors([(3, 3), (2, 2), (1, 1)])
    rng = np.random.default_rng(7)
    examples = [_random_example(rng, n) for n in [2, 0, 5, 1]]

    def generate():
        yield from examples

    ds = tf.data.Dataset.from_generator(
        generate,
        output_signature=(
            tf.TensorSpec([None, 4], tf.float32),
            tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([None], tf.bool),
        ),
    )

    def assign(boxes, classes, crowd):  # a batch of one with a padding row, as `_assign`
        out = ta.assign_targets_batch(
            tf.concat([boxes, tf.zeros([1, 4])], 0)[tf.newaxis],
            tf.concat([classes, [-1]], 0)[tf.newaxis],
            tf.concat([crowd, [False]], 0)[tf.newaxis],
            anchors,
            num_classes=5,
        )
        return {k: v[0] for k, v in out.items()}

    ds = ds.map(assign)
    for key in ("cls_targets", "cls_weights", "box_weights"):
        assert ds.element_spec[key].shape == (len(anchors),)
    results = list(ds)
    assert len(results) == len(examples)
    for (boxes, classes, crowd), got in zip(examples, results, strict=True):
        eager = _assign(boxes, classes, crowd, anchors=anchors)
        assert got["cls_targets"].shape == (len(anchors),)
        for key, value in eager.items():
            np.testing.assert_array_equal(got[key].numpy(), value)
    batched = next(iter(ds.batch(4)))
    assert batched["box_targets"].shape == (4, len(anchors), 4)
    assert batched["num_positives"].shape == (4,)


def test_bad_inputs():
    with pytest.raises(ValueError, match="unmatched_threshold"):
        _assign([[0, 0, 0.5, 0.5]], [0], matched_threshold=0.4, unmatched_threshold=0.5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="class index"):
        _assign([[0, 0, 0.5, 0.5]], [5], num_classes=5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="gt_classes length"):
        _assign([[0, 0, 0.5, 0.5]], [0, 1], crowd=[False])


def test_batch_assignment_equals_per_image_assignment():
    """assign_targets_batch on a padded batch == assign_targets image by image, bit for bit:
    empty images, crowd boxes, boxes sharing a best anchor, more boxes than most images."""
    rng = np.random.default_rng(3)
    anchors = anchors_lib.ssd_anchors([(8, 8), (4, 4), (2, 2), (1, 1)])
    counts = [0, 1, 5, 12, 3, 2]
    max_boxes = 16
    per_image, padded = [], {"boxes": [], "classes": [], "crowd": []}
    for n in counts:
        corners = rng.uniform(0, 1, (n, 2, 2)).astype(np.float32)
        boxes = np.concatenate([corners.min(1), corners.max(1)], axis=1)
        if n >= 2:
            boxes[1] = boxes[0]  # two rows competing for the same best anchor
        classes = rng.integers(0, 5, n).astype(np.int32)
        crowd = rng.random(n) < 0.25
        per_image.append(_assign(boxes, classes, crowd, anchors=anchors))
        pad = max_boxes - n
        padded["boxes"].append(np.pad(boxes, [[0, pad], [0, 0]]))
        padded["classes"].append(np.pad(classes, [0, pad], constant_values=-1))
        padded["crowd"].append(np.pad(crowd, [0, pad]))
    batch = ta.assign_targets_batch(
        np.stack(padded["boxes"]),
        np.stack(padded["classes"]),
        np.stack(padded["crowd"]),
        anchors,
        num_classes=5,
    )
    for i, expected in enumerate(per_image):
        for key, value in expected.items():
            np.testing.assert_array_equal(batch[key][i].numpy(), value, err_msg=f"{key} {i}")
    all_empty = ta.assign_targets_batch(
        np.zeros((2, 4, 4), np.float32),
        -np.ones((2, 4), np.int32),
        np.zeros((2, 4), bool),
        anchors,
        num_classes=5,
    )
    assert not all_empty["box_weights"].numpy().any()
    assert all_empty["cls_weights"].numpy().all()
