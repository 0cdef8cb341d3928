"""TFLite Model Metadata (export/tflite_metadata.py) read back with MediaPipe's own generated
flatbuffer readers, and packed into a small converted model that must keep running unchanged.

MediaPipe's ObjectDetector / ImageSegmenter on real exports: tests/export/test_tflite_int8_*.py."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from mediapipe.tasks.metadata import image_segmenter_metadata_schema_py_generated as mp_segmenter
from mediapipe.tasks.metadata import metadata_schema_py_generated as mp_schema
from tensorflow.lite.python import schema_py_generated as tflite_schema

from ondevice_vision import predict
from ondevice_vision.export import tflite_flatbuffers, tflite_metadata

SIZE = (8, 12)


def _read(buffer: bytes):
    assert mp_schema.ModelMetadata.ModelMetadataBufferHasIdentifier(buffer, 0)
    return mp_schema.ModelMetadataT.InitFromObj(mp_schema.ModelMetadata.GetRootAs(buffer, 0))


def _check_image_input(tensor, dtype):
    assert tensor.name == b"image" and dtype.encode() in tensor.description
    assert tensor.content.contentPropertiesType == mp_schema.ContentProperties.ImageProperties
    assert tensor.content.contentProperties.colorSpace == mp_schema.ColorSpaceType.RGB
    (unit,) = tensor.processUnits
    assert unit.optionsType == mp_schema.ProcessUnitOptions.NormalizationOptions
    assert list(unit.options.mean) == [0.0] and list(unit.options.std) == [1.0]
    assert list(tensor.stats.min) == [0.0] and list(tensor.stats.max) == [255.0]


def test_detection_metadata_reads_back_with_mediapipe_schema():
    metadata = _read(tflite_metadata.detection_metadata("det", "about det", SIZE, "uint8"))
    assert (metadata.name, metadata.description) == (b"det", b"about det")
    assert metadata.minParserVersion == b"1.0.0"
    (subgraph,) = metadata.subgraphMetadata
    (image,) = subgraph.inputTensorMetadata
    _check_image_input(image, "uint8")
    location, category, score, count = subgraph.outputTensorMetadata
    assert [t.name for t in subgraph.outputTensorMetadata] == [
        b"location",
        b"category",
        b"score",
        b"number of detections",
    ]
    box = location.content.contentProperties
    assert location.content.contentPropertiesType == (
        mp_schema.ContentProperties.BoundingBoxProperties
    )
    assert list(box.index) == [1, 0, 3, 2]
    assert box.type == mp_schema.BoundingBoxType.BOUNDARIES
    assert box.coordinateType == mp_schema.CoordinateType.RATIO
    for tensor in (location, category, score):
        assert (tensor.content.range.min, tensor.content.range.max) == (2, 2)
    (labels,) = category.associatedFiles
    assert labels.name == b"labels.txt"
    assert labels.type == mp_schema.AssociatedFileType.TENSOR_VALUE_LABELS
    assert count.content is None and not subgraph.customMetadata


def test_segmentation_metadata_reads_back_with_mediapipe_schema():
    metadata = _read(tflite_metadata.segmentation_metadata("seg", "about", SIZE, "float32"))
    assert metadata.minParserVersion == b"1.5.0"
    (subgraph,) = metadata.subgraphMetadata
    _check_image_input(subgraph.inputTensorMetadata[0], "float32")
    (masks,) = subgraph.outputTensorMetadata
    assert masks.content.contentProperties.colorSpace == mp_schema.ColorSpaceType.GRAYSCALE
    assert (masks.content.range.min, masks.content.range.max) == (1, 2)
    (labels,) = masks.associatedFiles
    assert labels.type == mp_schema.AssociatedFileType.TENSOR_AXIS_LABELS
    (custom,) = subgraph.customMetadata
    assert custom.name == b"SEGMENTER_METADATA"
    data = bytes(custom.data)
    assert mp_segmenter.ImageSegmenterOptions.ImageSegmenterOptionsBufferHasIdentifier(data, 0)
    options = mp_segmenter.ImageSegmenterOptions.GetRootAs(data, 0)
    assert options.Activation() == mp_segmenter.Activation.SOFTMAX


class _Tiny(tf.Module):
    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.kernel = tf.Variable(rng.normal(0, 0.2, (3, 3, 3, 4)).astype("float32"))

    @tf.function(input_signature=[tf.TensorSpec([1, *SIZE, 3], tf.float32, name="images")])
    def serve(self, images):
        features = tf.nn.relu(tf.nn.conv2d(images / 255.0, self.kernel, 1, "SAME"))
        return {"b_mean": tf.reduce_mean(features, axis=[1, 2]), "a_map": features}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small float model and its int8 version calibrated on pixels 0..100 (input scale != 1)."""
    directory = str(tmp_path_factory.mktemp("tiny"))
    module = _Tiny()
    tf.saved_model.save(module, directory, signatures={"serving_default": module.serve})
    models = {"float": tf.lite.TFLiteConverter.from_saved_model(directory).convert()}
    converter = tf.lite.TFLiteConverter.from_saved_model(directory)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    rng = np.random.default_rng(1)
    converter.representative_dataset = lambda: (
        [rng.uniform(0, 100, (1, *SIZE, 3)).astype("float32")] for _ in range(4)
    )
    models["dark_int8"] = converter.convert()
    return models


