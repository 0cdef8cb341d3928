"""mIoU of a segmenter over the eval split, and the official Cityscapes evaluation / submission.

Our streaming confusion matrix gives mIoU, pixel accuracy and per-class IoU; with
`eval.official_cityscapes` the predictions are also written as labelId PNGs and scored by
cityscapesscripts' own evaluator (class / category IoU and iIoU), which the tests hold equal.
"""

from __future__ import annotations

import tempfile

import numpy as np
import tensorflow as tf

from ondevice_vision import files
from ondevice_vision.data import cityscapes_folder
from ondevice_vision.data.label_map import IGNORE_LABEL, LabelMap
from ondevice_vision.eval import cityscapes_official
from ondevice_vision.eval.evaluator import Evaluator
from ondevice_vision.eval.miou import StreamingConfusionMatrix
from ondevice_vision.tasks import segmentation as segmentation_task


class SegmentationEvaluator(Evaluator):
    """Streaming confusion matrix -> mIoU, pixel accuracy, per-class IoU (+ official Cityscapes)."""

    def __init__(self, config, label_map: LabelMap):
        super().__init__(config, label_map)
        self.matrix = StreamingConfusionMatrix(label_map.num_classes, IGNORE_LABEL)
        self.official = bool(config.eval.get("official_cityscapes", False))
        self.predicted = set()
        self.prediction_dir = None
        if self.official:
            self.prediction_dir = config.eval.get("prediction_dir") or tempfile.mkdtemp(
                prefix="cityscapes_pred_"
            )
            files.makedirs(self.prediction_dir)

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

    def result(self) -> dict:
        metrics = self.matrix.to_json_dict()
        metrics = {
            "mIoU": metrics["mIoU"],
            "pixel_accuracy": metrics["pixel_accuracy"],
            "per_class_iou": dict(zip(self.label_map.names, metrics["per_class_iou"], strict=True)),
        }
        if self.official:
            metrics["official_cityscapes"] = self._official()
        return metrics

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


def write_cityscapes_submission(
    config, model, out_dir: str, zip_path: str | None = None, expected_shape=(1024, 2048)
) -> list[str]:
    """Predicts every image of the eval split (e.g. `--config.data.eval_split=test`) and writes
    the labelId PNGs of the Cityscapes test server (and optionally their zip archive)."""
    dataset, _ = segmentation_task.build_dataset(config, "eval", config.eval.batch_size)
    predict_fn = tf.function(
        lambda images: segmentation_task.predict(config, model, images)["semantic_map"]
    )

    def predictions():
        for images, labels in dataset:
            maps = predict_fn(images).numpy()
            for i in range(len(maps)):
                h, w = (int(v) for v in labels["image_size"][i])
                stem = labels["image_id"][i].numpy().decode()
                yield stem, np.asarray(maps[i][:h, :w])

    return cityscapes_official.write_submission(predictions(), out_dir, expected_shape, zip_path)
