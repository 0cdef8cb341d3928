"""Detection data in a Pascal VOC folder: `Annotations/*.xml` and `JPEGImages/`.

- Which images: the stems listed in `ImageSets/Main/<image_set>.txt` when `image_set` is given,
  otherwise every `Annotations/*.xml`. The image is `JPEGImages/<filename from the XML>` (or
  `<stem>.jpg` when the XML has no filename).
- image_id: the running index (int64, from 0) of the image in sorted annotation-stem order. VOC has
  no numeric ids; the index is stable as long as the folder's file list is.
- Boxes: VOC `bndbox` is 1-based inclusive pixel coordinates, so pixel columns xmin..xmax cover
  the continuous span [xmin - 1, xmax]; that span is normalised by the image size and clipped to
  the image (clipped boxes are counted and logged); boxes with no area left are dropped, counted
  and logged. A coordinate that is not a finite number is an error naming the file.
- EXIF orientation: applied, unless the XML's <size> is the stored size and not the displayed one
  (the boxes were drawn on the stored pixels); such files are named in a warning.
- `difficult` objects become is_crowd=True, so training ignores them instead of calling them
  negatives, and COCO-style evaluation treats them as "ignore" regions.
- Classes: `class_names` (contiguous indices in the given order), or every name found in the XML,
  sorted. LabelMap dataset ids are the contiguous indices (VOC has no category ids).
- Errors: malformed XML or missing fields (ValueError naming the file), a class not in
  `class_names` (ValueError), a <filename> or image-set line that leads outside the folder
  (ValueError, see dataset_paths), missing image files (FileNotFoundError, the first few listed);
  corrupt image files are skipped, counted and logged (see image_decode).
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from ondevice_vision import files
from ondevice_vision.configs.common import MAX_IMAGE_PIXELS
from ondevice_vision.data import dataset_paths, image_decode
from ondevice_vision.data.label_map import LabelMap

_MAX_LISTED_MISSING = 5


def _stems(directory: str, image_set: str | None) -> list[str]:
    annotations = os.path.join(directory, "Annotations")
    if image_set:
        list_file = os.path.join(directory, "ImageSets", "Main", f"{image_set}.txt")
        if not os.path.isfile(list_file):
            raise FileNotFoundError(f"VOC image set file not found: {list_file}")
        # Per-class lists ("<stem> 1") share the folder; keep only the first column.
        lines = files.read_text(list_file).splitlines()
        stems = {line.split()[0] for line in lines if line.strip()}
        for stem in stems:
            dataset_paths.join_inside(annotations, stem, list_file)
    else:
        if not os.path.isdir(annotations):
            raise FileNotFoundError(f"VOC annotation folder not found: {annotations}")
        stems = {f[: -len(".xml")] for f in os.listdir(annotations) if f.endswith(".xml")}
    if not stems:
        raise ValueError(f"{directory}: no VOC annotations found")
    return sorted(stems)


def _text(node: ET.Element, tag: str, xml_path: str, default: str | None = None) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        if default is not None:
            return default
        raise ValueError(f"{xml_path}: missing <{tag}>")
    return child.text.strip()


def _number(node: ET.Element, tag: str, xml_path: str) -> float:
    text = _text(node, tag, xml_path)
    try:
        value = float(text)
    except ValueError as e:
        raise ValueError(f"{xml_path}: <{tag}> is not a number: {text!r}") from e
    if not math.isfinite(value):
        raise ValueError(f"{xml_path}: <{tag}> is not a finite number: {text!r}")
    return value


_FLAG_VALUES = {"0": False, "1": True, "false": False, "true": True}


def _flag(node: ET.Element, tag: str, xml_path: str) -> bool:
    """A 0/1 field (`<difficult>`); other text would silently change what is scored."""
    text = _text(node, tag, xml_path, "0")
    if text.lower() not in _FLAG_VALUES:
        raise ValueError(f"{xml_path}: <{tag}> must be 0, 1, true or false, got {text!r}")
    return _FLAG_VALUES[text.lower()]


def _size(node: ET.Element, tag: str, xml_path: str) -> float:
    if node.find(tag) is None or not (node.find(tag).text or "").strip():
        return 0.0
    value = _number(node, tag, xml_path)
    if value < 0:
        raise ValueError(f"{xml_path}: <{tag}> is negative: {value}")
    return value


def parse_voc_xml(xml_path: str) -> dict:
    """One annotation file -> {filename, width, height, objects: [(name, x0, y0, x1, y1, difficult)]}.

    Sizes may be 0 when the XML has none; coordinates are the file's 1-based pixel values.
    """
    if not os.path.isfile(xml_path):
        raise FileNotFoundError(f"VOC annotation file not found: {xml_path}")
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"{xml_path}: malformed XML: {e}") from e
    stem = os.path.splitext(os.path.basename(xml_path))[0]
    width = height = 0.0
    size = root.find("size")
    if size is not None:
        width = _size(size, "width", xml_path)
        height = _size(size, "height", xml_path)
    objects = []
    for obj in root.findall("object"):
        box = obj.find("bndbox")
        if box is None:
            raise ValueError(f"{xml_path}: <object> without <bndbox>")
        objects.append(
            (
                _text(obj, "name", xml_path),
                _number(box, "xmin", xml_path),
                _number(box, "ymin", xml_path),
                _number(box, "xmax", xml_path),
                _number(box, "ymax", xml_path),
                _flag(obj, "difficult", xml_path),
            )
        )
    return {
        "filename": _text(root, "filename", xml_path, stem + ".jpg"),
        "width": width,
        "height": height,
        "objects": objects,
    }


def collect_class_names(directories: Sequence[str], image_sets: Sequence[str | None]) -> list[str]:
    """Every object name in the folders' annotations, sorted."""
    names = set()
    for directory, image_set in zip(directories, image_sets, strict=True):
        for stem in _stems(directory, image_set):
            xml_path = os.path.join(directory, "Annotations", stem + ".xml")
            names.update(o[0] for o in parse_voc_xml(xml_path)["objects"])
    return sorted(names)