def _run(flatbuffer, image):
    runner = Interpreter(model_content=flatbuffer).get_signature_runner("serving_default")
    return runner(images=image)


def _buffer_offsets(flatbuffer):
    model = tflite_schema.Model.GetRootAs(flatbuffer, 0)
    for i in range(model.BuffersLength()):
        buffer = model.Buffers(i)
        if buffer.DataLength():
            yield buffer._tab.Vector(buffer._tab.Offset(4))


def test_populate_keeps_the_model_running_and_its_buffers_aligned(tiny):
    model = tiny["float"]
    metadata = tflite_metadata.segmentation_metadata("tiny", "tiny", SIZE, "float32")
    files = {"labels.txt": b"a\nb\n"}
    populated = tflite_flatbuffers.populate(
        model, metadata, files, output_order=["b_mean", "a_map"]
    )
    assert populated == tflite_flatbuffers.populate(
        model, metadata, files, output_order=["b_mean", "a_map"]
    )  # the same bytes every time (fixed zip timestamps)
    assert tflite_flatbuffers.metadata_buffer(populated) == metadata
    assert tflite_flatbuffers.metadata_buffer(model) is None
    assert tflite_flatbuffers.associated_files(populated) == files
    assert all(
        offset % tflite_flatbuffers.BUFFER_ALIGNMENT == 0 for offset in _buffer_offsets(populated)
    )
    image = np.random.default_rng(2).uniform(0, 255, (1, *SIZE, 3)).astype("float32")
    want, got = _run(model, image), _run(populated, image)
    assert sorted(want) == sorted(got)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])
    # The subgraph lists its outputs in the requested order; the signature keeps its names.
    interpreter = Interpreter(model_content=populated)
    runner_outputs = interpreter.get_signature_list()["serving_default"]["outputs"]
    assert sorted(runner_outputs) == ["a_map", "b_mean"]
    shapes = [tuple(d["shape"]) for d in interpreter.get_output_details()]
    assert shapes == [(1, 4), (1, *SIZE, 4)]
    with pytest.raises(ValueError, match="already has TFLITE_METADATA"):
        tflite_flatbuffers.populate(populated, metadata, files)
    with pytest.raises(ValueError, match="expected"):
        tflite_flatbuffers.populate(model, metadata, files, output_order=["a_map", "nope"])


def test_uint8_input_takes_raw_pixels(tiny):
    """Calibrated on pixels 0..100, the converter's uint8 input has scale 100/255; the populated
    model takes raw pixels (scale 1, as MediaPipe feeds them) and computes the same outputs."""
    dark = tiny["dark_int8"]
    scale, zero = Interpreter(model_content=dark).get_input_details()[0]["quantization"]
    assert abs(scale - 1.0) > 0.1
    metadata = tflite_metadata.detection_metadata("tiny", "tiny", SIZE, "uint8")
    populated = tflite_flatbuffers.populate(dark, metadata, {})
    assert Interpreter(model_content=populated).get_input_details()[0]["quantization"] == (1.0, 0)
    pixels = np.random.default_rng(3).integers(0, 101, (1, *SIZE, 3))
    want = _run(dark, np.clip(np.round(pixels / scale + zero), 0, 255).astype(np.uint8))
    got = _run(populated, pixels.astype(np.uint8))
    for key in want:
        tolerance = 0.02 * np.ptp(want[key]) + 1e-6  # a rounding step of the first layer
        np.testing.assert_allclose(got[key], want[key], atol=tolerance)
        assert np.ptp(want[key]) > 0


def test_label_names_must_fit_on_a_line():
    assert tflite_metadata._label_text(["a b", "c"]) == b"a b\nc\n"
    for names in (["ok", ""], ["two\nlines"]):
        with pytest.raises(ValueError, match="cannot be a line of labels.txt"):
            tflite_metadata._label_text(names)


def test_predict_documents_the_mediapipe_lines_it_logs():
    for task in ("detection", "segmentation"):
        lines = predict.mediapipe_usage(task, "OUT/model.tflite").splitlines()
        assert len(lines) == 3
        for line in lines:
            assert f"    {line}\n" in predict.__doc__
