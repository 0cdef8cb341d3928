"""COCO box mAP: a thin wrapper around pycocotools COCOeval.

Ground truth comes either from an official annotation file (the numbers then match the COCO
leaderboard convention, including the segmentation-based `area` of each object that decides
small/medium/large), or is accumulated from the dataset being evaluated; in that case an object's
area is its box area, so APs/APm/APl can differ slightly from an official-file evaluation.

Only the images that received detections or ground truth in this run are scored, so evaluating a
subset of an official annotation file (e.g. a few hundred val images during training) is meaningful.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ondevice_vision import files
from ondevice_vision.data.label_map import LabelMap

# The order of COCOeval.stats after summarize().
METRIC_NAMES = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "ARmax1",
    "ARmax10",
    "ARmax100",
    "ARs",
    "ARm",
    "ARl",
)


class CocoEvaluator:
    def __init__(self, label_map: LabelMap, annotation_file: str | None = None):
        self.label_map = label_map
        self.annotation_file = annotation_file
        self._category_ids = np.asarray(label_map.dataset_ids, dtype=np.int64)
        self._official_gt = None
        if annotation_file is not None:
            if not os.path.isfile(annotation_file):
                raise FileNotFoundError(f"COCO annotation file not found: {annotation_file}")
            with contextlib.redirect_stdout(io.StringIO()):
                self._official_gt = COCO(annotation_file)
            _renumber_zero_annotation_ids(self._official_gt)
            missing = sorted(set(label_map.dataset_ids) - set(self._official_gt.getCatIds()))
            if missing:
                raise ValueError(
                    f"{annotation_file}: label map category ids {missing} are not categories of "
                    "this annotation file"
                )
        self.reset()

    def reset(self) -> None:
        """Forgets everything added so far (the official annotation file stays loaded)."""
        self._images: dict[int, tuple[int, int]] = {}
        self._images_with_gt: set[int] = set()
        self._images_with_detections: set[int] = set()
        self._gt_annotations: list[dict] = []
        self._detections: list[dict] = []
        self.coco_eval: COCOeval | None = None

    def add_ground_truth(
        self, image_id, height, width, boxes_norm_yxyx, classes_contiguous, is_crowd=None
    ) -> None:
        """Records one image's ground truth (also for images without objects: pass 0 boxes)."""
        if self._official_gt is not None:
            raise ValueError(
                f"ground truth comes from {self.annotation_file}; add_ground_truth is only for "
                "evaluators built without an annotation file"
            )
        image_id = self._check_image(image_id, height, width, self._images_with_gt, "ground truth")
        boxes, classes = _check_boxes_and_classes(boxes_norm_yxyx, classes_contiguous, image_id)
        if is_crowd is None:
            is_crowd = np.zeros(len(boxes), dtype=bool)
        is_crowd = np.asarray(is_crowd).reshape(-1).astype(bool)
        if len(is_crowd) != len(boxes):
            raise ValueError(
                f"image {image_id}: {len(boxes)} boxes but {len(is_crowd)} crowd flags"
            )
        category_ids = self._dataset_ids(classes, image_id)
        self._images[image_id] = (int(height), int(width))
        self._images_with_gt.add(image_id)
        for box, category_id, crowd in zip(
            _to_pixel_xywh(boxes, height, width), category_ids, is_crowd, strict=True
        ):
            self._gt_annotations.append(
                {
                    # pycocotools treats annotation id 0 as "unmatched": ids start at 1.
                    "id": len(self._gt_annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(category_id),
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": int(crowd),
                }
            )

    def add_detections(
        self, image_id, height, width, boxes_norm_yxyx, scores, classes_contiguous
    ) -> None:
        """Records one image's detections, converted to COCO results ([x, y, w, h] pixels)."""
        image_id = self._check_image(
            image_id, height, width, self._images_with_detections, "detections"
        )
        boxes, classes = _check_boxes_and_classes(boxes_norm_yxyx, classes_contiguous, image_id)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(scores) != len(boxes):
            raise ValueError(f"image {image_id}: {len(boxes)} boxes but {len(scores)} scores")
        category_ids = self._dataset_ids(classes, image_id)
        self._images[image_id] = (int(height), int(width))
        self._images_with_detections.add(image_id)
        for box, category_id, score in zip(
            _to_pixel_xywh(boxes, height, width), category_ids, scores, strict=True
        ):
            self._detections.append(
                {
                    "image_id": image_id,
                    "category_id": int(category_id),
                    "bbox": box,
                    "score": float(score),
                }
            )

    def update(self, batch_outputs: dict, batch_labels: dict) -> None:
        """Adds a batch (NumPy or eager tensors).

        batch_outputs: detection_boxes [B, N, 4] normalised yxyx, detection_scores [B, N],
          detection_classes [B, N] contiguous, num_detections [B].
        batch_labels: image_id [B], image_info [B, 2] original (height, width); without an
          annotation file also gt_boxes [B, M, 4], gt_classes [B, M] (-1 = padding),
          gt_is_crowd [B, M].
        """
        outputs = {k: np.asarray(v) for k, v in batch_outputs.items()}
        labels = {k: np.asarray(v) for k, v in batch_labels.items()}
        for key in ("detection_boxes", "detection_scores", "detection_classes", "num_detections"):
            if key not in outputs:
                raise ValueError(f"CocoEvaluator.update: batch_outputs lacks '{key}'")
        needed = ["image_id", "image_info"]
        if self._official_gt is None:
            needed += ["gt_boxes", "gt_classes", "gt_is_crowd"]
        for key in needed:
            if key not in labels:
                raise ValueError(f"CocoEvaluator.update: batch_labels lacks '{key}'")
        image_ids = labels["image_id"].reshape(-1)
        for b, image_id in enumerate(image_ids):
            height, width = (int(v) for v in labels["image_info"][b][:2])
            if self._official_gt is None:
                keep = labels["gt_classes"][b] >= 0
                self.add_ground_truth(
                    image_id,
                    height,
                    width,
                    labels["gt_boxes"][b][keep],
                    labels["gt_classes"][b][keep],
                    labels["gt_is_crowd"][b][keep],
                )
            n = int(outputs["num_detections"][b])
            self.add_detections(
                image_id,
                height,
                width,
                outputs["detection_boxes"][b][:n],
                outputs["detection_scores"][b][:n],
                outputs["detection_classes"][b][:n],
            )

    def evaluate(self) -> dict:
        """The 12 COCO numbers as floats (-1.0 where pycocotools finds no ground truth)."""
        image_ids = sorted(self._images)
        if not image_ids:
            raise ValueError("CocoEvaluator.evaluate: no images were added")
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = self._ground_truth_coco()
            known = set(coco_gt.getImgIds())
            unknown = [i for i in image_ids if i not in known]
            if unknown:
                raise ValueError(
                    f"{self.annotation_file}: image ids {unknown[:10]} "
                    f"({len(unknown)} in all) are not in this annotation file"
                )
            coco_dt = self._detections_coco(coco_gt)
            coco_eval = COCOeval(coco_gt, coco_dt, iouType="bbox")
            coco_eval.params.imgIds = image_ids
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        self.coco_eval = coco_eval
        return {
            name: float(value) for name, value in zip(METRIC_NAMES, coco_eval.stats, strict=True)
        }

    def per_class(self) -> dict:
        """Per class of the label map, from the last `evaluate()`'s per-category arrays:
        {name: {"images", "instances", "AP", "AP50", "AR100"}}; a class without ground truth in
        the scored images has `"no_ground_truth": True` and no scores (COCOeval marks it -1)."""
        coco_eval = self._evaluated()
        precision = coco_eval.eval["precision"]  # [IoU, recall, category, area, max dets]
        recall = coco_eval.eval["recall"]  # [IoU, category, area, max dets]
        params = coco_eval.params
        area, max100 = params.areaRngLbl.index("all"), list(params.maxDets).index(100)
        iou50 = int(np.argmin(np.abs(params.iouThrs - 0.5)))
        images, instances = self._ground_truth_counts(coco_eval)
        result = {}
        for name, category_id in zip(
            self.label_map.unique_names, self.label_map.dataset_ids, strict=True
        ):
            k = list(params.catIds).index(int(category_id))
            row = {"images": images.get(category_id, 0), "instances": instances.get(category_id, 0)}
            p = precision[:, :, k, area, max100]
            if not (p > -1).any():
                row["no_ground_truth"] = True
            else:
                row["AP"] = float(np.mean(p[p > -1]))
                p50 = p[iou50]
                row["AP50"] = float(np.mean(p50[p50 > -1])) if (p50 > -1).any() else -1.0
                r = recall[:, k, area, max100]
                row["AR100"] = float(np.mean(r[r > -1])) if (r > -1).any() else -1.0
            result[name] = row
        return result

    def pr_curves(self, iou: float = 0.5) -> tuple[np.ndarray, dict]:
        """(recall thresholds [101], {name: precision [101]}) at one IoU threshold over all areas
        and 100 detections, as COCOeval interpolates them; classes without ground truth left out."""
        coco_eval = self._evaluated()
        params = coco_eval.params
        t = int(np.argmin(np.abs(params.iouThrs - iou)))
        area, max100 = params.areaRngLbl.index("all"), list(params.maxDets).index(100)
        curves = {}
        for name, category_id in zip(
            self.label_map.unique_names, self.label_map.dataset_ids, strict=True
        ):
            k = list(params.catIds).index(int(category_id))
            p = coco_eval.eval["precision"][t, :, k, area, max100]
            if (p > -1).any():
                curves[name] = np.where(p > -1, p, 0.0)
        return np.asarray(params.recThrs), curves

    def _evaluated(self) -> COCOeval:
        if self.coco_eval is None:
            raise ValueError("CocoEvaluator: call evaluate() first")
        return self.coco_eval

    def _ground_truth_counts(self, coco_eval: COCOeval) -> tuple[dict, dict]:
        """Images holding each category, and its non-crowd instances, over the scored images."""
        images: dict[int, int] = {}
        instances: dict[int, int] = {}
        coco_gt = coco_eval.cocoGt
        for image_id in coco_eval.params.imgIds:
            seen = set()
            for ann in coco_gt.imgToAnns.get(image_id, []):
                if ann.get("iscrowd", 0):
                    continue
                category = int(ann["category_id"])
                instances[category] = instances.get(category, 0) + 1
                seen.add(category)
            for category in seen:
                images[category] = images.get(category, 0) + 1
        return images, instances

    def write_detections(self, path: str) -> str:
        """COCO result JSON (a list of {image_id, category_id, bbox, score})."""
        files.write_json(self._detections, path)
        return path

    def write_ground_truth(self, path: str) -> str:
        """The accumulated ground truth as a COCO annotation JSON file."""
        if self._official_gt is not None:
            raise ValueError(
                f"ground truth comes from {self.annotation_file}; there is none to write"
            )
        files.write_json(self._ground_truth_dataset(), path)
        return path

    def _check_image(self, image_id, height, width, already_added: set, what: str) -> int:
        """Validates before anything is recorded, so a rejected call leaves no trace."""
        image_id = int(np.asarray(image_id).reshape(()))
        size = (int(height), int(width))
        if size[0] <= 0 or size[1] <= 0:
            raise ValueError(f"image {image_id}: invalid size {size}")
        previous = self._images.get(image_id, size)
        if previous != size:
            raise ValueError(f"image {image_id}: size {size} disagrees with earlier {previous}")
        if image_id in already_added:
            raise ValueError(f"image id {image_id} already has {what} (dataset repeated?)")
        return image_id

    def _dataset_ids(self, classes: np.ndarray, image_id: int) -> np.ndarray:
        if len(classes) and (classes.min() < 0 or classes.max() >= len(self._category_ids)):
            raise ValueError(
                f"image {image_id}: class indices must be in [0, {len(self._category_ids)}), "
                f"got range [{classes.min()}, {classes.max()}]"
            )
        return self._category_ids[classes]

    def _ground_truth_dataset(self) -> dict:
        return {
            "info": {"description": "ground truth accumulated by ondevice_vision CocoEvaluator"},
            "images": [
                {"id": image_id, "height": h, "width": w}
                for image_id, (h, w) in sorted(self._images.items())
            ],
            "categories": [
                {"id": int(i), "name": name}
                for i, name in zip(self.label_map.dataset_ids, self.label_map.names, strict=True)
            ],
            "annotations": self._gt_annotations,
        }

    def _ground_truth_coco(self) -> COCO:
        if self._official_gt is not None:
            return self._official_gt
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(self._ground_truth_dataset())
        coco_gt.createIndex()
        return coco_gt

    def _detections_coco(self, coco_gt: COCO) -> COCO:
        if self._detections:
            # loadRes adds fields to the dicts it is given; keep ours as written to JSON.
            return coco_gt.loadRes(copy.deepcopy(self._detections))
        # loadRes cannot take an empty list; build the empty result set it would have built.
        coco_dt = COCO()
        coco_dt.dataset = {
            "images": list(coco_gt.dataset["images"]),
            "categories": copy.deepcopy(coco_gt.dataset["categories"]),
            "annotations": [],
        }
        coco_dt.createIndex()
        return coco_dt


def _renumber_zero_annotation_ids(coco: COCO) -> None:
    """pycocotools records a match as the matched annotation's id, so a ground truth with id 0
    counts as never matched (perfect detections of it score as false positives). Some labelling
    tools number annotations from 0: such files get ids 1..N (the ids are used nowhere else)."""
    annotations = coco.dataset.get("annotations", [])
    if not any(int(ann["id"]) <= 0 for ann in annotations):
        return
    for number, ann in enumerate(annotations, start=1):
        ann["id"] = number
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()


def _check_boxes_and_classes(boxes, classes, image_id):
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"image {image_id}: boxes must be [N, 4], got shape {boxes.shape}")
    classes = np.asarray(classes).reshape(-1).astype(np.int64)
    if len(classes) != len(boxes):
        raise ValueError(f"image {image_id}: {len(boxes)} boxes but {len(classes)} classes")
    return boxes, classes


def _to_pixel_xywh(boxes_norm_yxyx: np.ndarray, height: int, width: int) -> list[list[float]]:
    ymin, xmin, ymax, xmax = boxes_norm_yxyx.T
    xywh = np.stack(
        [xmin * width, ymin * height, (xmax - xmin) * width, (ymax - ymin) * height], axis=1
    )
    return xywh.tolist()
