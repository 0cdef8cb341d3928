"""COCO mAP of a detector over the eval split (pycocotools; official annotation file if set)."""

from __future__ import annotations

import os

from ondevice_vision.data.label_map import LabelMap
from ondevice_vision.eval.coco_evaluator import CocoEvaluator
from ondevice_vision.eval.evaluator import Evaluator


class DetectionEvaluator(Evaluator):
    """The 12 COCO numbers; `detections.json` (COCO results format) beside the metrics, and, when
    no official annotation file is configured, the `ground_truth.json` they were scored against
    (so any COCO tool can re-score them)."""

    def __init__(self, config, label_map: LabelMap):
        super().__init__(config, label_map)
        self.coco = CocoEvaluator(label_map, annotation_file=config.eval.get("annotation_file"))

    def update(self, predictions: dict, labels: dict) -> None:
        self.coco.update(predictions, labels)

    def result(self) -> dict:
        return self.coco.evaluate()

    def write(self, directory: str) -> None:
        if self.config.eval.get("write_detections", True):
            self.coco.write_detections(os.path.join(directory, "detections.json"))
            if self.coco.annotation_file is None:
                self.coco.write_ground_truth(os.path.join(directory, "ground_truth.json"))
