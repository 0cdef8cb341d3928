"""Cityscapes fine annotations through TFDS (`cityscapes/semantic_segmentation`).

TFDS cannot download Cityscapes: `leftImg8bit_trainvaltest.zip` and `gtFine_trainvaltest.zip` must sit
in `manual_dir` the first time the dataset is prepared. Its `segmentation_label` holds labelIds, which
we map to trainIds here so every segmentation source yields the same label space.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_datasets as tfds

from ondevice_vision.data import cityscapes_labels, image_decode

# The folder reader and the Cityscapes docs call the validation split "val"; TFDS calls it
# "validation". Accepting both lets one data config serve both sources.
_SPLIT_ALIASES = {"val": "validation"}


def tfds_split_name(split: str) -> str:
    """Translates Cityscapes split names to TFDS ones; TFDS slicing syntax passes through."""
    return _SPLIT_ALIASES.get(split, split)


def _decode(example: dict) -> dict:
    image = tf.io.decode_png(example["image_left"], channels=3)
    mask = tf.io.decode_png(example["segmentation_label"], channels=1)
    return {
        "image": image,
        "mask": cityscapes_labels.label_ids_to_train_ids(mask),
        "image_id": example["image_id"],
    }


def _image_id(example: dict) -> tf.Tensor:
    return example["image_id"]


def load(
    *,
    split: str,
    tfds_name: str = "cityscapes/semantic_segmentation",
    data_dir: str | None = None,
    manual_dir: str | None = None,
    shuffle_files: bool = False,
    skip_undecodable: bool = False,
) -> tf.data.Dataset:
    """Returns decoded segmentation examples (trainId masks) for one TFDS split.

    Prepares the dataset on first use (a no-op once prepared), reading the zips from `manual_dir`.
    `skip_undecodable`: an example whose PNGs TensorFlow cannot decode is skipped, counted and
    named on stderr (training); otherwise it is an error naming it (evaluation).
    """
    builder = tfds.builder(tfds_name, data_dir=data_dir or None)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir or None)
    )
    ds = builder.as_dataset(
        split=tfds_split_name(split),
        shuffle_files=shuffle_files,
        decoders={
            "image_left": tfds.decode.SkipDecoding(),
            "segmentation_label": tfds.decode.SkipDecoding(),
        },
    )
    # Decoded under the per-file guard, as the folder readers do: a PNG the decoder refuses is
    # named by its image id. Training skips and counts it; the official evaluation needs every
    # image, so there it is an error.
    return image_decode.map_skipping_undecodable(
        ds,
        _decode,
        _image_id,
        f"Cityscapes TFDS {split}",
        policy="skip" if skip_undecodable else "error",
        num_parallel_calls=tf.data.AUTOTUNE,
    )
