"""TFLite export: float, fp16 and full-integer int8 models with a converter configuration we own.

The model is first saved as a fixed-shape "TFLite graph" SavedModel (batch 1, input float32 pixels
0..255 [1, H, W, 3]; each task's graph is in export/detection.py and export/segmentation.py) and
converted with `TFLiteConverter.from_saved_model`; only TFLite builtin ops are allowed (no Select
TF ops; detection adds the OD API's TFLite_Detection_PostProcess custom op).

int8 is full-integer quantization calibrated on the images export/calibration.py picks:
TFLITE_BUILTINS_INT8 only, uint8 input; segmentation logits come out as uint8, detection outputs
are the post-processing op's float32 boxes / classes / scores (as in the OD API's Edge TPU models),
with DEQUANTIZE ops in front of that op. That graph is what the Edge TPU compiler takes.
"""

from __future__ import annotations

import os
import tempfile

import tensorflow as tf
from absl import logging

from ondevice_vision import files, tasks
from ondevice_vision.data.label_map import LabelMap
from ondevice_vision.export import edgetpu_ops
from ondevice_vision.export.calibration import Calibration
from ondevice_vision.export.export_info import (
    TFLITE_FILE,
    ExportInfo,
    check_replaceable,
    write_export_files,
)
from ondevice_vision.export.signatures import tflite_graph_archive
from ondevice_vision.export.tflite_metadata import add_metadata
from ondevice_vision.files import atomic_directory
from ondevice_vision.quantization import int8_graph


def make_converter(
    saved_model_dir: str, export, quantization: str, representative=None, quantization_aware=False
):
    """Our converter configuration: builtins only (+ the detection custom op), no Select TF ops.

    `quantization_aware`: the graph holds FakeQuant ops whose ranges replace calibration.
    """
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    converter.allow_custom_ops = export.allow_custom_ops
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        if representative is None and not quantization_aware:
            raise ValueError("int8 quantization needs a representative dataset")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if not quantization_aware:
            converter.representative_dataset = representative
            # With FakeQuant ranges the graph converts to int8 ops by itself (tests check it);
            # TF 2.21 rejects the int8-only op set without a representative dataset.
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = export.int8_output_type
    elif quantization != "none":
        raise ValueError(f"quantization must be none, fp16 or int8, got {quantization!r}")
    return converter


class GraphArchives:
    """TFLite graph archives kept in `directory` and reused between conversions of one model
    with one set of export settings: the float graph serves both the float and the fp16
    conversion (`ondevice-benchmark` writes it once, not twice: about 13 s of a SSDLite-V3-Small
    export on a 2-core CPU). int8 and quantization-aware graphs differ and are not shared."""

    def __init__(self, directory: str):
        self.directory = directory
        self._written = {}
        self._model = None

    def path(self, kind: str, export, write) -> str:
        """The archive of `kind` for `export`, calling write(directory) the first time."""
        if self._model is None:
            self._model = export.model
        elif export.model is not self._model:
            raise ValueError("GraphArchives hold one model's graphs; got another model")
        key = (kind, tuple(export.input_size))
        if key in self._written:
            logging.info("Converting the %s TFLite graph written for an earlier variant", kind)
        else:
            directory = os.path.join(self.directory, f"{kind}_{len(self._written)}")
            write(directory)
            self._written[key] = directory
        return self._written[key]


