"""TFLite Model Metadata in our .tflite files, so MediaPipe Tasks and the TFLite Task Library load
them unchanged (`vision.ObjectDetector`, `vision.ImageSegmenter`).

The convention (TensorFlow Lite metadata, schema `metadata_schema.fbs`, file identifier "M001",
as MediaPipe's `tasks/cc/metadata/metadata_extractor.cc` reads it): a `ModelMetadata` flatbuffer
stored in one of the model's buffers, named by an entry "TFLITE_METADATA" of the model's
`metadata` list, and the associated files (here `labels.txt`) appended after the flatbuffer as an
uncompressed zip archive.

What we write:
- Image input (both tasks): RGB, `NormalizationOptions` mean 0 / std 1, i.e. the network takes
  0..255 pixels as they are (float32 models normalise inside the graph; int8 models take uint8
  pixels: the input is set to scale 1 and zero point 0, see `_raw_pixel_input`).
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

Written with the `flatbuffers` package (a TensorFlow dependency) from the schemas' field order; the
model is re-serialised with TensorFlow's generated TFLite schema module. Why not an existing
writer: mediapipe 1.2.2's `metadata_writers` need a compiled module its wheel lacks, tflite-support
pins protobuf < 4 (TensorFlow 2.21 needs >= 5), and mediapipe's generated schema modules are only
importable through its package, which loads OpenCV and its native library; the export would then
need mediapipe installed. The tests read what we write back with mediapipe's own generated reader
and run MediaPipe's ObjectDetector / ImageSegmenter on it.
"""

from __future__ import annotations

import io
import zipfile

import flatbuffers
import numpy as np
from tensorflow.lite.python import schema_py_generated as tflite_schema

import ondevice_vision

METADATA_NAME = "TFLITE_METADATA"
MODEL_METADATA_IDENTIFIER = b"M001"
SEGMENTER_METADATA_NAME = "SEGMENTER_METADATA"
SEGMENTER_OPTIONS_IDENTIFIER = b"V001"
TFLITE_IDENTIFIER = b"TFL3"
LABELS_FILE = "labels.txt"
# Detection output names in our signature, in the subgraph order we give them.
DETECTION_OUTPUTS = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")
# The names MediaPipe's object_detector_graph.cc matches, for the same four outputs.
DETECTION_OUTPUT_METADATA_NAMES = ("location", "category", "score", "number of detections")
BOX_INDEX = (1, 0, 3, 2)  # left = xmin at 1, top = ymin at 0, right = xmax at 3, bottom = ymax at 2
# The converter aligns weight buffers to 16 bytes (Buffer.data is force_align: 16 in schema.fbs).
BUFFER_ALIGNMENT = 16

# Enum values of metadata_schema.fbs.
_TENSOR_AXIS_LABELS = 2
_TENSOR_VALUE_LABELS = 3
_COLOR_RGB = 1
_COLOR_GRAYSCALE = 2
_BOX_BOUNDARIES = 1
_COORDINATES_RATIO = 0
# Union type tags: ContentProperties and ProcessUnitOptions (NONE is 0).
_FEATURE_PROPERTIES = 1
_IMAGE_PROPERTIES = 2
_BOUNDING_BOX_PROPERTIES = 3
_NORMALIZATION_OPTIONS = 1
# image_segmenter_metadata_schema.fbs: Activation.
_SOFTMAX = 2
# Versions of the metadata schema ("Added in" notes of metadata_schema.fbs): everything we write
# exists since 1.0.0, except SubGraphMetadata.custom_metadata (1.5.0, segmentation only).
_DETECTION_PARSER_VERSION = "1.0.0"
_SEGMENTATION_PARSER_VERSION = "1.5.0"


