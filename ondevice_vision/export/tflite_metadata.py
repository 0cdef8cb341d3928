"""What the TFLite Model Metadata of our .tflite files says, so MediaPipe Tasks and the TFLite
Task Library load them unchanged (`vision.ObjectDetector`, `vision.ImageSegmenter`); the
flatbuffer writing and packing is tflite_flatbuffers.py's.

What we write:
- Image input (both tasks): RGB, `NormalizationOptions` mean 0 / std 1, i.e. the network takes
  0..255 pixels as they are (float32 models normalise inside the graph; int8 models take uint8
  pixels: the input is set to scale 1 and zero point 0, see `tflite_flatbuffers.py's
  `_raw_pixel_input`).
- Detection: the four outputs of TFLite_Detection_PostProcess, named as MediaPipe's ObjectDetector
  looks them up ("location", "category", "score", "number of detections"): boxes are BOUNDARIES in
  RATIO coordinates, stored (ymin, xmin, ymax, xmax), so `index` is [1, 0, 3, 2] (the positions of
  left, top, right, bottom). The category output holds our contiguous class index as a float;
  `labels.txt` (TENSOR_VALUE_LABELS) has one name per line in that order. The subgraph's outputs
  are put in the TF Object Detection API's order (boxes, classes, scores, count), which consumers
  that go by position (Coral's examples, older Task Library versions) assume; the converter's order
  differs. The signature keeps its names, so `get_signature_runner` is unaffected.
- Segmentation: the one output holds per-class scores (logits, [1, H, W, K]), not a category mask.
  `labels.txt` is attached as TENSOR_AXIS_LABELS, and MediaPipe's custom "SEGMENTER_METADATA"
  (its `image_segmenter_metadata_schema.fbs`, identifier "V001") says SOFTMAX, so MediaPipe's
  confidence masks are probabilities and its category mask is the argmax, our class map.
"""

from __future__ import annotations

import numpy as np
from tensorflow.lite.python import schema_py_generated as tflite_schema

import ondevice_vision
from ondevice_vision.export import tflite_flatbuffers as fb
from ondevice_vision.export.tflite_flatbuffers import MetadataWriter

SEGMENTER_METADATA_NAME = "SEGMENTER_METADATA"
SEGMENTER_OPTIONS_IDENTIFIER = b"V001"
LABELS_FILE = "labels.txt"
# Detection output names in our signature, in the subgraph order we give them.
DETECTION_OUTPUTS = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")
# The names MediaPipe's object_detector_graph.cc matches, for the same four outputs.
DETECTION_OUTPUT_METADATA_NAMES = ("location", "category", "score", "number of detections")
BOX_INDEX = (1, 0, 3, 2)  # left = xmin at 1, top = ymin at 0, right = xmax at 3, bottom = ymax at 2
# image_segmenter_metadata_schema.fbs: Activation.
_SOFTMAX = 2
# Versions of the metadata schema ("Added in" notes of metadata_schema.fbs): everything we write
# exists since 1.0.0, except SubGraphMetadata.custom_metadata (1.5.0, segmentation only).
_DETECTION_PARSER_VERSION = "1.0.0"
_SEGMENTATION_PARSER_VERSION = "1.5.0"


def _image_input(w: MetadataWriter, height, width, dtype_name):
    """Our input: RGB pixels 0..255 as they are (mean 0, std 1)."""
    normalization = w.table(
        (0, "offset", w.numbers([0.0], np.float32)),
        (1, "offset", w.numbers([1.0], np.float32)),
    )
    unit = w.table((0, "uint8", fb.NORMALIZATION_OPTIONS), (1, "offset", normalization))
    stats = w.table(
        (0, "offset", w.numbers([255.0], np.float32)),
        (1, "offset", w.numbers([0.0], np.float32)),
    )
    properties = w.table((0, "int8", fb.COLOR_RGB))
    return w.tensor(
        "image",
        f"RGB image {height}x{width}, {dtype_name} pixel values 0..255 (not normalised: the "
        "network normalises them itself).",
        w.content(fb.IMAGE_PROPERTIES, properties),
        process_units=[unit],
        stats=stats,
    )


def _label_text(names) -> bytes:
    for i, name in enumerate(names):
        if not name or "\n" in name or "\r" in name:
            raise ValueError(f"class {i} name {name!r} cannot be a line of {LABELS_FILE}")
    return ("\n".join(names) + "\n").encode("utf-8")


