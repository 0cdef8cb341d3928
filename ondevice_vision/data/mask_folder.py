"""The generic segmentation format: a folder of images and same-stem PNG masks.

    <dir>/images/<stem>.jpg|.jpeg|.png
    <dir>/masks/<stem>.png        one uint8 class index per pixel (greyscale or palette PNG)
    <dir>/classes.txt             class names, one per line; line i is mask value i
                                  (may also sit in <dir>'s parent, shared by train and eval dirs)

Mask value `ignore_label` (default 255) marks unlabelled pixels; the source rewrites it to 255, the
ignore value every segmentation source yields. Corrupt or truncated image files are skipped,
counted and logged with their path (as in the detection folders); a bad mask is an error. Images
without a mask are skipped with a loud warning counting and naming them (none with a mask: an
error naming the masks folder); masks that label no pixel at all are a loud warning. Every mask is fully decoded once with PIL before
training to check its size and values, so a bad file is reported by name up front rather than
surfacing as NaNs or an out-of-range gather mid-training. That check costs one read of the dataset:
fine for the small custom datasets this format is meant for; convert large ones to TFDS instead.

Two images with one stem (`x.jpg` and `x.png`) would share one mask: an error naming both.
An image's EXIF orientation is applied unless its mask has the stored size and not the displayed
one (the mask was drawn on the stored pixels; such files are named in a warning). Masks are
taken as stored. File names that are not valid UTF-8 are read like any other.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow as tf
from absl import logging
from PIL import Image

from ondevice_vision import files
from ondevice_vision.configs.common import MAX_IMAGE_PIXELS
from ondevice_vision.data import dataset_paths, image_decode
from ondevice_vision.data.label_map import LabelMap

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
CLASSES_FILE = "classes.txt"
# TF's PNG decoder expands palette PNGs to colours, so their indices (and 16-bit values) are read
# with PIL inside the pipeline instead; plain greyscale masks stay on the fast tf.io path.
_TF_DECODABLE_MODES = ("L",)
_PIL_DECODED_MODES = ("P", "I;16", "I")


@dataclasses.dataclass(frozen=True)
class MaskFolderFiles:
    image_paths: list[str]
    mask_paths: list[str]
    mask_needs_pil: list[bool]
    stems: list[str]
    orientations: list[int]  # the EXIF orientation to apply to each image


def read_class_names(directory: str) -> tuple[tuple[str, ...], str]:
    """Class names from classes.txt in `directory` or its parent; returns (names, path)."""
    candidates = [
        os.path.join(directory, CLASSES_FILE),
        os.path.join(os.path.dirname(os.path.abspath(directory)), CLASSES_FILE),
    ]
    for path in candidates:
        if os.path.isfile(path):
            lines = files.read_text(path).splitlines()
            names = tuple(line.strip() for line in lines if line.strip())
            if not names:
                raise ValueError(f"{path}: no class names")
            return names, path
    raise FileNotFoundError(f"No {CLASSES_FILE} found; looked for {' and '.join(candidates)}")


def list_files(
    directory: str, num_classes: int, ignore_label: int = 255, max_pixels: int = MAX_IMAGE_PIXELS
) -> MaskFolderFiles:
    """Pairs images with masks by stem and checks every mask's mode, size and values."""
    image_dir = os.path.join(directory, "images")
    mask_dir = os.path.join(directory, "masks")
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"Image directory not found: {image_dir}")
    if not 0 < num_classes <= 255:
        raise ValueError(f"{directory}: need 1..255 classes for uint8 masks, got {num_classes}")
    if not num_classes <= ignore_label <= 255:
        raise ValueError(
            f"ignore_label {ignore_label} must be a uint8 value that is no class index "
            f"(0..{num_classes - 1} are the classes of {directory})"
        )

    names = [n for n in sorted(os.listdir(image_dir)) if _is_image(n)]
    by_stem: dict[str, str] = {}
    for name in names:
        stem = os.path.splitext(name)[0]
        if stem in by_stem:
            raise ValueError(
                f"{os.path.join(image_dir, by_stem[stem])} and {os.path.join(image_dir, name)} "
                f"have the same stem, so both would take the mask "
                f"{os.path.join(mask_dir, stem + '.png')}; rename or remove one"
            )
        by_stem[stem] = name
    checks = image_decode.check_image_files(
        [os.path.join(image_dir, n) for n in names], max_pixels=max_pixels
    )
    image_decode.log_bad_images(checks, image_dir)
    image_paths, mask_paths, needs_pil, stems, orientations, unapplied = [], [], [], [], [], []
    without_mask, labelled_masks = [], 0
    for name, check in zip(names, checks, strict=True):
        if check.problem is not None:
            continue
        stem = os.path.splitext(name)[0]
        image_path = os.path.join(image_dir, name)
        mask_path = os.path.join(mask_dir, stem + ".png")
        if not os.path.isfile(mask_path):
            without_mask.append(image_path)
            continue
        mode, orientation, problem, labelled = _check_pair(
            check, mask_path, num_classes, ignore_label
        )
        labelled_masks += labelled
        if problem:
            unapplied.append((image_path, problem))
        image_paths.append(image_path)
        mask_paths.append(mask_path)
        needs_pil.append(mode in _PIL_DECODED_MODES)
        stems.append(stem)
        orientations.append(orientation)
    image_decode.log_unapplied_orientations(unapplied, image_dir)
    _warn_about_labels(image_dir, mask_dir, without_mask, len(image_paths), labelled_masks)

    if not image_paths:
        raise ValueError(f"No usable {'/'.join(IMAGE_EXTENSIONS)} images found in {image_dir}")
    if os.path.isdir(mask_dir):
        unpaired = len(os.listdir(mask_dir)) - len(mask_paths)
        if unpaired > 0:
            logging.info("%s: %d files without a matching image skipped", mask_dir, unpaired)
    return MaskFolderFiles(image_paths, mask_paths, needs_pil, stems, orientations)


