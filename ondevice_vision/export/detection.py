"""Exporting a detector: SavedModel signatures and the TFLite graph with the OD API's NMS op.

SavedModel outputs (every signature, see signatures.py): images are resized (bilinear, as the
eval pipeline does) to the model input size; detection_boxes float32 [B, M, 4] (normalised ymin,
xmin, ymax, xmax of the original image), detection_classes int32 [B, M] (dataset category ids,
e.g. COCO ids; 0 past num_detections), detection_scores float32 [B, M], num_detections int32 [B].

TFLite graphs end in the `TFLite_Detection_PostProcess` custom op, as the TF Object Detection
API's export_tflite_graph does: a `tf.function` annotated with `experimental_implements` (the op
name and its attributes) takes the box encodings [1, A, 4], the sigmoid class scores
[1, A, K + 1] (background column 0) and the anchors [A, 4] (ycenter, xcenter, h, w) and the
converter replaces it by the custom op. Outputs: detection_boxes [1, M, 4] (normalised yxyx, not
clipped), detection_classes [1, M] (float class index 0..K-1, background removed),
detection_scores [1, M], num_detections [1].

With `postprocess="none"` (the OD API's `add_postprocessing_op=false`) both formats end before
that op: `box_encodings` float32 [B, A, 4] (ty, tx, th, tw per anchor) and `class_predictions`
[B, A, K + 1] (sigmoid scores, background column 0; uint8 in int8 TFLite files, so the whole graph
stays 8-bit); the export directory gets `anchors.npy` ([A, 4] ycenter, xcenter, height, width,
normalised) and export.json the box coder and NMS settings (`"raw_outputs"`). Our runner decodes
them with heads/tflite_postprocess.py, which computes what the op computes.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from ondevice_vision.data.image_decode import decode_upright, resize_pixels
from ondevice_vision.data.label_map import LabelMap
from ondevice_vision.export import tflite_metadata
from ondevice_vision.export.export_info import ANCHORS_FILE
from ondevice_vision.export.signatures import ServingFunctions
from ondevice_vision.heads import tflite_postprocess
from ondevice_vision.heads.anchors import anchor_boxes

POSTPROCESS_OP = "TFLite_Detection_PostProcess"
POSTPROCESS_CHOICES = ("op", "none")
RAW_OUTPUTS = ("box_encodings", "class_predictions")


def postprocess_attributes(model, use_regular_nms: bool = False) -> dict:
    """The TFLite_Detection_PostProcess attributes of a detector (OD API names)."""
    o = model.postprocess_options
    y_scale, x_scale, h_scale, w_scale = model.box_scale_factors
    return {
        "max_detections": int(o["max_detections"]),
        "max_classes_per_detection": 1,
        "detections_per_class": int(o["max_detections_per_class"]),
        "use_regular_nms": bool(use_regular_nms),
        "nms_score_threshold": float(o["score_threshold"]),
        "nms_iou_threshold": float(o["iou_threshold"]),
        "num_classes": int(model.num_classes),
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


class DetectionExport(ServingFunctions):
    """What a detector export holds: its serving functions and its TFLite graph."""

    task = "detection"
    # The post-processing op is a custom op; int8 graphs end in its float outputs.
    allow_custom_ops = True
    int8_output_type = tf.float32

    def __init__(
        self,
        config,
        model,
        label_map: LabelMap,
        input_size=None,
        use_regular_nms: bool = False,
        postprocess: str = "op",
        **unused,
    ):
        del unused
        if postprocess not in POSTPROCESS_CHOICES:
            raise ValueError(
                f"--postprocess must be one of {POSTPROCESS_CHOICES}, got {postprocess!r}"
            )
        if postprocess == "none" and use_regular_nms:
            raise ValueError("--use_regular_nms needs the post-processing op (--postprocess=op)")
        self.config = config
        self.model = model
        self.input_size = tuple(int(v) for v in (input_size or config.model.input_size))
        self.use_regular_nms = use_regular_nms
        self.raw = postprocess == "none"
        if self.raw:
            # 8-bit to the end: the Edge TPU compiler then maps the whole graph.
            self.int8_output_type = tf.uint8
            # MediaPipe's ObjectDetector reads the op's four outputs; without them, no metadata.
            self.has_metadata = False
        self.dataset_ids = tf.constant(label_map.dataset_ids, tf.int32)

    @staticmethod
    def default_input_size(config, fmt: str):
        del fmt
        return tuple(int(v) for v in config.model.input_size)

    # ------------------------------------------------------------- SavedModel
    def raw_outputs(self, outputs) -> dict:
        return {
            "box_encodings": tf.cast(outputs["box_outputs"], tf.float32),
            "class_predictions": tf.sigmoid(tf.cast(outputs["class_outputs"], tf.float32)),
        }

    def detect(self, images_float):
        """Float32 images already at the input size -> detections with dataset ids (or the raw
        outputs, with postprocess="none")."""
        outputs = self.model(images_float, training=False)
        if self.raw:
            return self.raw_outputs(outputs)
        det = self.model.detect(outputs, self.input_size)
        slots = tf.shape(det["detection_classes"])[1]
        valid = tf.range(slots)[tf.newaxis, :] < det["num_detections"][:, tf.newaxis]
        ids = tf.gather(self.dataset_ids, det["detection_classes"])
        det["detection_classes"] = tf.where(valid, ids, 0)
        return det

    def serving_default(self, images):
        return self.detect(resize_pixels(images, self.input_size))

    def image_bytes(self, encoded_images):
        images = tf.map_fn(
            lambda encoded: resize_pixels(decode_upright(encoded), self.input_size),
            encoded_images,
            fn_output_signature=tf.TensorSpec([*self.input_size, 3], tf.float32),
        )
        return self.detect(images)

    def saved_model_details(self) -> dict:
        return self.raw_details() if self.raw else {}

    def raw_details(self) -> dict:
        """export.json's description of raw outputs: what a client needs to decode them."""
        return {
            "raw_outputs": {
                "outputs": list(RAW_OUTPUTS),
                "anchors_file": ANCHORS_FILE,
                "anchor_layout": "ycenter, xcenter, height, width (normalised to the input)",
                "box_encoding": "ty, tx, th, tw (OD API faster_rcnn_box_coder)",
                "class_predictions": "sigmoid scores, column 0 background",
                "input_size": list(self.input_size),
            },
            "postprocess": postprocess_attributes(self.model, False),
        }

    def export_files(self) -> dict:
        if not self.raw:
            return {}
        m = self.model
        anchors = anchor_boxes(m.anchor_options, m.num_feature_maps, self.input_size)
        return {ANCHORS_FILE: center_size_anchors(anchors)}

    # ------------------------------------------------------------- TFLite
    def tflite_graph_fn(self, forward=None):
        """`forward(images)`: the network's outputs (default `model(images, training=False)`;
        the int8 export passes its rewritten graph, export/tflite.py)."""
        m = self.model
        boxes = anchor_boxes(m.anchor_options, m.num_feature_maps, self.input_size)
        anchors = tf.constant(center_size_anchors(boxes))
        postprocess = detection_postprocess_fn(self.tflite_details()["postprocess"])
        model = self.model
        if forward is None:
            forward = lambda images: model(images, training=False)  # noqa: E731

        if self.raw:
            return lambda images: self.raw_outputs(forward(images))

        def graph(images):
            outputs = forward(images)
            scores = tf.sigmoid(tf.cast(outputs["class_outputs"], tf.float32))
            boxes, classes, scores, num = postprocess(outputs["box_outputs"], scores, anchors)
            return {
                "detection_boxes": boxes,
                "detection_classes": classes,
                "detection_scores": scores,
                "num_detections": num,
            }

        return graph

    def tflite_details(self) -> dict:
        if self.raw:
            return self.raw_details()
        return {"postprocess": postprocess_attributes(self.model, self.use_regular_nms)}

    # ------------------------------------------------------------- TFLite metadata
    def tflite_model_metadata(self, label_map: LabelMap, input_size, input_dtype: str):
        """(ModelMetadata flatbuffer, subgraph output order) for tflite_metadata.add_metadata."""
        height, width = input_size
        backbone = self.config.model.backbone
        metadata = tflite_metadata.detection_metadata(
            f"SSDLite {backbone} {height}x{width}",
            f"SSDLite object detector ({backbone} backbone, {height}x{width} {input_dtype} input, "
            f"{label_map.num_classes} classes) with TFLite_Detection_PostProcess in the graph; "
            "exported by ondevice_vision.",
            (height, width),
            input_dtype,
        )
        return metadata, tflite_metadata.DETECTION_OUTPUTS

    # ------------------------------------------------------------- running an export
    @staticmethod
    def runner_data(directory: str, info) -> dict:
        """Raw-output exports: the anchors and the op's settings to decode with."""
        raw = info.extra.get("raw_outputs")
        if not raw:
            return {}
        anchors_path = os.path.join(directory, raw["anchors_file"])
        if not os.path.isfile(anchors_path):
            raise FileNotFoundError(f"{anchors_path} not found: the raw outputs need it")
        return {"anchors": np.load(anchors_path), "postprocess": info.extra["postprocess"]}

    @staticmethod
    def decode_raw(runner, box_encodings, class_predictions) -> dict:
        """One image's raw outputs -> the post-processing op's outputs, batch 1."""
        data = runner.export_data
        outputs = tflite_postprocess.postprocess(
            box_encodings, class_predictions, data["anchors"], data["postprocess"]
        )
        return {k: np.asarray(v)[np.newaxis] for k, v in outputs.items()}

    @staticmethod
    def saved_model_outputs(runner, outputs: dict, with_probabilities: bool) -> dict:
        """What a SavedModelRunner returns of the serving_default outputs (all of them; raw
        outputs decoded to detections, image by image)."""
        del with_probabilities
        if not runner.export_data:
            return outputs
        per_image = [
            DetectionExport.op_outputs(
                runner.label_map, DetectionExport.decode_raw(runner, boxes, scores)
            )
            for boxes, scores in zip(
                outputs["box_encodings"], outputs["class_predictions"], strict=True
            )
        ]
        return {k: np.stack([p[k] for p in per_image]) for k in per_image[0]}

    @staticmethod
    def tflite_outputs(runner, raw: dict, image, with_probabilities: bool) -> dict:
        """One image's TFLite outputs -> the SavedModel's outputs for it."""
        del image, with_probabilities
        if runner.export_data:
            raw = DetectionExport.decode_raw(
                runner, raw["box_encodings"][0], raw["class_predictions"][0]
            )
        return DetectionExport.op_outputs(runner.label_map, raw)

    @staticmethod
    def op_outputs(label_map: LabelMap, raw: dict) -> dict:
        """The post-processing op's outputs (batch 1) -> ours: dataset ids, boxes clipped to
        [0, 1], zeros past num_detections."""
        num = int(np.asarray(raw["num_detections"]).reshape(-1)[0])
        boxes = np.clip(raw["detection_boxes"][0], 0.0, 1.0).astype(np.float32)
        scores = raw["detection_scores"][0].astype(np.float32)
        # The op leaves the slots past num_detections unset (NaN at times): read only its own.
        index = np.rint(raw["detection_classes"][0][:num]).astype(np.int64)
        ids = np.asarray(label_map.dataset_ids, np.int32)
        classes = np.zeros(scores.shape, np.int32)
        classes[:num] = ids[index]
        boxes[num:], scores[num:] = 0.0, 0.0
        return {
            "detection_boxes": boxes,
            "detection_classes": classes,
            "detection_scores": scores,
            "num_detections": np.int32(num),
        }

    @staticmethod
    def model_index_outputs(runner, outputs: dict) -> dict:
        """A runner's outputs with model class indices (what our evaluators take), not ids."""
        outputs["detection_classes"] = runner.to_contiguous(
            outputs["detection_classes"], outputs["num_detections"]
        )
        return outputs
