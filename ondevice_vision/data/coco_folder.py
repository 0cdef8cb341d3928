"""Detection data in a folder holding a COCO-format annotation file and its images.

Layout: `<dir>/annotations.json`; each image's `file_name` is looked up in `<dir>/` and then in
`<dir>/images/` (it may contain sub-folders). The annotation file may have another name: the one
named by the config (`data.train_annotations` / `data.eval_annotations`), else `annotations.json`,
else `_annotations.coco.json` (as Roboflow exports name it), else the only `*.json` of the folder;
with several and none chosen, the error names them.

- Boxes: COCO [x, y, width, height] in pixels -> normalised [ymin, xmin, ymax, xmax], normalised by
  the image's `width`/`height` in the JSON (by the file's own size when the JSON has none) and
  clipped to the image. Boxes with zero or negative size, or nothing left inside the image, are
  dropped, counted and logged.
- Classes: category ids -> contiguous indices in increasing id order; the LabelMap keeps the ids.
- `iscrowd` -> is_crowd. Images without annotations are kept, with zero boxes.
- Errors, naming the annotation file: malformed JSON or missing keys (ValueError), an annotation
  with an unknown category or image id or a non-finite bbox value (ValueError), two images with
  one id (ValueError naming both file names), a `file_name` that leads outside the folder
  (ValueError, see dataset_paths), image files that do not exist (FileNotFoundError, all files
  are checked before anything is read, the first few are listed).
- Corrupt or undecodable image files are skipped, counted and logged (see image_decode).
- EXIF orientation: applied, unless the JSON's width/height are the stored size and not the
  displayed one (the boxes were drawn on the stored pixels); such files are named in a warning.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from ondevice_vision import files
from ondevice_vision.configs.common import MAX_IMAGE_PIXELS
from ondevice_vision.data import dataset_paths, image_decode
from ondevice_vision.data.label_map import LabelMap

ANNOTATIONS_FILE = "annotations.json"
# Also accepted, in this order after ANNOTATIONS_FILE: the name labelling tools' exports use.
ANNOTATIONS_FILES = (ANNOTATIONS_FILE, "_annotations.coco.json")
_MAX_LISTED_MISSING = 5


@dataclasses.dataclass
class CocoFolderStats:
    images: int = 0
    skipped_images: int = 0
    boxes: int = 0
    dropped_empty_boxes: int = 0
    dropped_outside_boxes: int = 0
    clipped_boxes: int = 0


def load_annotations(path: str) -> dict:
    """A COCO annotation file's JSON, with `images` and `categories` lists checked."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"COCO annotation file not found: {path}")
    data = files.read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object at the top level")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{path}: missing or non-list '{key}'")
    if not isinstance(data.get("annotations", []), list):
        raise ValueError(f"{path}: 'annotations' is not a list")
    return data


def annotation_path(directory: str, name: str | None = None) -> str:
    """The annotation file of a folder: `name` (relative to the folder, or absolute) when given,
    else the first of ANNOTATIONS_FILES that exists, else the folder's only `*.json` file."""
    if name:
        return os.path.join(directory, name)
    default = os.path.join(directory, ANNOTATIONS_FILE)
    for known in ANNOTATIONS_FILES:
        if os.path.isfile(os.path.join(directory, known)):
            return os.path.join(directory, known)
    if not os.path.isdir(directory):
        return default
    found = sorted(f for f in os.listdir(directory) if f.lower().endswith(".json"))
    found = [f for f in found if os.path.isfile(os.path.join(directory, f))]
    if len(found) == 1:
        logging.info("%s: reading the annotations of %s", directory, found[0])
        return os.path.join(directory, found[0])
    if found:
        raise FileNotFoundError(
            f"{default} not found; the folder holds {len(found)} JSON files "
            f"({', '.join(found[:5])}): name the annotation file with "
            "data.train_annotations / data.eval_annotations"
        )
    return default