def read_voc_folder(
    directory: str,
    class_names: Sequence[str] | None = None,
    image_set: str | None = None,
    max_pixels: int = MAX_IMAGE_PIXELS,
):
    """Parses and validates a VOC folder; returns (per-image records, LabelMap, counts dict)."""
    stems = _stems(directory, image_set)
    parsed = [parse_voc_xml(os.path.join(directory, "Annotations", s + ".xml")) for s in stems]
    if class_names is None:
        class_names = sorted({o[0] for p in parsed for o in p["objects"]})
    label_map = LabelMap.contiguous(class_names)
    index_of = {n: i for i, n in enumerate(label_map.names)}

    paths, missing = [], []
    for stem, p in zip(stems, parsed, strict=True):
        for o in p["objects"]:
            if o[0] not in index_of:
                raise ValueError(
                    f"{os.path.join(directory, 'Annotations', stem + '.xml')}: unknown class "
                    f"{o[0]!r} (known: {', '.join(label_map.names)})"
                )
        image_path = dataset_paths.join_inside(
            os.path.join(directory, "JPEGImages"),
            p["filename"],
            os.path.join(directory, "Annotations", stem + ".xml"),
        )
        if not os.path.exists(image_path):  # a FIFO is found, then named and skipped
            missing.append(image_path)
        paths.append(image_path)
    if missing:
        listed = ", ".join(missing[:_MAX_LISTED_MISSING])
        more = (
            f" and {len(missing) - _MAX_LISTED_MISSING} more"
            if len(missing) > _MAX_LISTED_MISSING
            else ""
        )
        raise FileNotFoundError(
            f"{directory}: {len(missing)} image files not found: {listed}{more}"
        )

    checks = image_decode.check_image_files(paths, max_pixels=max_pixels)
    counts = {
        "skipped_images": image_decode.log_bad_images(checks, directory),
        "dropped_boxes": 0,
        "clipped_boxes": 0,
    }
    records, unapplied = [], []
    for image_id, (p, check) in enumerate(zip(parsed, checks, strict=True)):
        if check.problem is not None:
            continue
        orientation, problem = image_decode.orientation_for(check, (p["width"], p["height"]))
        if problem:
            unapplied.append((check.path, problem))
        decoded_size = check.displayed_size if orientation != 1 else (check.width, check.height)
        width = p["width"] if p["width"] > 0 else float(decoded_size[0])
        height = p["height"] if p["height"] > 0 else float(decoded_size[1])
        raw = np.array([o[1:5] for o in p["objects"]], np.float64).reshape(-1, 4)
        x0, y0, x1, y1 = raw.T
        unclipped = np.stack([(y0 - 1) / height, (x0 - 1) / width, y1 / height, x1 / width], 1)
        boxes = np.clip(unclipped, 0.0, 1.0)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        counts["dropped_boxes"] += int((~keep).sum())
        counts["clipped_boxes"] += int((keep & np.any(boxes != unclipped, axis=1)).sum())
        records.append(
            {
                "path": check.path,
                "image_id": image_id,
                "boxes": boxes[keep].astype(np.float32).reshape(-1, 4),
                "classes": np.array([index_of[o[0]] for o in p["objects"]], np.int32).reshape(-1)[
                    keep
                ],
                "is_crowd": np.array([o[5] for o in p["objects"]], bool).reshape(-1)[keep],
                "orientation": orientation,
            }
        )
    image_decode.log_unapplied_orientations(unapplied, directory)
    if counts["dropped_boxes"] or counts["clipped_boxes"]:
        logging.warning(
            "%s: dropped %d boxes with no area inside their image; clipped %d boxes to their image",
            directory,
            counts["dropped_boxes"],
            counts["clipped_boxes"],
        )
    if not records:
        raise ValueError(f"{directory}: no usable images")
    logging.info("%s: %d images, %d classes", directory, len(records), label_map.num_classes)
    if not any(len(r["boxes"]) for r in records):
        logging.warning(
            "%s: NO BOXES AT ALL in %d images: a detector trained on it learns only background, "
            "and its evaluation scores nothing (every metric -1)",
            directory,
            len(records),
        )
    return records, label_map, counts


def load_voc_folder(
    directory: str,
    class_names: Sequence[str] | None = None,
    image_set: str | None = None,
    encoded: bool = False,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> tuple[tf.data.Dataset, LabelMap]:
    """Decoded detection examples from a VOC folder, in image_id order (`encoded`: the files'
    bytes as "encoded_image" instead of "image")."""
    records, label_map, _ = read_voc_folder(directory, class_names, image_set, max_pixels)
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
