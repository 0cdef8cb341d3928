"""Cityscapes labelId <-> trainId tables, class names and colours, from cityscapesscripts.

Annotations (gtFine *_labelIds.png, TFDS `segmentation_label`) store labelIds 0..33; models train on
the 19 evaluated classes as trainIds 0..18 with everything else ignored (255). The official evaluator
wants predictions back in labelIds, hence the inverse table.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from cityscapesscripts.helpers import labels as cs_labels

from ondevice_vision.data.label_map import IGNORE_LABEL, LabelMap

NUM_CLASSES = 19

_EVALUATED = sorted(
    (label for label in cs_labels.labels if 0 <= label.trainId < NUM_CLASSES),
    key=lambda label: label.trainId,
)
if [label.trainId for label in _EVALUATED] != list(range(NUM_CLASSES)):
    raise ImportError("cityscapesscripts does not define exactly one label per trainId 0..18")

TRAIN_ID_NAMES: tuple[str, ...] = tuple(label.name for label in _EVALUATED)
TRAIN_ID_LABEL_IDS: tuple[int, ...] = tuple(label.id for label in _EVALUATED)
# [19, 3] uint8: colour of each trainId, as in the official *_color.png files.
PALETTE = np.array([label.color for label in _EVALUATED], dtype=np.uint8)


def _label_id_to_train_id_table() -> np.ndarray:
    # 256 entries so any uint8 value is a valid index; labelIds that are not evaluated (trainId 255
    # or -1, e.g. "license plate") and values that are no labelId at all map to ignore.
    table = np.full(256, IGNORE_LABEL, dtype=np.uint8)
    for train_id, label_id in enumerate(TRAIN_ID_LABEL_IDS):
        table[label_id] = train_id
    return table


def _train_id_to_label_id_table() -> np.ndarray:
    # Ignore and out-of-range trainIds become labelId 0 ("unlabeled"), which the evaluator skips.
    table = np.zeros(256, dtype=np.uint8)
    table[:NUM_CLASSES] = TRAIN_ID_LABEL_IDS
    return table


LABEL_ID_TO_TRAIN_ID = _label_id_to_train_id_table()
TRAIN_ID_TO_LABEL_ID = _train_id_to_label_id_table()


def label_ids_to_train_ids(mask: tf.Tensor) -> tf.Tensor:
    """Maps a uint8 labelId mask (any shape) to trainIds 0..18 / 255, as uint8."""
    return tf.gather(tf.constant(LABEL_ID_TO_TRAIN_ID), tf.cast(mask, tf.int32))


def train_ids_to_label_ids(mask: tf.Tensor) -> tf.Tensor:
    """Maps trainIds (any integer dtype, any shape) to uint8 labelIds for the official evaluator.

    NumPy callers can index `TRAIN_ID_TO_LABEL_ID[pred]` directly.
    """
    return tf.gather(tf.constant(TRAIN_ID_TO_LABEL_ID), tf.cast(mask, tf.int32))


def label_map() -> LabelMap:
    """Contiguous trainId -> Cityscapes labelId, with the official class names."""
    return LabelMap(names=TRAIN_ID_NAMES, dataset_ids=TRAIN_ID_LABEL_IDS)
