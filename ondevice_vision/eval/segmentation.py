"""mIoU of a segmenter over the eval split, and the official Cityscapes evaluation / submission.

Our streaming confusion matrix gives mIoU, pixel accuracy and per-class IoU; with
`eval.official_cityscapes` the predictions are also written as labelId PNGs and scored by
cityscapesscripts' own evaluator (class / category IoU and iIoU), which the tests hold equal.
"""

from __future__ import annotations

import tempfile

import numpy as np
import tensorflow as tf
from absl import logging

from ondevice_vision import files
from ondevice_vision.data import cityscapes_folder
from ondevice_vision.data.label_map import IGNORE_LABEL, LabelMap
from ondevice_vision.eval import charts, cityscapes_official
from ondevice_vision.eval.evaluator import Evaluator, format_table
from ondevice_vision.eval.miou import StreamingConfusionMatrix
from ondevice_vision.eval.worst_images import WorstImages
from ondevice_vision.tasks import segmentation as segmentation_task


class SegmentationEvaluator(Evaluator):
    """Streaming confusion matrix -> mIoU, pixel accuracy, per-class IoU, the matrix itself
    (+ official Cityscapes), and the images with the lowest mIoU of their own."""

    def __init__(self, config, label_map: LabelMap):
        super().__init__(config, label_map)
        self.matrix = StreamingConfusionMatrix(label_map.num_classes, IGNORE_LABEL)
        self.official = bool(config.eval.get("official_cityscapes", False))
        self.predicted = set()
        self.worst = WorstImages(config.eval.num_worst_images)
        self.prediction_dir = None
        if self.official:
            self.prediction_dir = config.eval.get("prediction_dir") or tempfile.mkdtemp(
                prefix="cityscapes_pred_"
            )
            files.makedirs(self.prediction_dir)

    @staticmethod
    def write_submission(config, model, out_dir, zip_path=None, expected_shape=(1024, 2048)):
        """ondevice-eval --cityscapes_submission: the Cityscapes test-server PNGs."""
        return write_cityscapes_submission(config, model, out_dir, zip_path, expected_shape)

    def update(self, predictions: dict, labels: dict) -> None:
        maps = predictions["semantic_map"]
        for i in range(len(maps)):
            h, w = (int(v) for v in labels["image_size"][i])
            pred = maps[i][:h, :w]
            self.matrix.update(labels["mask"][i][:h, :w, 0], pred)
            if self.official:
                stem = labels["image_id"][i]
                stem = stem.decode() if isinstance(stem, bytes) else str(stem)
                cityscapes_official.write_prediction_png(pred, stem, self.prediction_dir)
                self.predicted.add(cityscapes_official.core_name(stem))

    def observe(self, images, predictions: dict, labels: dict) -> None:
        if self.worst.count <= 0:
            return
        for i in range(len(images)):
            h, w = (int(v) for v in labels["image_size"][i])
            pred = predictions["semantic_map"][i][:h, :w]
            truth = labels["mask"][i][:h, :w, 0]
            one = StreamingConfusionMatrix(self.label_map.num_classes, IGNORE_LABEL)
            one.update(truth, pred)
            miou = one.result()["mIoU"]
            if np.isnan(miou):  # nothing labelled in this image
                continue
            stem = labels["image_id"][i]
            stem = stem.decode() if isinstance(stem, bytes) else str(stem)
            self.worst.add(
                (1.0 - miou,),
                f"{stem}: mIoU {miou:.3f}",
                lambda i=i, h=h, w=w, pred=pred, truth=truth: (
                    segmentation_task.truth_and_prediction(
                        self.config, images[i][:h, :w], pred, truth, self.label_map
                    )
                ),
            )

    def result(self) -> dict:
        metrics = self.matrix.to_json_dict()
        metrics = {
            "mIoU": metrics["mIoU"],
            "pixel_accuracy": metrics["pixel_accuracy"],
            "per_class_iou": dict(
                zip(self.label_map.unique_names, metrics["per_class_iou"], strict=True)
            ),
            "confusion_matrix": {
                "rows": "ground truth",
                "columns": "prediction",
                "unit": "pixels",
                "labels": list(self.label_map.unique_names),
                "counts": metrics["confusion_matrix"],
            },
        }
        logging.info("Per class:\n%s", _table(self.matrix.matrix, metrics["per_class_iou"]))
        if self.official:
            metrics["official_cityscapes"] = self._official()
        return metrics

    def scalars(self, metrics: dict) -> dict:
        return {
            f"per_class/IoU/{name}": iou
            for name, iou in metrics.get("per_class_iou", {}).items()
            if iou is not None
        }

    def figures(self) -> dict:
        figures = {
            "confusion_matrix": charts.confusion_matrix_picture(
                self.matrix.matrix,
                list(self.label_map.unique_names),
                "Pixels by true class (rows, normalised) and predicted class",
                normalise_rows=True,
            )
        }
        worst = self.worst.picture(cols=2)
        if worst is not None:
            figures["worst_images"] = worst
        return figures

    def _official(self) -> dict:
        data = self.config.data
        if data.source != "cityscapes_folder":
            raise ValueError("eval.official_cityscapes needs data.source='cityscapes_folder'")
        listing = cityscapes_folder.list_files(data.root, data.eval_split)
        if listing.eval_pairs is None:
            raise FileNotFoundError(
                f"official Cityscapes evaluation needs every *_gtFine_labelIds.png under {data.root}"
            )
        # Only the images this run predicted (eval.max_images may have cut the split short).
        gt = [
            label
            for _, label in listing.eval_pairs
            if cityscapes_official.core_name(label) in self.predicted
        ]
        return cityscapes_official.run_official_evaluation(self.prediction_dir, gt)


def _table(matrix: np.ndarray, per_class_iou: dict) -> str:
    labelled = matrix.sum(axis=1)
    rows = [
        [name, int(pixels), "not in ground truth or predictions" if iou is None else iou]
        for (name, iou), pixels in zip(per_class_iou.items(), labelled, strict=True)
    ]
    return format_table(["class", "pixels", "IoU"], rows)


def write_cityscapes_submission(
    config, model, out_dir: str, zip_path: str | None = None, expected_shape=(1024, 2048)
) -> list[str]:
    """Predicts every image of the eval split (e.g. `--config.data.eval_split=test`) and writes
    the labelId PNGs of the Cityscapes test server (and optionally their zip archive)."""
    dataset, _ = segmentation_task.build_dataset(config, "eval", config.eval.batch_size)
    predict_fn = tf.function(
        lambda images: segmentation_task.predict(config, model, images)["semantic_map"],
        autograph=False,
    )

    def predictions():
        for images, labels in dataset:
            maps = predict_fn(images).numpy()
            for i in range(len(maps)):
                h, w = (int(v) for v in labels["image_size"][i])
                stem = labels["image_id"][i].numpy().decode()
                yield stem, np.asarray(maps[i][:h, :w])

    return cityscapes_official.write_submission(predictions(), out_dir, expected_shape, zip_path)
