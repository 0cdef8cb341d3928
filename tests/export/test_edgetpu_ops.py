"""Edge TPU readiness without the compiler: export/edgetpu_ops.py's reading of Coral's supported
operations, on our int8 graphs for Edge TPU backbones and on small graphs that break the rules.

The V3 graphs (h-swish) are checked where they are exported: tests/export/test_tflite_int8_*.py."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from ondevice_vision import tasks
from ondevice_vision.configs import (
    lraspp_mobilenet_v3_small_shapes,
    ssdlite_mobilenet_edgetpu_320_coco,
)
from ondevice_vision.data.label_map import LabelMap
from ondevice_vision.export import edgetpu_ops, tflite


def _random_images(size, count=2):
    rng = np.random.default_rng(0)

    def generate():
        for _ in range(count):
            yield [rng.uniform(0, 255, (1, *size, 3)).astype("float32")]

    return generate


def _int8_graph(config) -> bytes:
    """The int8 graph `ondevice-export --quantization=int8` converts (weights do not matter for
    which operators it holds; two random images calibrate it)."""
    model = tasks.get_task(config).build_model(config)
    size = tuple(config.model.input_size)
    labels = LabelMap.contiguous([f"class_{i}" for i in range(config.model.num_classes)])
    export = tasks.get_task(config).make_export(config, model, labels, size)
    return tflite.convert(config, export, "int8", representative=_random_images(size))


def test_ssdlite_mobilenet_edgetpu_runs_entirely_on_the_edge_tpu():
    """The zoo's Edge TPU detector (its recipe at a smaller input and class count, which change
    tensor sizes, not operators)."""
    config = ssdlite_mobilenet_edgetpu_320_coco.get_config("smoke")
    config.model.num_classes = 4
    graph = _int8_graph(config)
    counts = edgetpu_ops.operator_counts(graph)
    assert counts[edgetpu_ops.POSTPROCESS_OP] == 1 and counts["CONV_2D"] > 50
    assert edgetpu_ops.check_graph(graph) == []


def test_lraspp_on_a_minimalistic_backbone_runs_entirely_on_the_edge_tpu():
    """LR-ASPP with the paper's attention pooling, which the fixed-shape export turns into
    AVERAGE_POOL_2D, on MobileNetV3-Small-minimalistic (no h-swish, no squeeze-excite)."""
    config = lraspp_mobilenet_v3_small_shapes.get_config("smoke")
    config.model.backbone = "mobilenet_v3_small_minimalistic"
    graph = _int8_graph(config)
    counts = edgetpu_ops.operator_counts(graph)
    assert counts["AVERAGE_POOL_2D"] == 1 and counts["RESIZE_BILINEAR"] >= 2
    assert "TRANSPOSE" not in counts and "FULLY_CONNECTED" not in counts
    assert edgetpu_ops.check_graph(graph) == []


class _Offenders(tf.Module):
    """One branch per rule, and one branch that keeps to all of them."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.kernel = tf.Variable(rng.normal(0, 0.3, (3, 3, 3, 4)).astype("float32"))

    @tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 3], tf.float32)])
    def serve(self, images):
        x = tf.nn.conv2d(images / 255.0, self.kernel, 1, "SAME")
        return {
            "ok": tf.reduce_mean(tf.nn.relu6(x), axis=[1, 2]),
            "hard_swish": x * tf.nn.relu6(x + 3.0) / 6.0,
            "channel_mean": tf.reduce_mean(x, axis=3, keepdims=True),
            "dilated": tf.nn.conv2d(images, self.kernel, 1, "SAME", dilations=(2, 1)),
            "strided": x[:, ::2, :, :] + 1.0,
        }


@pytest.fixture(scope="module")
def offenders(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("offenders"))
    module = _Offenders()
    tf.saved_model.save(module, directory, signatures={"serving_default": module.serve})
    converter = tf.lite.TFLiteConverter.from_saved_model(directory)
    graphs = {"float": converter.convert()}
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.uint8
    converter.representative_dataset = _random_images((16, 16), count=4)
    graphs["int8"] = converter.convert()
    return graphs


def test_each_broken_rule_is_found_and_named(offenders):
    findings = edgetpu_ops.check_graph(offenders["int8"])
    found = {(f.op, f.problem.split(" (")[0].split(":")[0]) for f in findings}
    counts = edgetpu_ops.operator_counts(offenders["int8"])
    assert counts["HARD_SWISH"] == 1  # the converter fuses x * relu6(x + 3) / 6
    assert ("HARD_SWISH", "not a supported Edge TPU operation") in found
    assert any(op == "MEAN" and "reduces axes [3]" in p for op, p in found), found
    assert any(op == "CONV_2D" and "dilation 2x1" in p for op, p in found), found
    assert any(op == "STRIDED_SLICE" and "strides [1, 2, 1, 1]" in p for op, p in found), found
    # The compliant branch (conv, relu6, mean over x and y, quantize) is not reported.
    assert len(findings) == 4, [str(f) for f in findings]


def test_float_graphs_are_off_the_edge_tpu(offenders):
    findings = edgetpu_ops.check_graph(offenders["float"])
    assert findings and all(
        "FLOAT32" in f.problem or "not a supported" in f.problem for f in findings
    )
    assert {f.op_index for f in findings} == set(
        range(sum(edgetpu_ops.operator_counts(offenders["float"]).values()))
    )


def _with_versions(flatbuffer: bytes, versions: dict[str, int]) -> bytes:
    """The graph with some ops' version numbers raised, as a newer TensorFlow writes them."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    for code in model.operatorCodes:
        name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode))
        if name in versions:
            code.version = versions[name]
    builder = flatbuffers.Builder(len(flatbuffer))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def test_op_versions_are_read_and_newer_ones_refused(offenders):
    """What TF 2.21 writes passes; CONV_2D v6 (TF 2.9's) and QUANTIZE v3, which the compiler
    refuses (google-coral/edgetpu #631, #879), are reported with op, version and count."""
    graph = offenders["int8"]
    versions = edgetpu_ops.op_versions(graph)
    counts = edgetpu_ops.operator_counts(graph)
    assert {op: sum(v.values()) for op, v in versions.items()} == counts
    assert versions["CONV_2D"] == {3: counts["CONV_2D"]}  # TF 2.21's int8 CONV_2D
    assert edgetpu_ops.check_versions(graph) == []
    assert edgetpu_ops.report(graph)["compiles"]

    newer = _with_versions(graph, {"CONV_2D": 6, "QUANTIZE": 3})
    refusals = {
        (r.op, r.version, r.count, r.highest_accepted) for r in edgetpu_ops.check_versions(newer)
    }
    assert refusals == {
        ("CONV_2D", 6, counts["CONV_2D"], 5),
        ("QUANTIZE", 3, counts["QUANTIZE"], 2),
    }
    report = edgetpu_ops.report(newer)
    assert not report["compiles"] and report["op_versions"]["CONV_2D"] == {"6": counts["CONV_2D"]}
    assert (
        "issues/631" in report["version_refusals"][0]["source"]
        or "issues/879" in (report["version_refusals"][0]["source"])
    )
    # The operator rules are unchanged by the version numbers.
    assert edgetpu_ops.check_graph(newer) == edgetpu_ops.check_graph(graph)
