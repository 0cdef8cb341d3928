"""TFLite flatbuffers: the TFLite Model Metadata writer, packing metadata into a model, reading
it back.

The convention (TensorFlow Lite metadata, schema `metadata_schema.fbs`, file identifier "M001",
as MediaPipe's `tasks/cc/metadata/metadata_extractor.cc` reads it): a `ModelMetadata` flatbuffer
stored in one of the model's buffers, named by an entry "TFLITE_METADATA" of the model's
`metadata` list, and the associated files (e.g. `labels.txt`) appended after the flatbuffer as an
uncompressed zip archive. What our models' metadata says is in tflite_metadata.py.

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

METADATA_NAME = "TFLITE_METADATA"
MODEL_METADATA_IDENTIFIER = b"M001"
TFLITE_IDENTIFIER = b"TFL3"
# The converter aligns weight buffers to 16 bytes (Buffer.data is force_align: 16 in schema.fbs).
BUFFER_ALIGNMENT = 16

# Enum values of metadata_schema.fbs.
TENSOR_AXIS_LABELS = 2
TENSOR_VALUE_LABELS = 3
COLOR_RGB = 1
COLOR_GRAYSCALE = 2
BOX_BOUNDARIES = 1
COORDINATES_RATIO = 0
# Union type tags: ContentProperties and ProcessUnitOptions (NONE is 0).
FEATURE_PROPERTIES = 1
IMAGE_PROPERTIES = 2
BOUNDING_BOX_PROPERTIES = 3
NORMALIZATION_OPTIONS = 1


class MetadataWriter:
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
