"""Cityscapes fine annotations through TFDS (`cityscapes/semantic_segmentation`).

TFDS cannot download Cityscapes: `leftImg8bit_trainvaltest.zip` and `gtFine_trainvaltest.zip` must sit
in `manual_dir` the first time the dataset is prepared. Its `segmentation_label` holds labelIds, which
we map to trainIds here so every segmentation source yields the same label space.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_datasets as tfds

from ondevice_vision.data import cityscapes_labels

# The folder reader and the Cityscapes docs call the validation split "val"; TFDS calls it
# "validation". Accepting both lets one data config serve both sources.
_SPLIT_ALIASES = {"val": "validation"}


def tfds_split_name(split: str) -> str:
    """Translates Cityscapes split names to TFDS ones; TFDS slicing syntax passes through."""
    return _SPLIT_ALIASES.get(split, split)


def _decode(example: dict) -> dict:
    return {
        "image": example["image_left"],
        "mask": cityscapes_labels.label_ids_to_train_ids(example["segmentation_label"]),
        "image_id": example["image_id"],
    }


def load(
    *,
    split: str,
    tfds_name: str = "cityscapes/semantic_segmentation",
    data_dir: str | None = None,
    manual_dir: str | None = None,
    shuffle_files: bool = False,
) -> tf.data.Dataset:
    """Returns decoded segmentation examples (trainId masks) for one TFDS split.

    Prepares the dataset on first use (a no-op once prepared), reading the zips from `manual_dir`.
    """
    builder = tfds.builder(tfds_name, data_dir=data_dir or None)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir or None)
    )
    ds = builder.as_dataset(split=tfds_split_name(split), shuffle_files=shuffle_files)
    return ds.map(_decode, num_parallel_calls=tf.data.AUTOTUNE)