def _model_metadata(w: MetadataWriter, name, description, inputs, outputs, custom, parser_version):
    subgraph = w.table(
        (2, "offset", w.tables(inputs)),
        (3, "offset", w.tables(outputs)),
        (9, "offset", w.tables(custom)),
    )
    return w.table(
        (0, "offset", w.string(name)),
        (1, "offset", w.string(description)),
        (2, "offset", w.string(ondevice_vision.__version__)),
        (3, "offset", w.tables([subgraph])),
        (4, "offset", w.string("ondevice_vision")),
        (7, "offset", w.string(parser_version)),
    )


def detection_metadata(name, description, input_size, input_dtype: str) -> bytes:
    """The ModelMetadata flatbuffer of a detector with TFLite_Detection_PostProcess outputs."""
    w = MetadataWriter()
    labels = w.associated_file(
        LABELS_FILE,
        "Class names, one a line: line i names class index i of the category output.",
        fb.TENSOR_VALUE_LABELS,
    )
    box_properties = w.table(
        (0, "offset", w.numbers(BOX_INDEX, np.uint32)),
        (1, "int8", fb.BOX_BOUNDARIES),
        (2, "int8", fb.COORDINATES_RATIO),
    )
    location = w.tensor(
        "location",
        "Detected boxes [1, N, 4]: ymin, xmin, ymax, xmax as fractions of the image height and "
        "width (not clipped to 0..1).",
        w.content(fb.BOUNDING_BOX_PROPERTIES, box_properties, dims=(2, 2)),
    )
    category = w.tensor(
        "category",
        f"Class index of each box [1, N] (float), a line of {LABELS_FILE}.",
        w.content(fb.FEATURE_PROPERTIES, w.table(), dims=(2, 2)),
        files=[labels],
    )
    score = w.tensor(
        "score",
        "Score of each box [1, N] (sigmoid), best first.",
        w.content(fb.FEATURE_PROPERTIES, w.table(), dims=(2, 2)),
    )
    count = w.tensor("number of detections", "Number of valid boxes [1] (float).")
    image = _image_input(w, *input_size, input_dtype)
    root = _model_metadata(
        w,
        name,
        description,
        [image],
        [location, category, score, count],
        [],
        _DETECTION_PARSER_VERSION,
    )
    return w.finish(root, fb.MODEL_METADATA_IDENTIFIER)


def segmenter_options(activation: int = _SOFTMAX) -> bytes:
    """MediaPipe's ImageSegmenterOptions flatbuffer (custom metadata "SEGMENTER_METADATA")."""
    w = MetadataWriter()
    return w.finish(w.table((0, "int8", activation)), SEGMENTER_OPTIONS_IDENTIFIER)


def segmentation_metadata(name, description, input_size, input_dtype: str) -> bytes:
    """The ModelMetadata flatbuffer of a segmenter whose one output is per-class logits."""
    w = MetadataWriter()
    labels = w.associated_file(
        LABELS_FILE,
        "Class names, one a line: line i names channel i of the output.",
        fb.TENSOR_AXIS_LABELS,
    )
    masks = w.tensor(
        "segmentation_masks",
        "Per-class scores (logits) [1, H, W, K] at the input resolution: softmax over the last "
        f"axis gives probabilities, argmax the class map ({LABELS_FILE} line = channel).",
        w.content(fb.IMAGE_PROPERTIES, w.table((0, "int8", fb.COLOR_GRAYSCALE)), dims=(1, 2)),
        files=[labels],
    )
    custom = w.table(
        (0, "offset", w.string(SEGMENTER_METADATA_NAME)),
        (1, "offset", w.data(segmenter_options(), 16)),  # data is force_align: 16 in the schema
    )
    image = _image_input(w, *input_size, input_dtype)
    root = _model_metadata(
        w,
        name,
        description,
        [image],
        [masks],
        [custom],
        _SEGMENTATION_PARSER_VERSION,
    )
    return w.finish(root, fb.MODEL_METADATA_IDENTIFIER)


def add_metadata(flatbuffer: bytes, export, label_map, input_size) -> bytes:
    """Our converter output with the metadata of its task (the export object's
    `tflite_model_metadata`) and `labels.txt` packed in."""
    height, width = (int(v) for v in input_size)
    model = tflite_schema.Model.GetRootAs(flatbuffer, 0)
    subgraph = model.Subgraphs(0)
    input_type = subgraph.Tensors(subgraph.Inputs(0)).Type()
    dtype = "uint8" if input_type == tflite_schema.TensorType.UINT8 else "float32"
    metadata, order = export.tflite_model_metadata(label_map, (height, width), dtype)
    files = {LABELS_FILE: _label_text(label_map.names)}
    return fb.populate(flatbuffer, metadata, files, order)
