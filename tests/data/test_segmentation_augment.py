import numpy as np
import pytest
import tensorflow as tf

from ondevice_vision.data import segmentation_augment as aug

# One-hot RGB per class: bilinear blends of two classes are never pure, so any pure pixel after
# augmentation must still carry its own class in the mask.
CLASS_COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)


def _coordinate_pair(h, w):
    """Image encodes (row, col) in its first two channels; mask encodes them too, differently."""
    rows, cols = np.mgrid[0:h, 0:w]
    image = np.stack([rows, cols, np.zeros_like(rows)], -1).astype(np.uint8)
    mask = ((rows * 7 + cols * 3) % 250).astype(np.uint8)[..., None]
    return tf.constant(image), tf.constant(mask)


def _class_pair(seed=0, h=24, w=36):
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 3, (h // 4, w // 4), dtype=np.uint8)
    mask = np.kron(blocks, np.ones((4, 4), np.uint8))
    return {"image": tf.constant(CLASS_COLOURS[mask]), "mask": tf.constant(mask[..., None])}


def _assert_pure_pixels_match(image, mask):
    image, mask = np.asarray(image), np.asarray(mask)[..., 0]
    pure = np.zeros(mask.shape, bool)
    for c, colour in enumerate(CLASS_COLOURS):
        is_c = np.abs(image - colour).max(-1) < 1e-3
        np.testing.assert_array_equal(mask[is_c], c)
        pure |= is_c
    # Most labelled pixels are block interiors, untouched by blending.
    assert pure[mask != 255].mean() >= 0.3


def test_random_scale_sizes_and_nearest_mask():
    example = _class_pair()
    for _ in range(5):
        image, mask = aug.random_scale(example["image"], example["mask"], 0.5, 2.0)
        h, w = image.shape[:2]
        assert image.dtype == tf.float32 and mask.dtype == tf.uint8
        assert mask.shape[:2] == (h, w)
        scale = h / 24
        assert 0.5 - 1 / 24 <= scale <= 2.0 + 1 / 24
        assert abs(w - round(36 * scale)) <= 1
        assert set(np.unique(mask.numpy())) <= {0, 1, 2}
        _assert_pure_pixels_match(image, mask)


def test_random_scale_by_exactly_two_repeats_mask_pixels():
    example = _class_pair()
    _, mask = aug.random_scale(example["image"], example["mask"], 2.0, 2.0)
    expected = np.repeat(np.repeat(example["mask"].numpy(), 2, axis=0), 2, axis=1)
    np.testing.assert_array_equal(mask.numpy(), expected)


def test_crop_or_pad_pads_with_ignore_when_smaller():
    image, mask = _coordinate_pair(10, 12)
    out_image, out_mask = aug.random_crop_or_pad(image, mask, crop_size=(16, 20), ignore_label=255)
    assert out_image.shape == (16, 20, 3) and out_mask.shape == (16, 20, 1)
    assert out_image.dtype == tf.float32 and out_mask.dtype == tf.uint8
    # Nothing to crop: the original sits top-left, the rest is padding.
    np.testing.assert_array_equal(out_image[:10, :12].numpy(), image.numpy().astype(np.float32))
    np.testing.assert_array_equal(out_mask[:10, :12].numpy(), mask.numpy())
    assert (out_mask[10:].numpy() == 255).all() and (out_mask[:, 12:].numpy() == 255).all()
    assert (out_image[10:].numpy() == aug.IMAGE_PAD_VALUE).all()


@pytest.mark.parametrize("size", [(40, 50), (10, 50)])
def test_crop_takes_the_same_window_from_image_and_mask(size):
    image, mask = _coordinate_pair(*size)
    offsets = set()
    for _ in range(10):
        out_image, out_mask = aug.random_crop_or_pad(image, mask, crop_size=(16, 20))
        top, left = int(out_image[0, 0, 0]), int(out_image[0, 0, 1])
        offsets.add((top, left))
        rows = slice(top, top + 16)
        cols = slice(left, left + 20)
        window_h = min(16, size[0] - top)
        np.testing.assert_array_equal(out_image[:window_h].numpy(), image[rows, cols].numpy())
        np.testing.assert_array_equal(out_mask[:window_h].numpy(), mask[rows, cols].numpy())
        assert (out_mask[window_h:].numpy() == 255).all()
    assert len(offsets) > 1  # the window moves


def test_flip_is_shared_and_happens_both_ways():
    image, mask = _coordinate_pair(6, 9)
    outcomes = set()
    for _ in range(40):
        out_image, out_mask = aug.random_horizontal_flip(tf.cast(image, tf.float32), mask)
        flipped = int(out_image[0, 0, 1]) == 8
        expected = np.flip(mask.numpy(), axis=1) if flipped else mask.numpy()
        np.testing.assert_array_equal(out_mask.numpy(), expected)
        outcomes.add(flipped)
    assert outcomes == {False, True}


@pytest.mark.parametrize("flip", [True, False])
def test_preprocess_train_flips_only_when_asked(flip):
    """data.random_flip: with scale 1 and the crop the image's size, the only change left is the
    flip, so the crop is the stored image, or its mirror about half the time."""
    image, mask = _coordinate_pair(6, 9)
    example = {"image": image, "mask": mask}
    mirrored = 0
    for _ in range(40):
        out_image, out_mask = aug.preprocess_train(
            example, crop_size=(6, 9), min_scale=1.0, max_scale=1.0, flip=flip
        )
        is_mirror = np.array_equal(out_mask.numpy(), np.flip(mask.numpy(), axis=1))
        expected = np.flip(image.numpy(), axis=1) if is_mirror else image.numpy()
        np.testing.assert_array_equal(out_image.numpy(), expected)
        if not is_mirror:
            np.testing.assert_array_equal(out_mask.numpy(), mask.numpy())
        mirrored += is_mirror
    assert (0 < mirrored < 40) if flip else mirrored == 0


def test_preprocess_train_in_tf_data():
    examples = [_class_pair(seed=s) for s in range(4)]
    ds = tf.data.Dataset.from_tensor_slices(
        {k: tf.stack([e[k] for e in examples]) for k in ("image", "mask")}
    )
    ds = ds.map(
        lambda e: aug.preprocess_train(e, crop_size=(32, 40), min_scale=0.5, max_scale=2.0)
    ).batch(4)
    assert ds.element_spec[0].shape.as_list() == [None, 32, 40, 3]
    assert ds.element_spec[1].shape.as_list() == [None, 32, 40, 1]
    images, masks = next(iter(ds))
    assert images.dtype == tf.float32 and masks.dtype == tf.uint8
    assert set(np.unique(masks.numpy())) <= {0, 1, 2, 255}
    for image, mask in zip(images, masks, strict=True):
        _assert_pure_pixels_match(image, mask)


def test_preprocess_eval_keeps_full_resolution():
    example = _class_pair()
    image, mask = aug.preprocess_eval(example)
    assert image.dtype == tf.float32 and mask.dtype == tf.uint8
    np.testing.assert_array_equal(image.numpy(), example["image"].numpy())
    np.testing.assert_array_equal(mask.numpy(), example["mask"].numpy())


@pytest.mark.parametrize(
    "shape, crop, scales",
    [
        ((64, 128), (48, 48), (0.5, 2.0)),
        ((40, 30), (50, 50), (0.5, 2.0)),
        ((33, 77), (20, 31), (1.0, 1.0)),
    ],
)
def test_fused_scale_crop_equals_resize_then_crop(monkeypatch, shape, crop, scales):
    """The fused step gives exactly what random_scale + random_crop_or_pad give for the same
    draws (scale, top, left): the whole frame resized by tf.image.resize, then cut."""
    rng = np.random.default_rng(sum(shape))
    image = tf.constant(rng.integers(0, 256, (*shape, 3), dtype=np.uint8))
    mask = tf.constant(rng.integers(0, 20, (*shape, 1), dtype=np.uint8))
    real_uniform = tf.random.uniform
    for seed in range(4):
        draws = []

        def recording(*args, draws=draws, **kwargs):
            draws.append(real_uniform(*args, **kwargs))
            return draws[-1]

        monkeypatch.setattr(tf.random, "uniform", recording)
        old = aug.random_crop_or_pad(*aug.random_scale(image, mask, *scales), crop)
        replay = iter(list(draws))
        monkeypatch.setattr(tf.random, "uniform", lambda *a, replay=replay, **k: next(replay))
        new = aug.random_scale_crop_or_pad(image, mask, crop, *scales)
        monkeypatch.setattr(tf.random, "uniform", real_uniform)
        assert next(replay, None) is None, "the fused step drew fewer numbers"
        np.testing.assert_allclose(new[0].numpy(), old[0].numpy(), atol=1e-3, err_msg=str(seed))
        np.testing.assert_array_equal(new[1].numpy(), old[1].numpy())
