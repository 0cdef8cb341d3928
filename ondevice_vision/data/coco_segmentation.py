"""Semantic masks from a COCO folder with polygon or RLE "segmentation" annotations.

Labelling tools (Roboflow, CVAT, LabelMe through converters) export segmentation this way. The
folder is the detection source's (coco_folder.py: `annotations.json` or `_annotations.coco.json`,
images beside it or in `images/`), read and checked by the same code, so the same bad-input
policy holds: corrupt images are skipped, counted and logged; malformed JSON, unknown category or
image ids, duplicate image ids, missing files and non-finite boxes are errors naming the file.

- Rasterised by pycocotools (`frPyObjects` for polygons and uncompressed RLE, compressed RLE as
  it is, `decode`), at the image's JSON width/height.
- Painting order: larger objects first, so smaller ones stay on top of the ones they lie on (a
  window on a facade stays a window). Size is the rasterised pixel count; ties keep the file's
  order. `iscrowd` regions are painted like any other region of their class.
- Class names: the categories'; a name several categories share gets the id appended ("facade
  (id 0)"), since results are keyed by name.
- Unlabelled pixels (covered by no annotation): `unlabeled="background"` (default) adds a class
  "background" at index 0 (dataset id -1) and the categories follow in increasing id order;
  `"ignore"` gives them the ignore label 255 (no loss, no score) and the classes are the
  categories alone.
- More errors, naming the annotation file and the annotation id: a polygon that is not a list of
  an even number (at least 6) of finite coordinates, an RLE without `size` / `counts` or whose
  size is not the image's. An image whose decoded (upright) size differs from its JSON size is an
  error naming the file (its polygons would land elsewhere). Annotations without a segmentation
  paint nothing: counted and logged.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from absl import logging
from pycocotools import mask as mask_utils

from ondevice_vision.configs import checks
from ondevice_vision.data import coco_folder, dataset_paths, image_decode
from ondevice_vision.data.label_map import IGNORE_LABEL, LabelMap

UNLABELED = checks.COCO_UNLABELED
BACKGROUND_ID = -1


def label_map_for(directories, unlabeled: str = "background") -> LabelMap:
    """The categories of the folders (see coco_folder.label_map_for), after "background"."""
    if unlabeled not in UNLABELED:
        raise ValueError(f"data.coco_unlabeled must be one of {UNLABELED}, got {unlabeled!r}")
    categories = coco_folder.label_map_for(directories)
    # Class names key the per-class results: a name two categories share (Roboflow exports a
    # placeholder category named like a real one) gets its id appended, e.g. "facade (id 0)".
    names = categories.unique_names
    if unlabeled == "ignore":
        return LabelMap(names, categories.dataset_ids)
    return LabelMap(("background", *names), (BACKGROUND_ID, *categories.dataset_ids))


def _check_segmentation(segmentation, size, where: str):
    """Returns pycocotools RLEs for one annotation's segmentation (None: it has none)."""
    height, width = size
    if segmentation is None or (isinstance(segmentation, list) and not segmentation):
        return None
    if isinstance(segmentation, list):
        for polygon in segmentation:
            ok = isinstance(polygon, list) and len(polygon) >= 6 and len(polygon) % 2 == 0
            try:
                ok = ok and bool(np.all(np.isfinite(np.asarray(polygon, np.float64))))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ValueError(
                    f"{where}: a polygon must be a list of an even number (>= 6) of finite "
                    f"coordinates, got {str(polygon)[:80]}"
                )
        return mask_utils.frPyObjects(segmentation, height, width)
    if isinstance(segmentation, dict):
        if "counts" not in segmentation or "size" not in segmentation:
            raise ValueError(f"{where}: an RLE needs 'size' and 'counts'")
        if [int(v) for v in segmentation["size"]] != [height, width]:
            raise ValueError(
                f"{where}: RLE size {segmentation['size']} is not the image's {[height, width]}"
            )
        counts = segmentation["counts"]
        if isinstance(counts, list):
            return [mask_utils.frPyObjects(segmentation, height, width)]
        rle = dict(segmentation)
        rle["counts"] = counts.encode() if isinstance(counts, str) else counts
        return [rle]
    raise ValueError(f"{where}: segmentation must be a polygon list or an RLE dict")