class _Writer:
    """Tables of a flatbuffer, children first (flatbuffers builds bottom-up)."""

    _PREPEND = {
        "offset": "PrependUOffsetTRelativeSlot",
        "int8": "PrependInt8Slot",
        "uint8": "PrependUint8Slot",
        "int32": "PrependInt32Slot",
    }

    def __init__(self):
        self.builder = flatbuffers.Builder(1024)

    def string(self, text):
        return None if text is None else self.builder.CreateString(text)

    def tables(self, offsets):
        """A vector of tables (or strings), or None when empty."""
        if not offsets:
            return None
        b = self.builder
        b.StartVector(4, len(offsets), 4)
        for offset in reversed(offsets):
            b.PrependUOffsetTRelative(offset)
        return b.EndVector()

    def numbers(self, values, dtype):
        return self.builder.CreateNumpyVector(np.asarray(values, dtype))

    def data(self, payload: bytes, alignment: int):
        b = self.builder
        b.StartVector(1, len(payload), alignment)
        b.head -= len(payload)
        b.Bytes[b.head : b.head + len(payload)] = payload
        return b.EndVector()

    def table(self, *fields):
        """fields: (slot, kind, value); None values are left out (the reader's default)."""
        fields = [f for f in fields if f[2] is not None]
        b = self.builder
        b.StartObject(1 + max((slot for slot, _, _ in fields), default=-1))
        for slot, kind, value in fields:
            # Default 0: a scalar equal to the schema default (0 for all of ours) is not stored.
            getattr(b, self._PREPEND[kind])(slot, value, 0)
        return b.EndObject()

    def finish(self, root, identifier: bytes) -> bytes:
        self.builder.Finish(root, file_identifier=identifier)
        return bytes(self.builder.Output())

    # ------------------------------------------------- metadata_schema.fbs tables (slot = order)

    def associated_file(self, name, description, file_type):
        return self.table(
            (0, "offset", self.string(name)),
            (1, "offset", self.string(description)),
            (2, "int8", file_type),
        )

    def content(self, properties_type, properties, dims=None):
        value_range = None
        if dims is not None:  # ValueRange {min, max}: the axes the content runs along
            value_range = self.table((0, "int32", dims[0]), (1, "int32", dims[1]))
        return self.table(
            (0, "uint8", properties_type), (1, "offset", properties), (2, "offset", value_range)
        )

    def tensor(self, name, description, content=None, process_units=(), stats=None, files=()):
        return self.table(
            (0, "offset", self.string(name)),
            (1, "offset", self.string(description)),
            (3, "offset", content),
            (4, "offset", self.tables(list(process_units))),
            (5, "offset", stats),
            (6, "offset", self.tables(list(files))),
        )

    def image_input(self, height, width, dtype_name):
        normalization = self.table(
            (0, "offset", self.numbers([0.0], np.float32)),
            (1, "offset", self.numbers([1.0], np.float32)),
        )
        unit = self.table((0, "uint8", _NORMALIZATION_OPTIONS), (1, "offset", normalization))
        stats = self.table(
            (0, "offset", self.numbers([255.0], np.float32)),
            (1, "offset", self.numbers([0.0], np.float32)),
        )
        properties = self.table((0, "int8", _COLOR_RGB))
        return self.tensor(
            "image",
            f"RGB image {height}x{width}, {dtype_name} pixel values 0..255 (not normalised: the "
            "network normalises them itself).",
            self.content(_IMAGE_PROPERTIES, properties),
            process_units=[unit],
            stats=stats,
        )


def _label_text(names) -> bytes:
    for i, name in enumerate(names):
        if not name or "\n" in name or "\r" in name:
            raise ValueError(f"class {i} name {name!r} cannot be a line of {LABELS_FILE}")
    return ("\n".join(names) + "\n").encode("utf-8")


def _model_metadata(w: _Writer, name, description, inputs, outputs, custom, parser_version):
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
    w = _Writer()
    labels = w.associated_file(
        LABELS_FILE,
        "Class names, one a line: line i names class index i of the category output.",
        _TENSOR_VALUE_LABELS,
    )
    box_properties = w.table(
        (0, "offset", w.numbers(BOX_INDEX, np.uint32)),
        (1, "int8", _BOX_BOUNDARIES),
        (2, "int8", _COORDINATES_RATIO),
    )
    location = w.tensor(
        "location",
        "Detected boxes [1, N, 4]: ymin, xmin, ymax, xmax as fractions of the image height and "
        "width (not clipped to 0..1).",
        w.content(_BOUNDING_BOX_PROPERTIES, box_properties, dims=(2, 2)),
    )
    category = w.tensor(
        "category",
        f"Class index of each box [1, N] (float), a line of {LABELS_FILE}.",
        w.content(_FEATURE_PROPERTIES, w.table(), dims=(2, 2)),
        files=[labels],
    )
    score = w.tensor(
        "score",
        "Score of each box [1, N] (sigmoid), best first.",
        w.content(_FEATURE_PROPERTIES, w.table(), dims=(2, 2)),
    )
    count = w.tensor("number of detections", "Number of valid boxes [1] (float).")
    image = w.image_input(*input_size, input_dtype)
    root = _model_metadata(
        w,
        name,
        description,
        [image],
        [location, category, score, count],
        [],
        _DETECTION_PARSER_VERSION,
    )
    return w.finish(root, MODEL_METADATA_IDENTIFIER)


