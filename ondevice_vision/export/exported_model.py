"""Runners: run an export (SavedModel directory or TFLite file) through one interface.

    model = load_exported_model("exports/shapes")        # or ".../model.tflite", or its directory
    outputs = model.predict(images_uint8)                # [B, H, W, 3], any H, W

Detection outputs are the SavedModel's: detection_boxes float32 [B, M, 4] (normalised yxyx,
clipped to [0, 1]), detection_classes int32 [B, M] (dataset ids, 0 past num_detections),
detection_scores float32 [B, M], num_detections int32 [B]. Segmentation: semantic_map int32
[B, H, W] (contiguous class index) and, with `with_probabilities`, probabilities [B, H, W, K].

SavedModels run with plain `tf.saved_model.load`; TFLite models with ai-edge-litert's Interpreter
(batch 1, one image at a time, resized to the model's input size with the same bilinear resize
as the SavedModel signatures; segmentation logits are resized back before the argmax).
Detection exports without the post-processing op (`--postprocess=none`) are decoded with the
export's anchors.npy by heads/tflite_postprocess.py: the same outputs as the op's.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from absl import logging

from ondevice_vision import tasks
from ondevice_vision.data.label_map import LabelMap
from ondevice_vision.export.export_info import TFLITE_FILE, ExportInfo, read_export_files


class ExportRunner:
    """Runs an export. Shared parts: metadata, the task's export class (which says how its
    outputs read, export/detection.py, export/segmentation.py) and the dataset id <-> contiguous
    index maps."""

    def __init__(self, path: str, info: ExportInfo, label_map: LabelMap):
        self.path = path
        self.info = info
        self.label_map = label_map
        self.task = info.task
        self.export_class = tasks.get_task(info.task).export_class()
        directory = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
        # What the task's export keeps beside the model to read its outputs (raw detection
        # outputs: the anchors), loaded once.
        self.export_data = self.export_class.runner_data(directory, info)

    def to_contiguous(self, dataset_ids: np.ndarray, num_detections: np.ndarray) -> np.ndarray:
        """Detection classes as dataset ids -> contiguous model indices (for our evaluators)."""
        lookup = self.label_map.index_of_dataset_id()
        ids = np.asarray(dataset_ids)
        out = np.zeros(ids.shape, np.int32)
        for b in range(ids.shape[0]):
            n = int(num_detections[b])
            out[b, :n] = [lookup[int(v)] for v in ids[b, :n]]
        return out

    def predict(self, images: np.ndarray, with_probabilities: bool = False) -> dict:
        raise NotImplementedError

    def predict_model_indices(self, images: np.ndarray) -> dict:
        """`predict` with model class indices instead of dataset ids (what evaluators take)."""
        return self.export_class.model_index_outputs(self, self.predict(images))


def _check_images(images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[np.newaxis]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images [B, H, W, 3], got {images.dtype} {images.shape}")
    return images


class SavedModelRunner(ExportRunner):
    def __init__(self, path: str, info: ExportInfo, label_map: LabelMap):
        super().__init__(path, info, label_map)
        try:
            self.loaded = tf.saved_model.load(path)
            self.signature = self.loaded.signatures["serving_default"]
        except (OSError, ValueError, KeyError, tf.errors.OpError) as e:
            detail = " ".join(str(getattr(e, "message", e)).split())[:200]
            raise ValueError(f"{path}: not a readable SavedModel of ours ({detail})") from e

    def predict(self, images, with_probabilities: bool = False) -> dict:
        images = _check_images(images)
        outputs = {k: v.numpy() for k, v in self.signature(images=tf.constant(images)).items()}
        return self.export_class.saved_model_outputs(self, outputs, with_probabilities)


class TFLiteRunner(ExportRunner):
    def __init__(self, path: str, info: ExportInfo, label_map: LabelMap, num_threads=None):
        super().__init__(path, info, label_map)
        from ai_edge_litert.interpreter import Interpreter

        if info.extra.get("postprocess", {}).get("use_regular_nms") and num_threads != 1:
            # TFLite_Detection_PostProcess with use_regular_nms drops classes when the
            # interpreter has 2..num_classes-1 threads (ai-edge-litert 2.3 and TF 2.21's
            # tf.lite alike; tests/test_export_tflite_detection.py); one thread is correct.
            logging.warning(
                "%s uses regular NMS: running it single-threaded (multi-threaded LiteRT drops "
                "classes in that op)",
                path,
            )
            num_threads = 1
        try:
            self.interpreter = Interpreter(model_path=path, num_threads=num_threads)
            self.runner = self.interpreter.get_signature_runner("serving_default")
        except (ValueError, RuntimeError) as e:
            detail = " ".join(str(e).split())[:200]
            raise ValueError(f"{path}: not a readable TFLite model of ours ({detail})") from e
        self.input_detail = self.runner.get_input_details()["images"]
        self.output_details = self.runner.get_output_details()
        self.input_size = tuple(int(v) for v in self.input_detail["shape"][1:3])

    def run(self, image: np.ndarray) -> dict:
        """One float or uint8 image [1, h, w, 3] at the input size -> dequantized raw outputs."""
        x = np.asarray(image, np.float32)
        dtype = self.input_detail["dtype"]
        if np.issubdtype(dtype, np.integer):
            scale, zero_point = self.input_detail["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero_point), info.min, info.max)
        outputs = self.runner(images=x.astype(dtype))
        result = {}
        for key, value in outputs.items():
            detail = self.output_details[key]
            scale, zero_point = detail["quantization"]
            if np.issubdtype(value.dtype, np.integer) and scale:
                value = (value.astype(np.float32) - zero_point) * np.float32(scale)
            result[key] = value
        return result

    def _resized(self, image: np.ndarray) -> np.ndarray:
        if tuple(image.shape[:2]) == self.input_size:
            return image[np.newaxis].astype(np.float32)
        resized = tf.image.resize(tf.cast(image[np.newaxis], tf.float32), self.input_size)
        return tf.clip_by_value(resized, 0.0, 255.0).numpy()

    def predict(self, images, with_probabilities: bool = False) -> dict:
        images = _check_images(images)
        per_image = [self._predict_one(image, with_probabilities) for image in images]
        return {k: np.stack([p[k] for p in per_image]) for k in per_image[0]}

    def _predict_one(self, image: np.ndarray, with_probabilities: bool) -> dict:
        raw = self.run(self._resized(image))
        return self.export_class.tflite_outputs(self, raw, image, with_probabilities)


def load_exported_model(path: str, num_threads: int | None = None) -> ExportRunner:
    """A SavedModel export directory, a TFLite export directory, or the .tflite file in one."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"exported model not found: {path}")
    if os.path.isdir(path):
        directory = path
        if os.path.isfile(os.path.join(path, "saved_model.pb")):
            info, label_map = read_export_files(directory)
            return SavedModelRunner(path, info, label_map)
        tflite_path = os.path.join(path, TFLITE_FILE)
        if not os.path.isfile(tflite_path):
            raise FileNotFoundError(
                f"{path} holds neither saved_model.pb nor {TFLITE_FILE}: not an export directory"
            )
    else:
        tflite_path, directory = path, os.path.dirname(os.path.abspath(path))
        if not path.endswith(".tflite"):
            raise ValueError(f"{path}: expected a .tflite file or an export directory")
    info, label_map = read_export_files(directory)
    return TFLiteRunner(tflite_path, info, label_map, num_threads=num_threads)
