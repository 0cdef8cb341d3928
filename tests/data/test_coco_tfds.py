"""TFDS COCO under tfds.testing.mock_data.

mock_data's own random examples cannot be used here: with a `decoders` argument (we skip image
decoding until after the minival filter) it encodes the random examples, and its random
`objects` sequences get different lengths per field, which TFDS then rejects. So the mock's
`as_dataset_fn` serves small hand-made examples, encoded and decoded by TFDS's real COCO features,
with image ids chosen on both sides of the shipped minival list.
"""

import os
import random

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from ondevice_vision.configs import base_detection
from ondevice_vision.data import coco_tfds, detection_sources

_IDS_FILE = os.path.join(
    os.path.dirname(__file__),
    "..",
    "..",
    "ondevice_vision",
    "data",
    "resources",
    "coco_minival2014_ids.txt",
)
_MINIVAL = [int(line) for line in open(_IDS_FILE).read().split()]
_NOT_MINIVAL = [i for i in range(1, 100) if i not in set(_MINIVAL)][:3]
_FAKE_IDS = {
    "train": [900001, 900002, 900003],
    "validation": [
        _MINIVAL[0],
        _NOT_MINIVAL[0],
        _MINIVAL[1],
        _NOT_MINIVAL[1],
        _MINIVAL[2],
        _NOT_MINIVAL[2],
    ],
}


def _smooth_image(rng, h, w):
    # Smooth, so the JPEG that TFDS stores stays close to it.
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    colour = rng.uniform(0, 155, 3)
    return (colour + 100 * np.stack([yy, xx, yy * xx], -1)).astype(np.uint8)


def _fake_example(image_id):
    rng = np.random.default_rng(image_id)
    h, w = rng.integers(8, 20, 2)
    n = int(image_id % 3)
    corners = rng.uniform(0, 1, (n, 2, 2)).astype(np.float32)
    boxes = np.concatenate([corners.min(1), corners.max(1)], axis=1)
    if n:
        boxes[0, 2] = boxes[0, 0]  # a degenerate line box, which the loader drops
    return {
        "image": _smooth_image(rng, h, w),
        "image/filename": f"{image_id}.jpg",
        "image/id": image_id,
        "objects": {
            "id": np.arange(n, dtype=np.int64),
            "area": np.ones(n, np.int64),
            "bbox": boxes,
            "label": rng.integers(0, 80, n),
            "is_crowd": rng.random(n) < 0.5,
        },
    }


def _fake_as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
    del read_config, shuffle_files
    features = self.info.features
    encoded = [features.encode_example(_fake_example(i)) for i in _FAKE_IDS[str(split)]]
    signature = tf.nest.map_structure(
        lambda s: tf.TensorSpec(s.shape, s.dtype), features.get_serialized_info()
    )
    ds = tf.data.Dataset.from_generator(lambda: iter(encoded), output_signature=signature)
    return ds.map(lambda ex: features.decode_example(ex, decoders=decoders))


@pytest.fixture(autouse=True)
def mocked_tfds():
    with tfds.testing.mock_data(as_dataset_fn=_fake_as_dataset):
        yield


def _ids(ds):
    return [int(ex["image_id"]) for ex in ds.as_numpy_iterator()]


def test_examples_decoded_and_converted():
    ds, label_map = coco_tfds.load_coco_tfds("coco/2017", "validation")
    image_feature = tfds.builder("coco/2017").info.features["image"]
    examples = list(ds.as_numpy_iterator())
    assert [int(e["image_id"]) for e in examples] == _FAKE_IDS["validation"]
    for ex in examples:
        ref = _fake_example(int(ex["image_id"]))
        # TFDS stores COCO images as JPEG: the stored bytes decoded by TF's JPEG decoder.
        stored = image_feature.encode_example(ref["image"])
        np.testing.assert_array_equal(ex["image"], tf.io.decode_jpeg(stored, channels=3).numpy())
        assert np.abs(ex["image"].astype(np.int32) - ref["image"]).mean() < 4
        objects = ref["objects"]
        valid = objects["bbox"][:, 2] > objects["bbox"][:, 0]
        np.testing.assert_allclose(ex["boxes"], objects["bbox"][valid].reshape(-1, 4))
        np.testing.assert_array_equal(ex["classes"], objects["label"][valid])
        np.testing.assert_array_equal(ex["is_crowd"], objects["is_crowd"][valid])
        assert ex["boxes"].dtype == np.float32 and ex["classes"].dtype == np.int32
        assert ex["image_id"].dtype == np.int64 and ex["is_crowd"].dtype == bool
    # The unprepared (mocked) builder only has placeholder names: official id order.
    assert label_map.dataset_ids == tuple(c for c, _ in coco_tfds.COCO_CATEGORIES)


