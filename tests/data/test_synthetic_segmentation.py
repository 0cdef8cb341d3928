import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from ondevice_vision.configs import base_segmentation
from ondevice_vision.data import segmentation_sources, synthetic_segmentation


def _config(**overrides):
    cfg = base_segmentation.segmentation_data_config()
    cfg.update(overrides)
    return cfg


def _arrays(ds):
    examples = list(ds.as_numpy_iterator())
    return np.stack([e["image"] for e in examples]), np.stack([e["mask"] for e in examples])


def test_default_config_is_synthetic_128():
    cfg = base_segmentation.segmentation_data_config()
    assert cfg.source == "synthetic"
    assert tuple(cfg.image_size) == (128, 128)
    for field in ("tfds_name", "train_split", "eval_split", "data_dir", "manual_dir", "root"):
        assert field in cfg
    for field in ("train_dir", "eval_dir", "ignore_label", "num_train", "num_eval", "seed"):
        assert field in cfg


def test_dispatcher_shapes_labels_and_ids():
    cfg = _config(num_train=3, num_eval=2, image_size=(48, 80))
    ds, label_map = segmentation_sources.load_segmentation_source(cfg, "train")
    assert ds.element_spec["image"].shape.as_list() == [48, 80, 3]
    assert ds.element_spec["mask"].shape.as_list() == [48, 80, 1]
    examples = list(ds.as_numpy_iterator())
    assert len(examples) == 3
    assert [e["image_id"] for e in examples] == [
        b"synthetic_train_000000",
        b"synthetic_train_000001",
        b"synthetic_train_000002",
    ]
    assert examples[0]["image"].dtype == np.uint8 and examples[0]["mask"].dtype == np.uint8
    assert label_map.num_classes == 4 and label_map.names[0] == "background"
    eval_ds, _ = segmentation_sources.load_segmentation_source(cfg, "eval")
    assert len(list(eval_ds)) == 2


def test_deterministic_and_splits_differ():
    cfg = _config(num_train=4, num_eval=4, image_size=(32, 32))
    images_a, masks_a = _arrays(segmentation_sources.load_segmentation_source(cfg, "train")[0])
    images_b, masks_b = _arrays(segmentation_sources.load_segmentation_source(cfg, "train")[0])
    np.testing.assert_array_equal(images_a, images_b)
    np.testing.assert_array_equal(masks_a, masks_b)
    # The lazy tf.data path yields exactly what the NumPy generator makes.
    image, mask = synthetic_segmentation.make_example(2, seed=0, split="train", image_size=(32, 32))
    np.testing.assert_array_equal(images_a[2], image)
    np.testing.assert_array_equal(masks_a[2], mask)

    images_eval, _ = _arrays(segmentation_sources.load_segmentation_source(cfg, "eval")[0])
    reseeded = _config(num_train=4, image_size=(32, 32), seed=1)
    images_seed1, _ = _arrays(segmentation_sources.load_segmentation_source(reseeded, "train")[0])
    for other in (images_eval, images_seed1):
        assert all(not np.array_equal(a, b) for a, b in zip(images_a, other, strict=True))


def test_label_statistics():
    masks = np.stack([synthetic_segmentation.make_example(i, split="train")[1] for i in range(24)])
    values, counts = np.unique(masks, return_counts=True)
    assert set(values) == {0, 1, 2, 3, 255}
    fractions = dict(zip(values.tolist(), counts / masks.size, strict=True))
    assert fractions[255] < 0.05  # only a thin rim is ignored
    for class_id in (1, 2, 3):
        assert fractions[class_id] > 0.02
    # Ignored pixels sit on borders between classes: two different labels within 2 pixels.
    for mask in masks[..., 0]:
        windows = sliding_window_view(np.pad(mask, 2, mode="edge"), (5, 5))
        for y, x in zip(*np.nonzero(mask == 255), strict=True):
            assert len(set(windows[y, x].ravel().tolist()) - {255}) >= 2, (y, x)


def test_classes_are_separable_from_train_to_eval():
    # A per-pixel nearest-mean colour classifier fitted on train must already do well on eval:
    # the classes carry a consistent signal and the two splits come from the same distribution.
    train = [synthetic_segmentation.make_example(i, split="train") for i in range(16)]
    evals = [synthetic_segmentation.make_example(i, split="eval") for i in range(8)]
    x = np.concatenate([im.reshape(-1, 3) for im, _ in train]).astype(np.float32)
    y = np.concatenate([m.ravel() for _, m in train])
    means = np.stack([x[y == c].mean(0) for c in range(4)])
    xe = np.concatenate([im.reshape(-1, 3) for im, _ in evals]).astype(np.float32)
    ye = np.concatenate([m.ravel() for _, m in evals])
    pred = np.argmin(((xe[:, None] - means[None]) ** 2).sum(-1), axis=1)
    valid = ye != 255
    ious = [
        np.sum((pred == c) & (ye == c) & valid) / np.sum(((pred == c) | (ye == c)) & valid)
        for c in range(4)
    ]
    assert np.mean(ious) > 0.7


def test_bad_split_rejected():
    with pytest.raises(ValueError, match="split"):
        synthetic_segmentation.make_example(0, split="val")
