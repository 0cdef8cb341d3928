"""Picks the segmentation data source named in the config and returns its decoded examples.

    ds, label_map = load_segmentation_source(config.data, "train")

`ds` yields {"image": uint8 [H, W, 3], "mask": uint8 [H, W, 1] (contiguous class ids, 255 = ignore),
"image_id": string} in a fixed order, unbatched and not repeated or shuffled (TFDS train reads its
files in shuffled order); augmentation and batching are the caller's. `label_map` maps contiguous
class ids to the dataset's ids (Cityscapes: trainId -> labelId). The field defaults live in
configs/base_segmentation.py (`segmentation_data_config`).
"""

from __future__ import annotations

import ml_collections
import tensorflow as tf

from ondevice_vision.configs.common import MAX_IMAGE_PIXELS
from ondevice_vision.data import (
    cityscapes_folder,
    cityscapes_labels,
    cityscapes_tfds,
    coco_segmentation,
    mask_folder,
    synthetic_segmentation,
)
from ondevice_vision.data.label_map import LabelMap

SOURCES = ("tfds", "cityscapes_folder", "mask_folder", "coco_folder", "synthetic")
SPLITS = ("train", "eval")


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
        skip_undecodable=split == "train",
    )
    return ds, cityscapes_labels.label_map()


def _cityscapes_folder(cfg, split):
    root = _require(cfg, "root")
    ds, _ = cityscapes_folder.load(
        root,
        cfg.train_split if split == "train" else cfg.eval_split,
        max_pixels=cfg.get("max_image_pixels", MAX_IMAGE_PIXELS),
    )
    return ds, cityscapes_labels.label_map()


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
    return mask_folder.load(
        directory,
        ignore_label=cfg.ignore_label,
        max_pixels=cfg.get("max_image_pixels", MAX_IMAGE_PIXELS),
    )


def _coco_folder(cfg, split):
    directory = _require(cfg, "train_dir" if split == "train" else "eval_dir")
    # One label map over both folders: train and eval must agree on the class indices.
    folders = [d for d in (cfg.get("train_dir"), cfg.get("eval_dir")) if d]
    unlabeled = cfg.get("coco_unlabeled", "background")
    label_map = coco_segmentation.label_map_for(folders, unlabeled)
    return coco_segmentation.load(directory, label_map, unlabeled)


def _synthetic(cfg, split):
    ds = synthetic_segmentation.load(
        split=split,
        num_examples=cfg.num_train if split == "train" else cfg.num_eval,
        seed=cfg.seed,
        image_size=tuple(cfg.image_size),
    )
    return ds, LabelMap.contiguous(synthetic_segmentation.CLASS_NAMES)


_LOADERS = {
    "tfds": _tfds,
    "cityscapes_folder": _cityscapes_folder,
    "mask_folder": _mask_folder,
    "coco_folder": _coco_folder,
    "synthetic": _synthetic,
}


def load_segmentation_source(
    cfg: ml_collections.ConfigDict, split: str
) -> tuple[tf.data.Dataset, LabelMap]:
    """Decoded examples of `split` ("train" or "eval") of cfg.source, and its LabelMap."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if cfg.source not in _LOADERS:
        raise ValueError(f"unknown data source {cfg.source!r}; expected one of {SOURCES}")
    return _LOADERS[cfg.source](cfg, split)


def source_label_map(cfg: ml_collections.ConfigDict) -> LabelMap:
    """The LabelMap `load_segmentation_source` returns, without reading any image: Cityscapes'
    is the 19 train ids of cityscapesscripts' label table; mask folders read classes.txt."""
    if cfg.source in ("tfds", "cityscapes_folder"):
        return cityscapes_labels.label_map()
    if cfg.source == "mask_folder":
        directory = cfg.get("train_dir") or _require(cfg, "eval_dir")
        names, _ = mask_folder.read_class_names(directory)
        return LabelMap.contiguous(names)
    if cfg.source == "synthetic":
        return LabelMap.contiguous(synthetic_segmentation.CLASS_NAMES)
    raise ValueError(f"unknown data source {cfg.source!r}; expected one of {SOURCES}")
