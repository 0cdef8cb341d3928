"""Every per-example data op runs both eagerly and inside tf.data (graph mode, unknown shapes).

Deterministic ops must give identical results both ways; random ops are checked for the
invariants they promise in both modes (graph tracing breaks ops that lean on static shapes or
Python control flow, which eager tests alone never see).
"""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from ondevice_vision.data import detection_augment, image_decode, segmentation_augment
from ondevice_vision.heads import anchors, target_assigner

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8)
BOXES = np.array([[0.1, 0.2, 0.6, 0.7], [0.5, 0.0, 1.0, 0.4], [0.0, 0.5, 0.3, 1.0]], np.float32)
CLASSES = np.array([0, 2, 1], np.int32)
CROWD = np.array([False, True, False])
MASK = RNG.integers(0, 4, (37, 53, 1), dtype=np.uint8)


def _in_tf_data(fn, *args):
    """fn over one element of a dataset whose shapes are left unknown, as real sources have."""
    ds = tf.data.Dataset.from_generator(
        lambda: iter([tuple(args)]),
        output_signature=tuple(
            tf.TensorSpec([None] * np.ndim(a), tf.as_dtype(np.asarray(a).dtype)) for a in args
        ),
    )
    (out,) = list(ds.map(lambda *a: fn(*a)).as_numpy_iterator())
    return out


def _eager(fn, *args):
    return tf.nest.map_structure(lambda t: t.numpy(), fn(*[tf.constant(a) for a in args]))


def _png(image):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


ANCHORS = anchors.ssd_anchors(anchors.feature_map_sizes((64, 64))[:3])

DETERMINISTIC = {
    "resize_pixels": (lambda image: image_decode.resize_pixels(image, (20, 30)), (IMAGE,)),
    "decode_rgb": (image_decode.decode_rgb, (np.array(_png(IMAGE)),)),
    "flip_boxes_left_right": (detection_augment.flip_boxes_left_right, (BOXES,)),
    "crop_boxes_to_window": (
        lambda b, c, k: detection_augment.crop_boxes_to_window(
            b, c, k, tf.constant([0.0, 0.1, 0.8, 0.9]), 0.3
        ),
        (BOXES, CLASSES, CROWD),
    ),
    "preprocess_eval": (
        lambda image, mask: segmentation_augment.preprocess_eval({"image": image, "mask": mask}),
        (IMAGE, MASK),
    ),
    "assign_targets_batch": (
        lambda b, c, k: target_assigner.assign_targets_batch(
            tf.reshape(b, [1, -1, 4]), c[tf.newaxis], k[tf.newaxis], ANCHORS, num_classes=3
        ),
        (BOXES, CLASSES, CROWD),
    ),
}


@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_deterministic_ops_agree_eagerly_and_in_tf_data(name):
    fn, args = DETERMINISTIC[name]
    eager, graph = _eager(fn, *args), _in_tf_data(fn, *args)
    for a, b in zip(tf.nest.flatten(eager), tf.nest.flatten(graph), strict=True):
        np.testing.assert_array_equal(a, b)


def _check_crop(image, boxes, classes, crowd):
    assert image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) >= 1
    assert len(boxes) == len(classes) == len(crowd)
    assert ((boxes >= 0) & (boxes <= 1)).all()
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()


@pytest.mark.parametrize("mode", ["eager", "tf_data"])
def test_random_detection_augmentations_keep_their_invariants(mode):
    run = _eager if mode == "eager" else _in_tf_data
    tf.random.set_seed(1)
    for _ in range(8):
        _check_crop(*run(detection_augment.ssd_random_crop, IMAGE, BOXES, CLASSES, CROWD))
        image, boxes = run(detection_augment.random_horizontal_flip, IMAGE, BOXES)
        flipped = not np.array_equal(image, IMAGE)
        np.testing.assert_array_equal(image, IMAGE[:, ::-1] if flipped else IMAGE)
        want = BOXES[:, [0, 3, 2, 1]] * [1, -1, 1, -1] + [0, 1, 0, 1] if flipped else BOXES
        np.testing.assert_allclose(boxes, want, atol=1e-6)


@pytest.mark.parametrize("mode", ["eager", "tf_data"])
def test_random_segmentation_augmentation_keeps_its_invariants(mode):
    run = _eager if mode == "eager" else _in_tf_data
    tf.random.set_seed(2)

    def train(image, mask):
        return segmentation_augment.preprocess_train(
            {"image": image, "mask": mask}, crop_size=(24, 40), min_scale=0.5, max_scale=2.0
        )

    for _ in range(6):
        image, mask = run(train, IMAGE, MASK)
        assert image.shape == (24, 40, 3) and mask.shape == (24, 40, 1)
        assert set(np.unique(mask)) <= {0, 1, 2, 3, 255}
        assert image.min() >= 0 and image.max() <= 255