def convert(
    config,
    export,
    quantization: str = "none",
    num_calibration_images: int = 100,
    representative=None,
    quantization_state=None,
    graphs: GraphArchives | None = None,
) -> bytes:
    """The .tflite flatbuffer of a task export. `representative` is the calibration data (a
    generator factory, e.g. a calibration.Calibration; by default `num_calibration_images`
    images of the training pipeline).

    int8 converts the graph of `quantization/int8_graph.py` (hard-swish that XNNPACK runs in
    int8, docs/export_speed.md), or, with `quantization_state` (the QuantizationSimulator of a
    quantization-aware checkpoint), its fake-quantized graph: the learned ranges are used and
    nothing is calibrated. `graphs`: reuse the float graph archive of an earlier conversion.
    """
    input_size = export.input_size
    model = export.model
    aware = quantization == "int8" and quantization_state is not None
    if quantization == "int8" and representative is None and not aware:
        representative = Calibration(config, input_size, num_calibration_images)
    forward, track = None, ()
    if aware:
        forward = lambda images: quantization_state.forward(model, images)  # noqa: E731
        track = (quantization_state,)
    elif quantization == "int8":
        forward = lambda images: int8_graph.int8_inference(model, images)  # noqa: E731

    def write(directory):
        archive = tflite_graph_archive(export.tflite_graph_fn(forward), model, input_size, track)
        archive.write_out(directory, verbose=False)

    if graphs is not None and forward is None:
        graph_dir = graphs.path("float", export, write)
        return make_converter(graph_dir, export, quantization, representative, aware).convert()
    with tempfile.TemporaryDirectory(prefix="tflite_graph_") as graph_dir:
        write(graph_dir)
        converter = make_converter(graph_dir, export, quantization, representative, aware)
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
    quantization_state=None,
    calibration_dir: str | None = None,
    calibration_split: str | None = None,
    postprocess: str = "op",
    graphs: GraphArchives | None = None,
) -> str:
    """Writes model.tflite (with TFLite Model Metadata, see tflite_metadata), labels.json and
    export.json to `export_dir` atomically.

    `quantization_state`: see `convert` (int8 from a quantization-aware checkpoint).
    `calibration_dir` / `calibration_split`: the int8 calibration images (export/calibration.py).
    `graphs`: see `convert`.
    """
    if input_size is None:
        input_size = tasks.get_task(config).export_class().default_input_size(config, "tflite")
    export = tasks.get_task(config).make_export(
        config,
        model,
        label_map,
        input_size,
        use_regular_nms=use_regular_nms,
        postprocess=postprocess,
    )
    if (calibration_dir or calibration_split) and (
        quantization != "int8" or quantization_state is not None
    ):
        raise ValueError(
            "--calibration_dir / --calibration_split apply to post-training int8 only (a "
            "quantization-aware checkpoint uses its learned ranges)"
        )
    calibrates = quantization == "int8" and quantization_state is None and representative is None
    if calibrates:
        representative = Calibration(
            config, export.input_size, num_calibration_images, calibration_dir, calibration_split
        )
    flatbuffer = convert(
        config,
        export,
        quantization,
        num_calibration_images,
        representative,
        quantization_state,
        graphs,
    )
    # TFLite Model Metadata and labels.txt inside the file: MediaPipe Tasks load it unchanged.
    if export.has_metadata:
        flatbuffer = add_metadata(flatbuffer, export, label_map, export.input_size)
    details = dict(extra or {}, **export.tflite_details())
    if quantization == "int8" and quantization_state is not None:
        details["quantization_aware"] = True
    elif quantization == "int8":
        details["num_calibration_images"] = int(num_calibration_images)
        if isinstance(representative, Calibration):
            details["calibration"] = representative.report()
    if quantization == "int8":
        details["edgetpu"] = edgetpu_report(flatbuffer)
    info = ExportInfo(
        task=export.task,
        format="tflite",
        quantization=quantization,
        input_size=export.input_size,
        num_classes=label_map.num_classes,
        palette=None if palette is None else tuple(tuple(int(c) for c in p) for p in palette),
        signatures=("serving_default",),
        extra=details,
    )
    check_replaceable(export_dir, overwrite)
    with atomic_directory(export_dir, overwrite=overwrite) as tmp:
        with files.atomic_write(os.path.join(tmp, TFLITE_FILE), "wb") as f:
            f.write(flatbuffer)
        write_export_files(tmp, info, label_map, export.export_files())
    logging.info("Wrote %s (%d bytes)", os.path.join(export_dir, TFLITE_FILE), len(flatbuffer))
    return export_dir


def edgetpu_report(flatbuffer: bytes) -> dict:
    """export.json's "edgetpu": op versions the compiler refuses (it then parses nothing) and
    operators it does not run (it maps the graph only up to the first); both logged."""
    result = edgetpu_ops.report(flatbuffer)
    for refusal in result["version_refusals"]:
        logging.warning(
            "Edge TPU: the compiler refuses %s version %d (x%d; it parses up to version %d: "
            "%s), so it would not compile this file at all (export/edgetpu_ops.py)",
            refusal["op"],
            refusal["version"],
            refusal["count"],
            refusal["highest_accepted"],
            refusal["source"],
        )
    if result["operators_off"]:
        logging.warning(
            "Edge TPU: %d operators it does not run (%s); the compiler would map only the "
            "%d operators before the first, the rest runs on the CPU (export/edgetpu_ops.py)",
            result["operators_off"],
            ", ".join(f"{op} x{n}" for op, n in result["off_by_op"].items()),
            result["first_off"],
        )
    return result