def read_categories(directory: str, annotations: str | None = None) -> list[tuple[int, str]]:
    """(category id, name) pairs of a folder's annotation file, sorted by id."""
    path = annotation_path(directory, annotations)
    data = load_annotations(path)
    try:
        categories = sorted((int(c["id"]), str(c["name"])) for c in data["categories"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: bad 'categories' entry: {e}") from e
    ids = [c for c, _ in categories]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate category ids in 'categories'")
    return categories


def label_map_for(directories: Sequence[str], annotations: Sequence[str | None] = ()) -> LabelMap:
    """One LabelMap covering the categories of several folders (train and eval must agree);
    `annotations`: each folder's annotation file name (see annotation_path)."""
    by_id: dict[int, str] = {}
    names = list(annotations) + [None] * (len(directories) - len(annotations))
    for d, file_name in zip(directories, names, strict=True):
        for cid, name in read_categories(d, file_name):
            if by_id.setdefault(cid, name) != name:
                raise ValueError(
                    f"{annotation_path(d, file_name)}: category id {cid} is named {name!r} "
                    f"here but {by_id[cid]!r} in another folder"
                )
    ids = sorted(by_id)
    return LabelMap(tuple(by_id[i] for i in ids), tuple(ids))


def resolve_image(directory: str, file_name: str, source: str) -> str | None:
    for candidate in (
        dataset_paths.join_inside(directory, file_name, source),
        dataset_paths.join_inside(os.path.join(directory, "images"), file_name, source),
    ):
        if os.path.exists(candidate):  # a FIFO is found here, then named and skipped
            return candidate
    return None


def _normalised_boxes(xywh: np.ndarray, width: float, height: float):
    """COCO pixel [x, y, w, h] -> (normalised clipped yxyx, keep mask, stats counts)."""
    x, y, w, h = xywh.T
    empty = ~((w > 0) & (h > 0))
    yxyx = np.stack([y / height, x / width, (y + h) / height, (x + w) / width], axis=1)
    clipped = np.clip(yxyx, 0.0, 1.0)
    was_clipped = np.any(clipped != yxyx, axis=1) & ~empty
    outside = ~empty & ~((clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1]))
    keep = ~empty & ~outside
    return (
        clipped.astype(np.float32),
        keep,
        int(empty.sum()),
        int(outside.sum()),
        int((was_clipped & keep).sum()),
    )


_CROWD_TEXT = {"0": False, "1": True, "false": False, "true": True}


def _crowd_flag(ann: dict, path: str) -> bool:
    """`iscrowd` as 0/1 or true/false; other values (free text, 2) would silently turn a box into
    one that evaluation ignores, so they are an error naming the annotation."""
    value = ann.get("iscrowd")
    if value is None:  # absent, or null as some labelling tools write it: not a crowd
        return False
    if isinstance(value, str) and value.strip().lower() in _CROWD_TEXT:
        return _CROWD_TEXT[value.strip().lower()]
    if isinstance(value, bool | int | float) and value in (0, 1):
        return bool(value)
    raise ValueError(
        f"{path}: annotation {ann.get('id', '?')}: 'iscrowd' must be 0, 1, true or false, "
        f"got {value!r}"
    )


def read_coco_folder(
    directory: str,
    label_map: LabelMap | None = None,
    annotations: str | None = None,
    max_pixels: int = MAX_IMAGE_PIXELS,
):
    """Parses and validates a folder; returns (per-image records, LabelMap, CocoFolderStats).

    Records are sorted by image id: dicts with path, image_id, boxes, classes, is_crowd,
    orientation, segments ((segmentation, class index, annotation id) of every annotation),
    annotated_size and decoded_size ((height, width) of the JSON and of the upright image).
    `annotations`: the annotation file's name (see annotation_path).
    """
    path = annotation_path(directory, annotations)
    data = load_annotations(path)
    if label_map is None:
        label_map = label_map_for([directory], [annotations])
    index_of = label_map.index_of_dataset_id()

    images = {}
    for im in data["images"]:
        try:
            image_id = int(im["id"])
        except KeyError as e:
            raise ValueError(f"{path}: an 'images' entry has no {e.args[0]!r}") from e
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: bad 'images' entry: {e}") from e
        if image_id in images:
            # Merging them would attach one image's boxes to the other.
            raise ValueError(
                f"{path}: image id {image_id} is used by both "
                f"{images[image_id].get('file_name')!r} and {im.get('file_name')!r}"
            )
        images[image_id] = im

    per_image = collections.defaultdict(list)
    for ann in data.get("annotations", []):
        try:
            image_id, category_id = int(ann["image_id"]), int(ann["category_id"])
            bbox = [float(v) for v in ann["bbox"]]
            crowd = _crowd_flag(ann, path)
        except KeyError as e:
            raise ValueError(
                f"{path}: annotation {ann.get('id', '?')}: missing key {e.args[0]!r}"
            ) from e
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: bad annotation {ann.get('id', '?')}: {e}") from e
        if len(bbox) != 4:
            raise ValueError(f"{path}: annotation {ann.get('id', '?')} bbox has {len(bbox)} values")
        if not np.all(np.isfinite(bbox)):
            raise ValueError(f"{path}: annotation {ann.get('id', '?')} bbox {bbox} is not finite")
        if category_id not in index_of:
            raise ValueError(
                f"{path}: annotation {ann.get('id', '?')} has unknown category id {category_id}"
            )
        if image_id not in images:
            raise ValueError(
                f"{path}: annotation {ann.get('id', '?')} has unknown image id {image_id}"
            )
        per_image[image_id].append(
            (bbox, index_of[category_id], crowd, ann.get("segmentation"), ann.get("id", "?"))
        )

    image_ids = sorted(images)
    paths, missing = [], []
    for image_id in image_ids:
        file_name = images[image_id].get("file_name")
        if not isinstance(file_name, str) or not file_name:
            raise ValueError(f"{path}: image {image_id} has no 'file_name'")
        resolved = resolve_image(directory, file_name, f"{path}: image {image_id}")
        if resolved is None:
            missing.append(os.path.join(directory, file_name))
        paths.append(resolved)
    if missing:
        listed = ", ".join(missing[:_MAX_LISTED_MISSING])
        more = (
            f" and {len(missing) - _MAX_LISTED_MISSING} more"
            if len(missing) > _MAX_LISTED_MISSING
            else ""
        )
        raise FileNotFoundError(
            f"{path}: {len(missing)} referenced image files not found (looked in the folder and "
            f"its images/ sub-folder): {listed}{more}"
        )

    checks = image_decode.check_image_files(paths, max_pixels=max_pixels)
    stats = CocoFolderStats(skipped_images=image_decode.log_bad_images(checks, path))
    records, size_mismatches, unapplied = [], [], []
    for image_id, check in zip(image_ids, checks, strict=True):
        if check.problem is not None:
            continue
        info = images[image_id]
        width, height = float(info.get("width") or 0), float(info.get("height") or 0)
        orientation, problem = image_decode.orientation_for(check, (width, height))
        if problem:
            unapplied.append((check.path, problem))
        decoded_size = check.displayed_size if orientation != 1 else (check.width, check.height)
        if width <= 0 or height <= 0:
            width, height = (float(v) for v in decoded_size)
        elif (int(width), int(height)) != decoded_size:
            size_mismatches.append(check.path)
        anns = per_image.get(image_id, [])
        xywh = np.array([a[0] for a in anns], np.float64).reshape(-1, 4)
        boxes, keep, n_empty, n_outside, n_clipped = _normalised_boxes(xywh, width, height)
        stats.dropped_empty_boxes += n_empty
        stats.dropped_outside_boxes += n_outside
        stats.clipped_boxes += n_clipped
        records.append(
            {
                "path": check.path,
                "image_id": image_id,
                "boxes": boxes[keep].reshape(-1, 4),
                "classes": np.array([a[1] for a in anns], np.int32).reshape(-1)[keep],
                "is_crowd": np.array([a[2] for a in anns], bool).reshape(-1)[keep],
                "orientation": orientation,
                # For segmentation sources (coco_segmentation.py): every annotation's shape,
                # class index and id, and the size its coordinates refer to.
                "segments": [(a[3], a[1], a[4]) for a in anns],
                "annotated_size": (int(height), int(width)),
                "decoded_size": (int(decoded_size[1]), int(decoded_size[0])),
            }
        )
    image_decode.log_unapplied_orientations(unapplied, path)
    stats.images = len(records)
    stats.boxes = sum(len(r["boxes"]) for r in records)
    if size_mismatches:
        listed = ", ".join(size_mismatches[:_MAX_LISTED_MISSING])
        more = len(size_mismatches) - _MAX_LISTED_MISSING
        logging.warning(
            "%s: %d images differ in size from their JSON width/height (after their EXIF "
            "orientation); boxes are normalised by the JSON size: %s%s",
            path,
            len(size_mismatches),
            listed,
            f" and {more} more" if more > 0 else "",
        )
    if stats.dropped_empty_boxes or stats.dropped_outside_boxes or stats.clipped_boxes:
        logging.warning(
            "%s: dropped %d boxes with zero or negative size and %d boxes outside their image; "
            "clipped %d boxes to their image",
            path,
            stats.dropped_empty_boxes,
            stats.dropped_outside_boxes,
            stats.clipped_boxes,
        )
    logging.info("%s: %d images, %d boxes", path, stats.images, stats.boxes)
    if records and not stats.boxes:
        logging.warning(
            "%s: NO BOXES AT ALL in %d images: a detector trained on it learns only background, "
            "and its evaluation scores nothing (every metric -1). Is this the right annotation "
            "file?",
            path,
            stats.images,
        )
    if not records:
        raise ValueError(f"{path}: no usable images")
    return records, label_map, stats


def load_coco_folder(
    directory: str,
    label_map: LabelMap | None = None,
    encoded: bool = False,
    annotations: str | None = None,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> tuple[tf.data.Dataset, LabelMap]:
    """Decoded detection examples from a COCO-format folder, in increasing image id order.

    `label_map`: the LabelMap to index categories with (default: the folder's own categories);
    pass `label_map_for([train_dir, eval_dir])` so both splits share one. `encoded`: yield
    the files' bytes as "encoded_image" instead of "image" (see image_files_dataset).
    """
    records, label_map, _ = read_coco_folder(directory, label_map, annotations, max_pixels)
    ds = image_decode.image_files_dataset(
        [r["path"] for r in records],
        {
            "image_id": np.array([r["image_id"] for r in records], np.int64),
            "boxes": [r["boxes"] for r in records],
            "classes": [r["classes"] for r in records],
            "is_crowd": [r["is_crowd"] for r in records],
        },
        orientations=[r["orientation"] for r in records],
        encoded=encoded,
    )
    return ds, label_map
