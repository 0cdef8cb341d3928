"""Cityscapes read straight from the standard folder layout (no TFDS preparation step).

    <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png   (if generated)
    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

Masks come from *_labelTrainIds.png when cityscapesscripts' createTrainIdLabelImgs has written them,
else from *_labelIds.png mapped to trainIds in the graph. Every pair is checked before training starts
(presence, PNG mode and size from the headers; every file's chunks and CRCs with PIL's verify, in
threads) so a broken tree fails at once with the offending file named, not hours into a run
inside tf.data. Corrupt files are errors here, not skipped: Cityscapes is a fixed benchmark whose
official evaluation needs every image. File names that are not valid UTF-8 are read like any
other (see dataset_paths).
"""

from __future__ import annotations

import dataclasses
import os

import tensorflow as tf
from absl import logging
from PIL import Image

from ondevice_vision.configs.common import MAX_IMAGE_PIXELS
from ondevice_vision.data import cityscapes_labels, dataset_paths, image_decode

IMAGE_SUFFIX = "_leftImg8bit.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"


@dataclasses.dataclass(frozen=True)
class CityscapesFiles:
    image_paths: list[str]
    mask_paths: list[str]
    mask_is_label_ids: list[bool]
    stems: list[str]
    # (image, *_labelIds.png) pairs for the official evaluator; None when a labelIds file is missing.
    eval_pairs: list[tuple[str, str]] | None


def _png_header(path: str) -> tuple[str, tuple[int, int]]:
    try:
        with Image.open(path) as img:
            return img.mode, img.size
    except OSError as e:
        raise ValueError(f"{path}: not a readable image ({e})") from e


def list_files(root: str, split: str, max_pixels: int = MAX_IMAGE_PIXELS) -> CityscapesFiles:
    """Finds and checks every image/label pair of one split, in sorted (city, stem) order."""
    image_dir = os.path.join(root, "leftImg8bit", split)
    label_dir = os.path.join(root, "gtFine", split)
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"Cityscapes image directory not found: {image_dir}")

    image_paths, mask_paths, is_label_ids, stems, eval_pairs = [], [], [], [], []
    missing_label_ids = 0
    for city in sorted(os.listdir(image_dir)):
        city_dir = os.path.join(image_dir, city)
        if not os.path.isdir(city_dir):
            continue
        for name in sorted(os.listdir(city_dir)):
            if not name.endswith(IMAGE_SUFFIX):
                continue
            stem = name[: -len(IMAGE_SUFFIX)]
            image_path = os.path.join(city_dir, name)
            train_ids_path = os.path.join(label_dir, city, stem + TRAIN_IDS_SUFFIX)
            label_ids_path = os.path.join(label_dir, city, stem + LABEL_IDS_SUFFIX)
            if os.path.isfile(train_ids_path):
                mask_path = train_ids_path
            elif os.path.isfile(label_ids_path):
                mask_path = label_ids_path
            else:
                raise FileNotFoundError(
                    f"No label for {image_path}: expected {label_ids_path} (or {train_ids_path})"
                )
            _check_pair(image_path, mask_path)
            image_paths.append(image_path)
            mask_paths.append(mask_path)
            is_label_ids.append(mask_path == label_ids_path)
            stems.append(stem)
            if os.path.isfile(label_ids_path):
                eval_pairs.append((image_path, label_ids_path))
            else:
                missing_label_ids += 1

    if not image_paths:
        raise ValueError(f"No *{IMAGE_SUFFIX} images found under {image_dir}")
    checks = image_decode.check_image_files(image_paths + mask_paths, max_pixels=max_pixels)
    bad = [c for c in checks if c.problem]
    if bad:
        listed = "; ".join(f"{c.path}: {c.problem}" for c in bad[:5])
        raise ValueError(f"{len(bad)} unreadable Cityscapes files under {root}: {listed}")
    if missing_label_ids:
        logging.warning(
            "%d of %d images in %s have no *%s; the official evaluator cannot run on this split.",
            missing_label_ids,
            len(image_paths),
            label_dir,
            LABEL_IDS_SUFFIX,
        )
    return CityscapesFiles(
        image_paths=image_paths,
        mask_paths=mask_paths,
        mask_is_label_ids=is_label_ids,
        stems=stems,
        eval_pairs=None if missing_label_ids else eval_pairs,
    )


def _check_pair(image_path: str, mask_path: str) -> None:
    _, image_size = _png_header(image_path)
    mask_mode, mask_size = _png_header(mask_path)
    if mask_mode != "L":
        # tf.io.decode_png would turn a palette or RGB mask into colours, not ids.
        raise ValueError(f"{mask_path}: expected an 8-bit greyscale PNG (mode L), got {mask_mode}")
    if mask_size != image_size:
        raise ValueError(
            f"Mask size {mask_size[1]}x{mask_size[0]} of {mask_path} differs from image size "
            f"{image_size[1]}x{image_size[0]} of {image_path}"
        )


def _checked_train_ids(mask, mask_path):
    """A *_labelTrainIds.png holding other values than 0..18 and 255 fails, naming the file.

    Only PNG headers are checked up front (full masks would mean reading the dataset twice); a
    bad value would otherwise stop training with an out-of-range label error naming no file (on
    a CPU), or silently turn the loss into NaN (on a GPU).
    """
    valid = (mask < cityscapes_labels.NUM_CLASSES) | (mask == cityscapes_labels.IGNORE_LABEL)
    check = tf.debugging.Assert(
        tf.reduce_all(valid),
        [
            mask_path,
            "holds values that are neither a trainId 0..18 nor 255 (ignore); regenerate it with "
            "cityscapesscripts' createTrainIdLabelImgs",
        ],
    )
    with tf.control_dependencies([check]):
        return tf.identity(mask)


def _decode(image_path, mask_path, mask_is_label_ids, stem) -> dict:
    image = tf.io.decode_png(tf.io.read_file(image_path), channels=3)
    mask = tf.io.decode_png(tf.io.read_file(mask_path), channels=1)
    mask = tf.cond(
        mask_is_label_ids,
        lambda: cityscapes_labels.label_ids_to_train_ids(mask),
        lambda: _checked_train_ids(mask, mask_path),
    )
    return {"image": image, "mask": mask, "image_id": stem}


def dataset_from_files(files: CityscapesFiles) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices(
        (
            dataset_paths.tf_paths(files.image_paths),
            dataset_paths.tf_paths(files.mask_paths),
            files.mask_is_label_ids,
            dataset_paths.tf_paths(files.stems),
        )
    )
    # The official evaluation needs every image: a file the decoder refuses is an error naming it.
    return image_decode.map_skipping_undecodable(
        ds,
        _decode,
        _pair_name,
        "Cityscapes",
        policy="error",
        problem="TensorFlow cannot decode it, or its label values are out of range",
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def _pair_name(image_path, mask_path, mask_is_label_ids, stem):
    del mask_is_label_ids, stem
    return tf.strings.join([image_path, " / ", mask_path])


def load(
    root: str, split: str, max_pixels: int = MAX_IMAGE_PIXELS
) -> tuple[tf.data.Dataset, CityscapesFiles]:
    """Decoded examples of split "train" / "val" / "test" (trainId masks), plus the file lists."""
    files = list_files(root, split, max_pixels)
    return dataset_from_files(files), files