def _warn_about_labels(
    image_dir: str, mask_dir: str, without_mask: list[str], with_mask: int, labelled: int
) -> None:
    """Images without a mask are skipped loudly (none with one: an error); masks that hold no
    labelled pixel at all (every pixel the ignore label) train nothing and score nothing."""
    if without_mask:
        listed = ", ".join(without_mask[:5])
        more = f" and {len(without_mask) - 5} more" if len(without_mask) > 5 else ""
        if not with_mask:
            raise FileNotFoundError(
                f"{mask_dir}: NO MASKS: none of the {len(without_mask)} images in {image_dir} "
                f"has its mask (masks/STEM.png), e.g. {listed}{more}"
            )
        logging.warning(
            "%s: NO MASK for %d of the %d images in %s: skipped (an image without a mask neither "
            "trains nor is scored): %s%s",
            mask_dir,
            len(without_mask),
            len(without_mask) + with_mask,
            image_dir,
            listed,
            more,
        )
    if with_mask and not labelled:
        logging.warning(
            "%s: NO LABELLED PIXELS AT ALL in %d masks: every pixel is the ignore label, so a "
            "segmenter learns nothing from them and their evaluation scores nothing (mIoU NaN)",
            mask_dir,
            with_mask,
        )


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _check_pair(
    check: image_decode.ImageCheck, mask_path: str, num_classes: int, ignore_label: int
):
    """(mask mode, orientation to apply to the image, why the EXIF one is not applied or None,
    whether the mask labels any pixel)."""
    image_path = check.path
    try:
        with Image.open(mask_path) as m:
            mode, mask_size = m.mode, m.size
    except OSError as e:
        raise ValueError(f"Unreadable image or mask: {image_path} / {mask_path} ({e})") from e
    if mode not in _TF_DECODABLE_MODES + _PIL_DECODED_MODES:
        raise ValueError(
            f"{mask_path}: expected a single-channel PNG of class indices "
            f"(mode L or P), got mode {mode}"
        )
    orientation, problem = image_decode.orientation_for(check, mask_size)
    image_size = check.displayed_size if orientation != 1 else (check.width, check.height)
    if mask_size != image_size:
        exif = ""
        if check.orientation != 1:
            exif = (
                f" (after its EXIF orientation {check.orientation}; stored it is "
                f"{check.height}x{check.width})"
            )
        raise ValueError(
            f"Mask size {mask_size[1]}x{mask_size[0]} of {mask_path} differs from image size "
            f"{image_size[1]}x{image_size[0]} of {image_path}{exif}"
        )
    try:  # decoded only now that its size (the image's, within the pixel limit) is known
        with Image.open(mask_path) as m:
            values = np.unique(np.asarray(m))
    except OSError as e:
        raise ValueError(f"Unreadable image or mask: {image_path} / {mask_path} ({e})") from e
    bad = values[(values >= num_classes) & (values != ignore_label)]
    if bad.size:
        raise ValueError(
            f"{mask_path}: mask values {bad.tolist()} are neither a class index "
            f"0..{num_classes - 1} nor the ignore label {ignore_label}"
        )
    return mode, orientation, problem, bool((values != ignore_label).any())


def _pil_mask(path: bytes) -> np.ndarray:
    with Image.open(os.fsdecode(path)) as m:
        return np.asarray(m).astype(np.uint8)[..., None]


def _decoder(ignore_label: int):
    def decode(image_path, mask_path, mask_needs_pil, stem, orientation) -> dict:
        image = image_decode.decode_rgb(tf.io.read_file(image_path))
        image = image_decode.apply_orientation(image, orientation)
        mask = tf.cond(
            mask_needs_pil,
            lambda: tf.numpy_function(_pil_mask, [mask_path], tf.uint8, stateful=False),
            lambda: tf.io.decode_png(tf.io.read_file(mask_path), channels=1),
        )
        mask = tf.ensure_shape(mask, [None, None, 1])
        if ignore_label != 255:
            mask = tf.where(mask == ignore_label, tf.constant(255, tf.uint8), mask)
        return {"image": image, "mask": mask, "image_id": stem}

    return decode


def load(
    directory: str, ignore_label: int = 255, max_pixels: int = MAX_IMAGE_PIXELS
) -> tuple[tf.data.Dataset, LabelMap]:
    """Decoded examples of one mask folder and its contiguous LabelMap (dataset id = mask value)."""
    names, _ = read_class_names(directory)
    files = list_files(directory, len(names), ignore_label, max_pixels)
    ds = tf.data.Dataset.from_tensor_slices(
        (
            dataset_paths.tf_paths(files.image_paths),
            dataset_paths.tf_paths(files.mask_paths),
            files.mask_needs_pil,
            dataset_paths.tf_paths(files.stems),
            np.asarray(files.orientations, np.int32),
        )
    )
    ds = image_decode.map_skipping_undecodable(
        ds, _decoder(ignore_label), _image_path, directory, num_parallel_calls=tf.data.AUTOTUNE
    )
    return ds, LabelMap.contiguous(names)


def _image_path(image_path, *rest):
    del rest
    return image_path
