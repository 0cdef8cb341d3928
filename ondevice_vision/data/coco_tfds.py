"""COCO detection from TensorFlow Datasets (`coco/2017`, `coco/2014`).

TFDS stores boxes as normalised yxyx already and labels as contiguous indices 0..79 in the order
of its ClassLabel names, which are the official COCO category names. The LabelMap maps each index
back to the official COCO category id by name, so predictions can be scored against the official
annotation files.

COCO 2014 also gets the two virtual splits of the TF Object Detection API: "minival" (the 8,059
val2014 image ids shipped in resources/coco_minival2014_ids.txt) and "valminusminival" (the rest of
val2014), both filtered from TFDS "validation" by image id. Splits combine with "+", for example
"train+valminusminival"; any other part is handed to TFDS unchanged (so "validation[:10%]" works).
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterable, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from ondevice_vision.data import coco_labels, image_decode
from ondevice_vision.data.coco_labels import COCO_CATEGORIES
from ondevice_vision.data.label_map import LabelMap

VIRTUAL_SPLITS = ("minival", "valminusminival")
_MINIVAL_RESOURCE = "coco_minival2014_ids.txt"


def minival2014_ids() -> np.ndarray:
    """The 8,059 COCO14 minival image ids (sorted int64), read from the package resources."""
    text = (
        importlib.resources.files("ondevice_vision.data.resources")
        .joinpath(_MINIVAL_RESOURCE)
        .read_text()
    )
    return np.unique(np.array([int(t) for t in text.split()], dtype=np.int64))


def label_map_from_tfds_names(names: Sequence[str]) -> LabelMap:
    """LabelMap for TFDS label indices, matched to the official COCO ids by name.

    A TFDS builder whose data was never prepared (or a mocked one) only knows placeholder names
    "0".."79"; TFDS builds its names from the official annotation file, which lists the
    categories sorted by id, so the placeholders are read in that order.
    """
    names = list(names)
    official = {name: cid for cid, name in COCO_CATEGORIES}
    if names == [str(i) for i in range(len(COCO_CATEGORIES))]:
        logging.warning("TFDS coco label names are placeholders; assuming the official id order")
        return coco_labels.label_map()
    unknown = [n for n in names if n not in official]
    if unknown:
        raise ValueError(f"TFDS coco label names not among the 80 COCO categories: {unknown}")
    return LabelMap(tuple(names), tuple(official[n] for n in names))


def parse_split(tfds_name: str, split: str) -> list[tuple[str, str | None]]:
    """'train+minival' -> [('train', None), ('validation', 'minival')]: (TFDS split, id filter)."""
    parts = [p.strip() for p in split.split("+")]
    if not all(parts):
        raise ValueError(f"Empty part in split {split!r}")
    parsed = []
    for part in parts:
        if part in VIRTUAL_SPLITS:
            if tfds_name.split(":")[0] != "coco/2014":
                raise ValueError(
                    f"Split {part!r} is a COCO 2014 split; {tfds_name} has no such split"
                )
            parsed.append(("validation", part))
        else:
            parsed.append((part, None))
    return parsed


def _filter_by_image_id(ds: tf.data.Dataset, ids: np.ndarray, keep: bool) -> tf.data.Dataset:
    if len(ids) == 0:
        return ds if not keep else ds.take(0)
    sorted_ids = tf.constant(np.unique(ids), tf.int64)

    def in_ids(ex):
        image_id = tf.reshape(tf.cast(ex["image/id"], tf.int64), [1])
        pos = tf.minimum(tf.searchsorted(sorted_ids, image_id), tf.size(sorted_ids) - 1)
        found = tf.gather(sorted_ids, pos)[0] == image_id[0]
        return found if keep else tf.logical_not(found)

    return ds.filter(in_ids)


def _to_detection_example(ex) -> dict[str, tf.Tensor]:
    boxes = tf.clip_by_value(tf.cast(ex["objects"]["bbox"], tf.float32), 0.0, 1.0)
    # COCO has a handful of annotations whose box is a line or a point; they cannot be matched.
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return {
        "encoded_image": ex["image"],
        "image_id": tf.cast(ex["image/id"], tf.int64),
        "boxes": tf.reshape(tf.boolean_mask(boxes, valid), [-1, 4]),
        "classes": tf.boolean_mask(tf.cast(ex["objects"]["label"], tf.int32), valid),
        "is_crowd": tf.boolean_mask(tf.cast(ex["objects"]["is_crowd"], tf.bool), valid),
    }


def _split_size(builder, tfds_split: str, id_filter: str | None, ids: np.ndarray) -> float:
    try:
        n = builder.info.splits[tfds_split].num_examples
    except (KeyError, ValueError):
        return 1.0
    if id_filter == "minival":
        return float(len(ids))
    if id_filter == "valminusminival":
        return float(max(n - len(ids), 1))
    return float(max(n, 1))


def load_coco_tfds(
    tfds_name: str,
    split: str,
    data_dir: str | None = None,
    *,
    shuffle_files: bool = False,
    minival_ids: Iterable[int] | None = None,
    encoded: bool = False,
) -> tuple[tf.data.Dataset, LabelMap]:
    """Decoded detection examples from TFDS COCO and the LabelMap to official COCO ids.

    Args:
      tfds_name: "coco/2017" or "coco/2014" (a version suffix like "coco/2017:1.1.0" is allowed).
      split: a TFDS split expression, plus "minival"/"valminusminival" for coco/2014, joined by "+".
      data_dir: TFDS data_dir (None: TFDS default).
      shuffle_files: shuffle TFDS shards, and mix the parts of a "+" split by sampling in
        proportion to their sizes instead of concatenating them (use for training).
      minival_ids: the image ids defining "minival" (default: the shipped 8,059 ids).
      encoded: yield the JPEG bytes as "encoded_image" instead of a decoded "image".
    """
    # Not prepared here on purpose: COCO is a 20+ GB download, run `tfds build` for it explicitly.
    builder = tfds.builder(tfds_name, data_dir=data_dir)
    label_map = label_map_from_tfds_names(builder.info.features["objects"]["label"].names)
    ids = minival2014_ids() if minival_ids is None else np.asarray(list(minival_ids), np.int64)

    datasets, sizes = [], []
    for tfds_split, id_filter in parse_split(tfds_name, split):
        # Images are decoded after the id filter, so minival does not pay for decoding all of val.
        ds = builder.as_dataset(
            split=tfds_split,
            shuffle_files=shuffle_files,
            decoders={"image": tfds.decode.SkipDecoding()},
        )
        if id_filter is not None:
            ds = _filter_by_image_id(ds, ids, keep=id_filter == "minival")
        datasets.append(ds)
        sizes.append(_split_size(builder, tfds_split, id_filter, ids))

    if len(datasets) == 1:
        ds = datasets[0]
    elif shuffle_files:
        weights = [s / sum(sizes) for s in sizes]
        ds = tf.data.Dataset.sample_from_datasets(datasets, weights, stop_on_empty_dataset=False)
    else:
        ds = datasets[0]
        for more in datasets[1:]:
            ds = ds.concatenate(more)
    ds = ds.map(_to_detection_example, num_parallel_calls=tf.data.AUTOTUNE)
    if not encoded:  # a JPEG the decoder refuses is skipped and named by its image id
        ds = image_decode.map_skipping_undecodable(
            ds,
            _decoded,
            image_decode.example_name,
            f"{tfds_name} {split}",
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return ds, label_map


def _decoded(example: dict) -> dict:
    example = dict(example)
    example["image"] = image_decode.decode_rgb(example.pop("encoded_image"))
    return example