def segmenter_options(activation: int = _SOFTMAX) -> bytes:
    """MediaPipe's ImageSegmenterOptions flatbuffer (custom metadata "SEGMENTER_METADATA")."""
    w = _Writer()
    return w.finish(w.table((0, "int8", activation)), SEGMENTER_OPTIONS_IDENTIFIER)


def segmentation_metadata(name, description, input_size, input_dtype: str) -> bytes:
    """The ModelMetadata flatbuffer of a segmenter whose one output is per-class logits."""
    w = _Writer()
    labels = w.associated_file(
        LABELS_FILE,
        "Class names, one a line: line i names channel i of the output.",
        _TENSOR_AXIS_LABELS,
    )
    masks = w.tensor(
        "segmentation_masks",
        "Per-class scores (logits) [1, H, W, K] at the input resolution: softmax over the last "
        f"axis gives probabilities, argmax the class map ({LABELS_FILE} line = channel).",
        w.content(_IMAGE_PROPERTIES, w.table((0, "int8", _COLOR_GRAYSCALE)), dims=(1, 2)),
        files=[labels],
    )
    custom = w.table(
        (0, "offset", w.string(SEGMENTER_METADATA_NAME)),
        (1, "offset", w.data(segmenter_options(), 16)),  # data is force_align: 16 in the schema
    )
    image = w.image_input(*input_size, input_dtype)
    root = _model_metadata(
        w,
        name,
        description,
        [image],
        [masks],
        [custom],
        _SEGMENTATION_PARSER_VERSION,
    )
    return w.finish(root, MODEL_METADATA_IDENTIFIER)


# --------------------------------------------------------------------------- model flatbuffer


class _AlignedBufferT(tflite_schema.BufferT):
    """BufferT that keeps the converter's 16-byte alignment of tensor data when re-packed (the
    generated Pack aligns to 1 byte)."""

    def Pack(self, builder):
        data = None
        if self.data is not None and len(self.data):
            payload = np.asarray(self.data, np.uint8).tobytes()
            builder.StartVector(1, len(payload), BUFFER_ALIGNMENT)
            builder.head -= len(payload)
            builder.Bytes[builder.head : builder.head + len(payload)] = payload
            data = builder.EndVector()
        tflite_schema.BufferStart(builder)
        if data is not None:
            tflite_schema.BufferAddData(builder, data)
        tflite_schema.BufferAddOffset(builder, self.offset)
        tflite_schema.BufferAddSize(builder, self.size)
        return tflite_schema.BufferEnd(builder)


def _aligned(buffer):
    aligned = _AlignedBufferT()
    aligned.data, aligned.offset, aligned.size = buffer.data, buffer.offset, buffer.size
    return aligned


def _signature_tensors(model, kind: str) -> dict[str, int]:
    """Signature key -> subgraph tensor index, for `inputs` or `outputs` of serving_default."""
    (signature,) = model.signatureDefs
    return {t.name.decode(): t.tensorIndex for t in getattr(signature, kind)}


def _raw_pixel_input(model):
    """A uint8 input read as raw 0..255 pixels (scale 1, zero point 0), as MediaPipe and the Task
    Library feed it.

    The converter gives the input the scale of the calibration images' range (1 only when they span
    0..255). The input feeds QUANTIZE ops (uint8 -> int8 requantization) onto the first layer's
    calibrated int8 range; with scale 1 on their input side they map the same pixels to the same
    int8 values (up to rounding), and pixels outside the calibrated range saturate as before.
    """
    subgraph = model.subgraphs[0]
    index = subgraph.inputs[0]
    tensor = subgraph.tensors[index]
    if tensor.type != tflite_schema.TensorType.UINT8:
        return
    q = tensor.quantization
    scale = [] if q is None or q.scale is None else [float(v) for v in q.scale]
    zero = [] if q is None or q.zeroPoint is None else [int(v) for v in q.zeroPoint]
    if scale == [1.0] and zero == [0]:
        return
    consumers = [op for op in subgraph.operators if index in [int(i) for i in op.inputs]]
    codes = [model.operatorCodes[op.opcodeIndex] for op in consumers]
    quantize = tflite_schema.BuiltinOperator.QUANTIZE
    if not codes or any(max(c.builtinCode, c.deprecatedBuiltinCode) != quantize for c in codes):
        raise ValueError(
            f"uint8 input quantized with scale {scale} and zero point {zero} and not read by "
            "QUANTIZE ops only: MediaPipe and the Task Library feed raw 0..255 pixels"
        )
    q.scale = np.asarray([1.0], np.float32)
    q.zeroPoint = np.asarray([0], np.int64)
    q.min = q.max = None


