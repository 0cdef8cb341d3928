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
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ondevice_vision.data.image_decode import decode_upright, resize_pixels
from ondevice_vision.data.label_map import LabelMap
from ondevice_vision.export import tflite_metadata
from ondevice_vision.export.signatures import ServingFunctions
from ondevice_vision.heads.anchors import anchor_boxes

POSTPROCESS_OP = "TFLite_Detection_PostProcess"


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
        **unused,
    ):
        del unused
        self.config = config
        self.model = model
        self.input_size = tuple(int(v) for v in (input_size or config.model.input_size))
        self.use_regular_nms = use_regular_nms
        self.dataset_ids = tf.constant(label_map.dataset_ids, tf.int32)

    @staticmethod
    def default_input_size(config, fmt: str):
        del fmt
        return tuple(int(v) for v in config.model.input_size)

    # ------------------------------------------------------------- SavedModel
    def detect(self, images_float):
        """Float32 images already at the input size -> detections with dataset ids."""
        outputs = self.model(images_float, training=False)
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
        return {}

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
    def saved_model_outputs(outputs: dict, with_probabilities: bool, path: str) -> dict:
        """What a SavedModelRunner returns of the serving_default outputs (all of them)."""
        del with_probabilities, path
        return outputs

    @staticmethod
    def tflite_outputs(raw: dict, image, label_map: LabelMap, with_probabilities: bool) -> dict:
        """One image's TFLite outputs -> the SavedModel's outputs for it (dataset ids; boxes
        clipped to [0, 1]; zeros past num_detections)."""
        del image, with_probabilities
        num = int(raw["num_detections"].reshape(-1)[0])
        boxes = np.clip(raw["detection_boxes"][0], 0.0, 1.0).astype(np.float32)
        scores = raw["detection_scores"][0].astype(np.float32)
        index = np.rint(raw["detection_classes"][0]).astype(np.int64)
        ids = np.asarray(label_map.dataset_ids, np.int32)
        classes = np.zeros(index.shape, np.int32)
        classes[:num] = ids[index[:num]]
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
