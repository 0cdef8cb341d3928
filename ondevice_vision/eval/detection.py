"""COCO mAP of a detector over the eval split (pycocotools; official annotation file if set),
with what a user reads a run by: per-class AP / AP50 / AR100, precision-recall curves at IoU 0.5,
a confusion matrix with a background row and column, and the worst images of the split."""

from __future__ import annotations

import os

import numpy as np
from absl import logging

from ondevice_vision.data.label_map import LabelMap
from ondevice_vision.eval import charts
from ondevice_vision.eval.coco_evaluator import CocoEvaluator
from ondevice_vision.eval.detection_confusion import DetectionConfusion
from ondevice_vision.eval.evaluator import Evaluator, format_table
from ondevice_vision.eval.worst_images import WorstImages
from ondevice_vision.tasks import detection as detection_task

PER_CLASS_SCORES = ("AP", "AP50", "AR100")


class DetectionEvaluator(Evaluator):
    """The 12 COCO numbers, `per_class` and `confusion_matrix`; `detections.json` (COCO results
    format) beside the metrics, and, when no official annotation file is configured, the
    `ground_truth.json` they were scored against (so any COCO tool can re-score them)."""

    def __init__(self, config, label_map: LabelMap):
        super().__init__(config, label_map)
        self.coco = CocoEvaluator(label_map, annotation_file=config.eval.get("annotation_file"))
        self.confusion = DetectionConfusion(
            label_map.num_classes, iou_threshold=0.5, score_threshold=config.eval.score_threshold
        )
        self.worst = WorstImages(config.eval.num_worst_images)

    def update(self, predictions: dict, labels: dict) -> None:
        self.coco.update(predictions, labels)

    def observe(self, images, predictions: dict, labels: dict) -> None:
        for i in range(len(images)):
            keep = labels["gt_classes"][i] >= 0
            n = int(predictions["num_detections"][i])
            counts = self.confusion.add_image(
                labels["gt_boxes"][i][keep],
                labels["gt_classes"][i][keep],
                labels["gt_is_crowd"][i][keep],
                predictions["detection_boxes"][i][:n],
                predictions["detection_classes"][i][:n],
                predictions["detection_scores"][i][:n],
            )
            caption = (
                f"image {int(labels['image_id'][i])}: {counts['missed']} of {counts['objects']} "
                f"missed, {counts['false_alarms']} false, {counts['confused']} confused"
            )
            self.worst.add(
                (counts["missed"], counts["false_alarms"] + counts["confused"]),
                caption,
                lambda i=i: detection_task.truth_and_predictions(
                    images[i],
                    labels["image_info"][i][:2],
                    {k: v[i] for k, v in predictions.items()},
                    {k: v[i] for k, v in labels.items()},
                    self.label_map,
                    self.config.eval.score_threshold,
                ),
            )

    def result(self) -> dict:
        metrics = self.coco.evaluate()
        per_class = self.coco.per_class()
        logging.info(
            "Per class (COCO AP over IoU 0.5:0.95, AR with 100 detections):\n%s", _table(per_class)
        )
        metrics["per_class"] = per_class
        metrics["confusion_matrix"] = self.confusion.to_json_dict(self.label_map.unique_names)
        return metrics

    def scalars(self, metrics: dict) -> dict:
        return {
            f"per_class/{score}/{name}": row[score]
            for name, row in metrics.get("per_class", {}).items()
            for score in PER_CLASS_SCORES
            if score in row
        }

    def figures(self) -> dict:
        threshold = self.confusion.score_threshold
        recall, curves = self.coco.pr_curves(0.5)
        figures = {
            "pr_curves": charts.pr_curves_picture(
                recall, curves, "Precision-recall at IoU 0.5 (legend: AP50)"
            ),
            "confusion_matrix": charts.confusion_matrix_picture(
                self.confusion.matrix,
                [*self.label_map.unique_names, "background"],
                f"Detections at IoU 0.5, score >= {threshold:g} (last column: missed; "
                "last row: false alarms)",
            ),
        }
        worst = self.worst.picture(cols=2)
        if worst is not None:
            figures["worst_images"] = worst
        return figures

    def write(self, directory: str) -> None:
        if self.config.eval.get("write_detections", True):
            self.coco.write_detections(os.path.join(directory, "detections.json"))
            if self.coco.annotation_file is None:
                self.coco.write_ground_truth(os.path.join(directory, "ground_truth.json"))


def _table(per_class: dict) -> str:
    rows = []
    for name, row in per_class.items():
        if row.get("no_ground_truth"):
            rows.append([name, row["images"], row["instances"], "no ground truth", "", ""])
        else:
            rows.append(
                [name, row["images"], row["instances"], row["AP50"], row["AP"], row["AR100"]]
            )
    valid = [r for r in per_class.values() if not r.get("no_ground_truth")]
    if valid:
        rows.append(
            [
                f"mean of {len(valid)}",
                "",
                sum(r["instances"] for r in valid),
                *(float(np.mean([r[k] for r in valid])) for k in ("AP50", "AP", "AR100")),
            ]
        )
    return format_table(["class", "images", "instances", "AP50", "AP", "AR100"], rows)
