"""TFLite export: float, fp16 and full-integer int8 models with a converter configuration we own.

The model is first saved as a fixed-shape "TFLite graph" SavedModel (batch 1, input float32 pixels
0..255 [1, H, W, 3]) and converted with `TFLiteConverter.from_saved_model`; only TFLite builtin ops
are allowed (no Select TF ops).

Detection graphs end in the `TFLite_Detection_PostProcess` custom op, as the TF Object Detection
API's export_tflite_graph does: a `tf.function` annotated with `experimental_implements` (the op
name and its attributes) takes the box encodings [1, A, 4], the sigmoid class scores
[1, A, K + 1] (background column 0) and the anchors [A, 4] (ycenter, xcenter, h, w) and the
converter replaces it by the custom op. Outputs: detection_boxes [1, M, 4] (normalised yxyx, not
clipped), detection_classes [1, M] (float class index 0..K-1, background removed),
detection_scores [1, M], num_detections [1]. Segmentation graphs output logits [1, H, W, K].

int8 is full-integer quantization calibrated on images from the training input pipeline:
TFLITE_BUILTINS_INT8 only, uint8 input; segmentation logits come out as uint8, detection outputs
are the post-processing op's float32 boxes / classes / scores (as in the OD API's Edge TPU models),
with DEQUANTIZE ops in front of that op. That graph is what the Edge TPU compiler takes.
"""

from __future__ import annotations

import itertools
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from ondevice_vision.data.label_map import LabelMap
from ondevice_vision.export.atomic_dir import atomic_directory
from ondevice_vision.export.export_info import TFLITE_FILE, ExportInfo, write_export_files
from ondevice_vision.train import detection_task, tasks

POSTPROCESS_OP = "TFLite_Detection_PostProcess"


def postprocess_attributes(config, use_regular_nms: bool = False) -> dict:
    """The TFLite_Detection_PostProcess attributes for a detection config (OD API names)."""
    m = config.model
    y_scale, x_scale, h_scale, w_scale = (float(s) for s in m.box_scale_factors)
    return {
        "max_detections": int(m.max_detections),
        "max_classes_per_detection": 1,
        "detections_per_class": int(m.max_detections_per_class),
        "use_regular_nms": bool(use_regular_nms),
        "nms_score_threshold": float(m.score_threshold),
        "nms_iou_threshold": float(m.iou_threshold),
        "num_classes": int(m.num_classes),
        "y_scale": y_scale,
        "x_scale": x_scale,
        "h_scale": h_scale,
        "w_scale": w_scale,
    }


def _implements_signature(attributes: dict) -> str:
    """The NameAttrList text the converter reads from `experimental_implements`."""
    parts = [f'name: "{POSTPROCESS_OP}"']
    for key, value in attributes.items():
        if isinstance(value, bool):
            field = f"b: {str(value).lower()}"
        elif isinstance(value, int):
            field = f"i: {value}"
        else:
            field = f"f: {value!r}"
        parts.append(f'attr {{ key: "{key}" value {{ {field} }} }}')
    return " ".join(parts)


def detection_postprocess_fn(attributes: dict):
    """A placeholder function the TFLite converter replaces by TFLite_Detection_PostProcess.

    In TensorFlow it returns zeros: the graph is only meant for conversion.
    """

    @tf.function(experimental_implements=_implements_signature(attributes))
    def postprocess(box_encodings, class_predictions, anchors):
        del box_encodings, class_predictions, anchors
        zero = tf.constant(0.0, tf.float32)
        return zero, zero, zero, zero

    return postprocess


def center_size_anchors(anchors_yxyx: np.ndarray) -> np.ndarray:
    """[A, 4] yxyx -> [A, 4] (ycenter, xcenter, height, width), the op's anchor layout."""
    a = np.asarray(anchors_yxyx, np.float32)
    height, width = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
    return np.stack([a[:, 0] + height / 2, a[:, 1] + width / 2, height, width], axis=1)