def paint(shapes, size, unlabeled_value: int) -> np.ndarray:
    """uint8 [H, W, 1]: (RLEs, class value) pairs painted largest first (see module doc)."""
    height, width = size
    mask = np.full((height, width), unlabeled_value, np.uint8)
    if not shapes:
        return mask[..., None]
    merged = [rles[0] if len(rles) == 1 else mask_utils.merge(rles) for rles, _ in shapes]
    areas = mask_utils.area(merged)
    # Largest first, file order among equals: the last region covering a pixel wins.
    order = sorted(range(len(shapes)), key=lambda i: (-int(areas[i]), i))
    covered = mask_utils.decode([merged[i] for i in order]).astype(bool)  # [H, W, N]
    values = np.array([shapes[i][1] for i in order], np.uint8)
    last = covered.shape[-1] - 1 - np.argmax(covered[..., ::-1], axis=-1)
    painted = covered.any(axis=-1)
    mask[painted] = values[last[painted]]
    return mask[..., None]


def read(directory: str, label_map: LabelMap, unlabeled: str = "background"):
    """(records, shapes per record) of a folder; every check runs here, before training."""
    path = coco_folder.annotation_path(directory)
    categories = (
        label_map
        if unlabeled == "ignore"
        else LabelMap(label_map.names[1:], label_map.dataset_ids[1:])
    )
    records, _, _ = coco_folder.read_coco_folder(directory, categories)
    offset = 0 if unlabeled == "ignore" else 1
    shapes, without, mismatched = [], 0, []
    for record in records:
        size = record["annotated_size"]
        if record["decoded_size"] != size:
            mismatched.append(f"{record['path']} (image {record['decoded_size']}, JSON {size})")
        image_shapes = []
        for segmentation, index, ann_id in record["segments"]:
            rles = _check_segmentation(segmentation, size, f"{path}: annotation {ann_id}")
            if rles is None:
                without += 1
                continue
            image_shapes.append((rles, index + offset))
        shapes.append(image_shapes)
    if mismatched:
        raise ValueError(
            f"{path}: {len(mismatched)} images differ in size from their JSON width/height (after "
            f"their EXIF orientation), so their polygons do not fit: {', '.join(mismatched[:5])}"
        )
    if without:
        logging.warning("%s: %d annotations without a segmentation paint nothing", path, without)
    if records and not any(shapes):
        logging.warning(
            "%s: NO SEGMENTATIONS AT ALL in %d images: every pixel is %s, so a segmenter "
            "trained on it learns nothing of the classes and their evaluation scores nothing. "
            "Is this the right annotation file?",
            path,
            len(records),
            "ignored" if unlabeled == "ignore" else "background",
        )
    return records, shapes


def load(
    directory: str, label_map: LabelMap | None = None, unlabeled: str = "background"
) -> tuple[tf.data.Dataset, LabelMap]:
    """Decoded {"image", "mask", "image_id"} examples of a COCO folder, in image id order."""
    if label_map is None:
        label_map = label_map_for([directory], unlabeled)
    records, shapes = read(directory, label_map, unlabeled)
    unlabeled_value = IGNORE_LABEL if unlabeled == "ignore" else 0

    def rasterise(index):
        record = records[int(index)]
        return paint(shapes[int(index)], record["annotated_size"], unlabeled_value)

    def decode(path, orientation, index, image_id):
        image = image_decode.apply_orientation(image_decode.read_rgb(path), orientation)
        mask = tf.numpy_function(rasterise, [index], tf.uint8, stateful=False)
        mask = tf.ensure_shape(mask, [None, None, 1])
        return {"image": image, "mask": mask, "image_id": image_id}

    ds = tf.data.Dataset.from_tensor_slices(
        (
            dataset_paths.tf_paths([r["path"] for r in records]),
            np.asarray([r["orientation"] for r in records], np.int32),
            np.arange(len(records), dtype=np.int64),
            dataset_paths.tf_paths(
                [os.path.splitext(os.path.basename(r["path"]))[0] for r in records]
            ),
        )
    )
    ds = image_decode.map_skipping_undecodable(
        ds, decode, _path, directory, num_parallel_calls=tf.data.AUTOTUNE
    )
    return ds, label_map


def _path(path, *rest):
    del rest
    return path