def populate(flatbuffer: bytes, metadata: bytes, files: dict[str, bytes], output_order=None):
    """The model with `metadata` as its TFLITE_METADATA and `files` appended as a zip.

    output_order: signature output names in the order the subgraph should list them.
    """
    model = tflite_schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    entries = model.metadata or []
    if any(m.name.decode() == METADATA_NAME for m in entries):
        raise ValueError(f"the model already has {METADATA_NAME}")
    if len(model.subgraphs) != 1:
        raise ValueError(f"expected one subgraph, found {len(model.subgraphs)}")
    _raw_pixel_input(model)
    if output_order is not None:
        outputs = _signature_tensors(model, "outputs")
        if sorted(outputs) != sorted(output_order):
            raise ValueError(f"model outputs {sorted(outputs)}, expected {sorted(output_order)}")
        model.subgraphs[0].outputs = [outputs[name] for name in output_order]
    model.buffers = [_aligned(b) for b in model.buffers] + [
        _aligned(tflite_schema.BufferT(data=np.frombuffer(metadata, np.uint8)))
    ]
    entry = tflite_schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [*entries, entry]
    builder = flatbuffers.Builder(len(flatbuffer) + len(metadata) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    out = io.BytesIO(bytes(builder.Output()))
    out.seek(0, io.SEEK_END)
    # Stored (uncompressed), fixed timestamps: the same model gives the same bytes.
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as archive:
        for name, payload in files.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), payload)
    return out.getvalue()


def add_metadata(flatbuffer: bytes, config, label_map, input_size) -> bytes:
    """Our converter output with the metadata of its task and `labels.txt` packed in."""
    height, width = (int(v) for v in input_size)
    model = tflite_schema.Model.GetRootAs(flatbuffer, 0)
    subgraph = model.Subgraphs(0)
    input_type = subgraph.Tensors(subgraph.Inputs(0)).Type()
    dtype = "uint8" if input_type == tflite_schema.TensorType.UINT8 else "float32"
    backbone = config.model.backbone
    classes = f"{label_map.num_classes} classes"
    if config.task == "detection":
        metadata = detection_metadata(
            f"SSDLite {backbone} {height}x{width}",
            f"SSDLite object detector ({backbone} backbone, {height}x{width} {dtype} input, "
            f"{classes}) with TFLite_Detection_PostProcess in the graph; exported by "
            "ondevice_vision.",
            (height, width),
            dtype,
        )
        order = DETECTION_OUTPUTS
    elif config.task == "segmentation":
        metadata = segmentation_metadata(
            f"LR-ASPP {backbone} {height}x{width}",
            f"LR-ASPP semantic segmenter ({backbone} backbone, {height}x{width} {dtype} input, "
            f"{classes}); exported by ondevice_vision.",
            (height, width),
            dtype,
        )
        order = None
    else:
        raise ValueError(f"unknown task {config.task!r}")
    return populate(flatbuffer, metadata, {LABELS_FILE: _label_text(label_map.names)}, order)


# --------------------------------------------------------------------------- reading back


def metadata_buffer(flatbuffer: bytes) -> bytes | None:
    """The TFLITE_METADATA flatbuffer of a model, or None."""
    model = tflite_schema.Model.GetRootAs(flatbuffer, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name().decode() == METADATA_NAME:
            return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    return None


def associated_files(flatbuffer: bytes) -> dict[str, bytes]:
    """The files packed after the model's flatbuffer (empty when there are none)."""
    data = io.BytesIO(flatbuffer)
    if not zipfile.is_zipfile(data):
        return {}
    with zipfile.ZipFile(data) as archive:
        return {name: archive.read(name) for name in archive.namelist()}