def tflite_graph_archive(config, model, input_size, use_regular_nms: bool = False):
    """ExportArchive of the fixed-shape graph that gets converted (serving_default: `images`)."""
    height, width = (int(v) for v in input_size)
    spec = tf.TensorSpec([1, height, width, 3], tf.float32, name="images")
    if config.task == "detection":
        anchors = tf.constant(center_size_anchors(detection_task.anchors(config, (height, width))))
        postprocess = detection_postprocess_fn(postprocess_attributes(config, use_regular_nms))

        def graph(images):
            outputs = model(images, training=False)
            scores = tf.sigmoid(tf.cast(outputs["class_outputs"], tf.float32))
            boxes, classes, scores, num = postprocess(outputs["box_outputs"], scores, anchors)
            return {
                "detection_boxes": boxes,
                "detection_classes": classes,
                "detection_scores": scores,
                "num_detections": num,
            }

    elif config.task == "segmentation":

        def graph(images):
            return {"logits": tf.cast(model(images, training=False), tf.float32)}

    else:
        raise ValueError(f"unknown task {config.task!r}")
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", graph, input_signature=[spec])
    return archive


def representative_images(config, input_size, num_images: int):
    """Generator factory: `num_images` training-pipeline images resized to input_size, batch 1."""

    def generate():
        dataset, _ = tasks.get_task(config).build_dataset(config, "train", 1)
        for images, _ in itertools.islice(dataset, num_images):
            images = tf.cast(images, tf.float32)
            if tuple(images.shape[1:3]) != tuple(input_size):
                images = tf.image.resize(images, input_size, method="bilinear")
            yield [tf.clip_by_value(images, 0.0, 255.0).numpy()]

    return generate


def make_converter(saved_model_dir: str, task: str, quantization: str, representative=None):
    """Our converter configuration: builtins only (+ the detection custom op), no Select TF ops."""
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    converter.allow_custom_ops = task == "detection"  # TFLite_Detection_PostProcess only
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        if representative is None:
            raise ValueError("int8 quantization needs a representative dataset")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        # The post-processing op emits float boxes / scores / classes; segmentation stays integer.
        converter.inference_output_type = tf.uint8 if task == "segmentation" else tf.float32
    elif quantization != "none":
        raise ValueError(f"quantization must be none, fp16 or int8, got {quantization!r}")
    return converter


def convert(
    config,
    model,
    input_size,
    quantization: str = "none",
    num_calibration_images: int = 100,
    use_regular_nms: bool = False,
    representative=None,
) -> bytes:
    """The .tflite flatbuffer. `representative` overrides the training-pipeline calibration data."""
    if quantization == "int8" and representative is None:
        representative = representative_images(config, input_size, num_calibration_images)
    archive = tflite_graph_archive(config, model, input_size, use_regular_nms)
    with tempfile.TemporaryDirectory(prefix="tflite_graph_") as graph_dir:
        archive.write_out(graph_dir, verbose=False)
        converter = make_converter(graph_dir, config.task, quantization, representative)
        return converter.convert()


def export_tflite(
    config,
    model,
    label_map: LabelMap,
    export_dir: str,
    input_size,
    quantization: str = "none",
    num_calibration_images: int = 100,
    use_regular_nms: bool = False,
    palette=None,
    overwrite: bool = False,
    representative=None,
    extra: dict | None = None,
) -> str:
    """Writes model.tflite, labels.json and export.json to `export_dir` atomically."""
    if label_map.num_classes != config.model.num_classes:
        raise ValueError(
            f"label map has {label_map.num_classes} classes but model.num_classes is "
            f"{config.model.num_classes}"
        )
    input_size = tuple(int(v) for v in input_size)
    flatbuffer = convert(
        config,
        model,
        input_size,
        quantization,
        num_calibration_images,
        use_regular_nms,
        representative,
    )
    details = dict(extra or {})
    if config.task == "detection":
        details["postprocess"] = postprocess_attributes(config, use_regular_nms)
    if quantization == "int8":
        details["num_calibration_images"] = int(num_calibration_images)
    info = ExportInfo(
        task=config.task,
        format="tflite",
        quantization=quantization,
        input_size=input_size,
        num_classes=label_map.num_classes,
        palette=None if palette is None else tuple(tuple(int(c) for c in p) for p in palette),
        signatures=("serving_default",),
        extra=details,
    )
    with atomic_directory(export_dir, overwrite=overwrite) as tmp:
        with open(os.path.join(tmp, TFLITE_FILE), "wb") as f:
            f.write(flatbuffer)
        write_export_files(tmp, info, label_map)
    logging.info("Wrote %s (%d bytes)", os.path.join(export_dir, TFLITE_FILE), len(flatbuffer))
    return export_dir
