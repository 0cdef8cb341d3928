import io

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from cityscapesscripts.helpers import labels as cs_labels
from PIL import Image

from ondevice_vision.configs import base_segmentation, lraspp_mobilenet_v3_large_cityscapes
from ondevice_vision.data import cityscapes_labels, cityscapes_tfds, segmentation_sources
from ondevice_vision.tasks import segmentation as segmentation_task

# cityscapesscripts' evaluated classes: trainId i is labelId EVALUATED_LABEL_IDS[i].
EVALUATED_LABEL_IDS = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]


def test_label_tables_match_cityscapesscripts():
    table = cityscapes_labels.LABEL_ID_TO_TRAIN_ID
    assert table.shape == (256,) and table.dtype == np.uint8
    for label in cs_labels.labels:
        if 0 <= label.id < 256:
            expected = label.trainId if 0 <= label.trainId <= 18 else 255
            assert table[label.id] == expected, label.name
    assert list(cityscapes_labels.TRAIN_ID_LABEL_IDS) == EVALUATED_LABEL_IDS
    assert (table[34:] == 255).all()
    assert cityscapes_labels.TRAIN_ID_NAMES[13] == "car"
    assert cityscapes_labels.PALETTE.shape == (19, 3)
    assert tuple(cityscapes_labels.PALETTE[0]) == cs_labels.name2label["road"].color


def test_train_ids_round_trip_through_label_ids():
    train_ids = tf.constant(np.arange(19, dtype=np.uint8).reshape(1, 19, 1))
    label_ids = cityscapes_labels.train_ids_to_label_ids(train_ids)
    assert label_ids.dtype == tf.uint8
    np.testing.assert_array_equal(label_ids.numpy().ravel(), EVALUATED_LABEL_IDS)
    back = cityscapes_labels.label_ids_to_train_ids(label_ids)
    np.testing.assert_array_equal(back.numpy(), train_ids.numpy())
    # Ignore maps to labelId 0 ("unlabeled"), which the official evaluator skips.
    assert cityscapes_labels.train_ids_to_label_ids(tf.constant([255])).numpy()[0] == 0


def test_label_map_is_train_id_to_label_id():
    label_map = cityscapes_labels.label_map()
    assert label_map.num_classes == 19
    assert label_map.dataset_ids[13] == 26
    assert label_map.names[0] == "road"


def _png(array) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(out, "PNG")
    return out.getvalue()


def _small_cityscapes_dataset(self, split, decoders=None, read_config=None, damaged=None, **kwargs):
    """Stands in for the prepared TFDS files: two tiny images with chosen labelIds (PNG bytes
    for the features the caller decodes itself; `damaged`: the image id whose image PNG is cut
    short)."""
    del self, read_config, kwargs
    masks = np.array(
        [
            [[7, 26, 0, 33], [8, 24, 1, 255]],
            [[11, 11, 34, 4], [23, 23, 23, 29]],
        ],
        np.uint8,
    )[..., None]
    images = np.arange(2 * 2 * 4 * 3, dtype=np.uint8).reshape(2, 2, 4, 3)
    ids = [f"{split}_a_000000_000001", f"{split}_b_000000_000002"]
    features = {"image_left": list(images), "segmentation_label": list(masks)}
    for name in decoders or ():
        assert isinstance(decoders[name], tfds.decode.SkipDecoding), name
        features[name] = [_png(a) for a in features[name]]
    if damaged in ids:
        png = features["image_left"][ids.index(damaged)]
        features["image_left"][ids.index(damaged)] = png[: len(png) // 2]
    return tf.data.Dataset.from_tensor_slices({**features, "image_id": ids})


def test_tfds_label_ids_become_train_ids():
    with tfds.testing.mock_data(as_dataset_fn=_small_cityscapes_dataset):
        ds = cityscapes_tfds.load(split="train")
        examples = list(ds.as_numpy_iterator())
    assert len(examples) == 2
    first, second = examples
    assert first["mask"].dtype == np.uint8 and first["mask"].shape == (2, 4, 1)
    np.testing.assert_array_equal(first["mask"][..., 0], [[0, 13, 255, 18], [1, 11, 255, 255]])
    np.testing.assert_array_equal(second["mask"][..., 0], [[2, 2, 255, 255], [10, 10, 10, 255]])
    assert first["image"].dtype == np.uint8 and first["image"].shape == (2, 4, 3)
    np.testing.assert_array_equal(first["image"], np.arange(24).reshape(2, 4, 3))
    assert first["image_id"] == b"train_a_000000_000001"


def _first_image_damaged(self, split, decoders=None, read_config=None, **kwargs):
    damaged = f"{split}_a_000000_000001"
    return _small_cityscapes_dataset(self, split, decoders, read_config, damaged, **kwargs)


def test_an_undecodable_png_is_skipped_in_training_and_named_in_evaluation(capfd):
    cfg = base_segmentation.segmentation_data_config()
    cfg.source = "tfds"
    with tfds.testing.mock_data(as_dataset_fn=_first_image_damaged):
        train, _ = segmentation_sources.load_segmentation_source(cfg, "train")
        assert [e["image_id"] for e in train.as_numpy_iterator()] == [b"train_b_000000_000002"]
        evaluation, _ = segmentation_sources.load_segmentation_source(cfg, "eval")
        with pytest.raises(tf.errors.InvalidArgumentError) as error:
            list(evaluation.as_numpy_iterator())
    assert (
        "WARNING: Cityscapes TFDS train: skipping train_a_000000_000001 (TensorFlow cannot "
        "decode it; 1 skipped so far)"
    ) in capfd.readouterr().err
    assert (
        "Cityscapes TFDS val: validation_a_000000_000001: TensorFlow cannot decode it"
        in error.value.message
    )


def test_tfds_val_alias_and_dispatcher():
    cfg = base_segmentation.segmentation_data_config()
    cfg.source = "tfds"
    with tfds.testing.mock_data(as_dataset_fn=_small_cityscapes_dataset):
        ds, label_map = segmentation_sources.load_segmentation_source(cfg, "eval")
        example = next(ds.as_numpy_iterator())
    assert example["image_id"] == b"validation_a_000000_000001"
    assert label_map == cityscapes_labels.label_map()
    config = lraspp_mobilenet_v3_large_cityscapes.get_config("tfds")
    palette = segmentation_task.palette(config, label_map.num_classes)
    np.testing.assert_array_equal(palette, cityscapes_labels.PALETTE)


def test_tfds_random_mock_matches_lookup_of_raw_labels():
    # TFDS's own random generator, at the real 1024x2048 feature shape: our mask must be exactly
    # the lookup table applied to the raw labelIds TFDS yields for the same example.
    with tfds.testing.mock_data(num_examples=1):
        raw = next(tfds.load("cityscapes/semantic_segmentation", split="train").as_numpy_iterator())
        ours = next(cityscapes_tfds.load(split="train").as_numpy_iterator())
    assert ours["mask"].shape == (1024, 2048, 1)
    expected = cityscapes_labels.LABEL_ID_TO_TRAIN_ID[raw["segmentation_label"]]
    np.testing.assert_array_equal(ours["mask"], expected)
    np.testing.assert_array_equal(ours["image"], raw["image_left"])


def test_unknown_split_rejected():
    cfg = base_segmentation.segmentation_data_config()
    with pytest.raises(ValueError, match="train.*eval"):
        segmentation_sources.load_segmentation_source(cfg, "validation")
    cfg.source = "coco"
    with pytest.raises(ValueError, match="coco"):
        segmentation_sources.load_segmentation_source(cfg, "train")
