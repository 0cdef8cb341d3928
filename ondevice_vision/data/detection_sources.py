"""Picks the detection data source named by a config: TFDS COCO, COCO or VOC folders, or shapes.

Every source yields decoded detection examples
{"image": uint8 [H, W, 3], "image_id": int64, "boxes": float32 [N, 4] normalised yxyx,
 "classes": int32 [N] contiguous, "is_crowd": bool [N]}
in a fixed order (TFDS training reads its shards shuffled); shuffling, augmentation and batching
belong to the input pipeline that consumes them. Train and eval of one config share a LabelMap.
The field defaults live in configs/base_detection.py (`detection_data_config`).
"""

from __future__ import annotations

import ml_collections
import tensorflow as tf

from ondevice_vision.configs.common import MAX_IMAGE_PIXELS
from ondevice_vision.data import coco_folder, coco_labels, coco_tfds, shapes, voc_folder
from ondevice_vision.data.label_map import LabelMap

SOURCES = ("tfds", "coco_folder", "voc_folder", "shapes")
SPLITS = ("train", "eval")


def _folder(cfg: ml_collections.ConfigDict, split: str) -> str:
    key = "train_dir" if split == "train" else "eval_dir"
    directory = cfg.get(key)
    if not directory:
        raise ValueError(f"data source {cfg.source!r} needs data.{key}")
    return directory


def _all_folders(cfg: ml_collections.ConfigDict) -> list[tuple[str, str | None]]:
    """(folder, image set) of every split the config names, so both splits share one LabelMap."""
    folders = []
    for key, set_key in (("train_dir", "train_image_set"), ("eval_dir", "eval_image_set")):
        if cfg.get(key):
            folders.append((cfg.get(key), cfg.get(set_key)))
    return folders


def _limit(cfg) -> int:
    return cfg.get("max_image_pixels", MAX_IMAGE_PIXELS)


def _tfds(cfg, split, encoded):
    tfds_split = cfg.train_split if split == "train" else cfg.eval_split
    return coco_tfds.load_coco_tfds(
        cfg.tfds_name,
        tfds_split,
        cfg.get("data_dir"),
        shuffle_files=split == "train",
        encoded=encoded,
    )


def _coco_folder(cfg, split, encoded):
    folders, names = [], []
    for key, name_key in (("train_dir", "train_annotations"), ("eval_dir", "eval_annotations")):
        if cfg.get(key):
            folders.append(cfg.get(key))
            names.append(cfg.get(name_key))
    label_map = coco_folder.label_map_for(folders, names)
    name = cfg.get("train_annotations" if split == "train" else "eval_annotations")
    return coco_folder.load_coco_folder(
        _folder(cfg, split), label_map, encoded=encoded, annotations=name, max_pixels=_limit(cfg)
    )


def _voc_class_names(cfg) -> tuple[str, ...]:
    class_names = cfg.get("class_names")
    if not class_names:
        folders = _all_folders(cfg)
        class_names = voc_folder.collect_class_names(
            [d for d, _ in folders], [s for _, s in folders]
        )
    return tuple(class_names)


def _voc_folder(cfg, split, encoded):
    class_names = _voc_class_names(cfg)
    image_set = cfg.get("train_image_set" if split == "train" else "eval_image_set")
    return voc_folder.load_voc_folder(
        _folder(cfg, split), list(class_names), image_set, encoded=encoded, max_pixels=_limit(cfg)
    )


def _shapes(cfg, split, encoded):
    del encoded  # in-memory pictures
    num = cfg.num_train if split == "train" else cfg.num_eval
    return shapes.load_shapes(split, num, cfg.image_size, cfg.seed)


_LOADERS = {
    "tfds": _tfds,
    "coco_folder": _coco_folder,
    "voc_folder": _voc_folder,
    "shapes": _shapes,
}


def load_detection_source(
    cfg: ml_collections.ConfigDict, split: str, encoded: bool = False
) -> tuple[tf.data.Dataset, LabelMap]:
    """Decoded detection examples of `split` ("train" or "eval") and the source's LabelMap.

    `encoded`: sources that read image files yield their bytes as "encoded_image" (plus the EXIF
    "orientation" for folders) instead of a decoded "image"; shapes still yields "image".
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if cfg.source not in _LOADERS:
        raise ValueError(f"unknown data source {cfg.source!r}; expected one of {SOURCES}")
    return _LOADERS[cfg.source](cfg, split, encoded)


def source_label_map(cfg: ml_collections.ConfigDict) -> LabelMap:
    """The LabelMap `load_detection_source` returns, without reading any image: TFDS COCO's is
    the shipped COCO map (TFDS names its labels by the official names in id order); folders read
    only their annotations."""
    if cfg.source == "tfds":
        return coco_labels.label_map()
    if cfg.source == "coco_folder":
        return coco_folder.label_map_for([d for d, _ in _all_folders(cfg)])
    if cfg.source == "voc_folder":
        return LabelMap.contiguous(_voc_class_names(cfg))
    if cfg.source == "shapes":
        return shapes.label_map()
    raise ValueError(f"unknown data source {cfg.source!r}; expected one of {SOURCES}")