def test_minival_and_valminusminival_filter_validation_by_shipped_ids():
    minival, _ = coco_tfds.load_coco_tfds("coco/2014", "minival")
    rest, _ = coco_tfds.load_coco_tfds("coco/2014", "valminusminival")
    assert _ids(minival) == [i for i in _FAKE_IDS["validation"] if i in set(_MINIVAL)]
    assert _ids(rest) == [i for i in _FAKE_IDS["validation"] if i not in set(_MINIVAL)]
    assert len(_ids(minival)) == 3 and len(_ids(rest)) == 3


def test_minival_ids_parameter():
    chosen = [_FAKE_IDS["validation"][1], _FAKE_IDS["validation"][4], 123456789]
    minival, _ = coco_tfds.load_coco_tfds("coco/2014", "minival", minival_ids=chosen)
    rest, _ = coco_tfds.load_coco_tfds("coco/2014", "valminusminival", minival_ids=chosen)
    assert _ids(minival) == chosen[:2]
    assert sorted(_ids(rest) + _ids(minival)) == sorted(_FAKE_IDS["validation"])
    nothing, _ = coco_tfds.load_coco_tfds("coco/2014", "minival", minival_ids=[])
    assert _ids(nothing) == []


def test_combined_splits():
    expected = _FAKE_IDS["train"] + [i for i in _FAKE_IDS["validation"] if i not in set(_MINIVAL)]
    ordered, _ = coco_tfds.load_coco_tfds("coco/2014", "train+valminusminival")
    assert _ids(ordered) == expected
    mixed, _ = coco_tfds.load_coco_tfds("coco/2014", "train + valminusminival", shuffle_files=True)
    assert sorted(_ids(mixed)) == sorted(expected)


def test_virtual_splits_only_for_coco_2014():
    with pytest.raises(ValueError, match="minival"):
        coco_tfds.load_coco_tfds("coco/2017", "minival")
    with pytest.raises(ValueError, match="Empty"):
        coco_tfds.parse_split("coco/2014", "train+")
    assert coco_tfds.parse_split("coco/2014", "train[:10%]+minival") == [
        ("train[:10%]", None),
        ("validation", "minival"),
    ]


def test_detection_source_tfds():
    cfg = base_detection.detection_data_config()
    cfg.source, cfg.tfds_name = "tfds", "coco/2014"
    cfg.train_split, cfg.eval_split = "train+valminusminival", "minival"
    train, train_map = detection_sources.load_detection_source(cfg, "train")
    evaluation, eval_map = detection_sources.load_detection_source(cfg, "eval")
    assert train_map == eval_map and train_map.num_classes == 80
    assert len(_ids(train)) == 6
    assert set(_ids(evaluation)) == set(_FAKE_IDS["validation"]) & set(_MINIVAL)


def test_shipped_minival_ids():
    ids = coco_tfds.minival2014_ids()
    assert len(ids) == 8059 and ids.dtype == np.int64
    np.testing.assert_array_equal(ids, sorted(set(_MINIVAL)))


def test_official_category_table():
    ids = [c for c, _ in coco_tfds.COCO_CATEGORIES]
    names = [n for _, n in coco_tfds.COCO_CATEGORIES]
    assert len(ids) == 80 and len(set(ids)) == 80 and len(set(names)) == 80
    assert ids == sorted(ids) and ids[0] == 1 and ids[-1] == 90
    # COCO dropped 11 of its 91 category ids from the detection annotations.
    assert sorted(set(range(1, 91)) - set(ids)) == [12, 26, 29, 30, 45, 66, 68, 69, 71, 83]


def test_label_map_by_name():
    names = [n for _, n in coco_tfds.COCO_CATEGORIES]
    random.Random(0).shuffle(names)
    label_map = coco_tfds.label_map_from_tfds_names(names)
    official = {n: c for c, n in coco_tfds.COCO_CATEGORIES}
    assert label_map.names == tuple(names)
    assert label_map.dataset_ids == tuple(official[n] for n in names)
    assert label_map.dataset_ids[names.index("person")] == 1
    with pytest.raises(ValueError, match="hotdog"):
        coco_tfds.label_map_from_tfds_names(["hotdog" if n == "hot dog" else n for n in names])


def test_an_undecodable_image_is_skipped_and_named_by_its_id(capfd):
    first = _FAKE_IDS["validation"][0]

    def first_cut_short(self, split, decoders=None, read_config=None, shuffle_files=False):
        ds = _fake_as_dataset(self, split, decoders, read_config, shuffle_files)

        def cut(ex):
            image = ex["image"]  # the JPEG's bytes: the source decodes them itself
            half = tf.strings.substr(image, 0, tf.strings.length(image) // 2)
            return {**ex, "image": tf.where(ex["image/id"] == first, half, image)}

        return ds.map(cut)

    with tfds.testing.mock_data(as_dataset_fn=first_cut_short):
        ds, _ = coco_tfds.load_coco_tfds("coco/2017", "validation")
        assert _ids(ds) == _FAKE_IDS["validation"][1:]
    assert (
        f"WARNING: coco/2017 validation: skipping {first} (TensorFlow cannot decode it; "
        "1 skipped so far)"
    ) in capfd.readouterr().err
