"""Picks the segmentation data source named in the config and returns its decoded examples.

    ds, label_map, extras = load_segmentation_source(config.data, "train")

`ds` yields {"image": uint8 [H, W, 3], "mask": uint8 [H, W, 1] (contiguous class ids, 255 = ignore),
"image_id": string} in a fixed order, unbatched and not repeated or shuffled (TFDS train reads its
files in shuffled order); augmentation and batching are the caller's. `label_map` maps contiguous
class ids to the dataset's ids (Cityscapes: trainId -> labelId). `extras` holds "ignore_label"
(always 255), "palette" (uint8 [K, 3]) and "file_paths" ((image, label) pairs for the official
Cityscapes evaluator, or None).
"""

from __future__ import annotations

import ml_collections
import numpy as np
import tensorflow as tf
from ml_collections import config_dict

from ondevice_vision.data import (
    cityscapes_folder,
    cityscapes_labels,
    cityscapes_tfds,
    mask_folder,
    synthetic_segmentation,
)
from ondevice_vision.data.label_map import LabelMap

IGNORE_LABEL = 255
SOURCES = ("tfds", "cityscapes_folder", "mask_folder", "synthetic")


def default_data_config() -> ml_collections.ConfigDict:
    """Every field any segmentation source reads; `source` picks which ones matter."""
    return ml_collections.ConfigDict(
        {
            "source": "synthetic",
            # tfds and cityscapes_folder. "val" also names TFDS's "validation" split.
            "train_split": "train",
            "eval_split": "val",
            # tfds
            "tfds_name": "cityscapes/semantic_segmentation",
            "data_dir": config_dict.placeholder(str),
            "manual_dir": config_dict.placeholder(str),
            # cityscapes_folder: directory holding leftImg8bit/ and gtFine/
            "root": config_dict.placeholder(str),
            # mask_folder: each dir has images/, masks/ and classes.txt (or its parent has it)
            "train_dir": config_dict.placeholder(str),
            "eval_dir": config_dict.placeholder(str),
            "ignore_label": IGNORE_LABEL,  # mask value meaning "unlabelled" in mask_folder masks
            # synthetic
            "num_train": 512,
            "num_eval": 64,
            "image_size": (128, 128),
            "seed": 0,
        }
    )


def distinct_palette(num_classes: int) -> np.ndarray:
    """The PASCAL VOC colour map: fixed, well separated colours for any number of classes."""
    ids = np.arange(num_classes)
    palette = np.zeros((num_classes, 3), np.int64)
    for shift in range(7, -1, -1):
        for channel in range(3):
            palette[:, channel] |= ((ids >> (3 * (7 - shift) + channel)) & 1) << shift
    return palette.astype(np.uint8)


def _check_split(split: str) -> None:
    if split not in ("train", "eval"):
        raise ValueError(f'split must be "train" or "eval", got {split!r}')


def _require(cfg: ml_collections.ConfigDict, field: str) -> str:
    value = cfg.get(field)
    if not value:
        raise ValueError(f"data.source={cfg.source!r} needs data.{field} to be set")
    return value


def _tfds(cfg, split):
    ds = cityscapes_tfds.load(
        split=cfg.train_split if split == "train" else cfg.eval_split,
        tfds_name=cfg.tfds_name,
        data_dir=cfg.data_dir,
        manual_dir=cfg.manual_dir,
        shuffle_files=split == "train",
    )
    return ds, cityscapes_labels.label_map(), cityscapes_labels.PALETTE, None


def _cityscapes_folder(cfg, split):
    root = _require(cfg, "root")
    ds, files = cityscapes_folder.load(
        root, cfg.train_split if split == "train" else cfg.eval_split
    )
    return ds, cityscapes_labels.label_map(), cityscapes_labels.PALETTE, files.eval_pairs


def _mask_folder(cfg, split):
    directory = _require(cfg, "train_dir" if split == "train" else "eval_dir")
    other = cfg.get("eval_dir" if split == "train" else "train_dir")
    if other:
        # Train and eval must agree on what each mask value means, or eval scores are garbage.
        names, path = mask_folder.read_class_names(directory)
        other_names, other_path = mask_folder.read_class_names(other)
        if names != other_names:
            raise ValueError(
                f"Class lists differ: {path} has {names}, {other_path} has {other_names}"
            )
    ds, label_map = mask_folder.load(directory, ignore_label=cfg.ignore_label)
    return ds, label_map, distinct_palette(label_map.num_classes), None


def _synthetic(cfg, split):
    ds = synthetic_segmentation.load(
        split=split,
        num_examples=cfg.num_train if split == "train" else cfg.num_eval,
        seed=cfg.seed,
        image_size=tuple(cfg.image_size),
    )
    label_map = LabelMap.contiguous(synthetic_segmentation.CLASS_NAMES)
    return ds, label_map, distinct_palette(label_map.num_classes), None


_LOADERS = {
    "tfds": _tfds,
    "cityscapes_folder": _cityscapes_folder,
    "mask_folder": _mask_folder,
    "synthetic": _synthetic,
}


def load_segmentation_source(
    cfg: ml_collections.ConfigDict, split: str
) -> tuple[tf.data.Dataset, LabelMap, dict]:
    """Decoded examples, label map and extras of `split` ("train" or "eval") of cfg.source."""
    _check_split(split)
    if cfg.source not in _LOADERS:
        raise ValueError(f"Unknown data.source {cfg.source!r}; expected one of {SOURCES}")
    ds, label_map, palette, file_paths = _LOADERS[cfg.source](cfg, split)
    extras = {"ignore_label": IGNORE_LABEL, "palette": palette, "file_paths": file_paths}
    return ds, label_map, extras
