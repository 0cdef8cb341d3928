"""Which operators of an int8 TFLite graph the Edge TPU can run, checked without its compiler.

The Edge TPU compiler cannot be installed everywhere (x86-64 Debian packages only), and it maps a
graph to the Edge TPU only from the input up to the first operator it cannot run: everything after
that runs on the CPU. `check_graph` finds such operators ahead of time, from the rules below.

Source: Coral, "TensorFlow models on the Edge TPU" (https://coral.ai/docs/edgetpu/models-intro/),
its model requirements and its table of supported operations with their known limitations, in our
words:

- Requirements: tensors are 8-bit quantized (int8 or uint8; int32 only for biases and for the
  shape / axis / size / padding operands of the ops below); shapes are fixed at compile time;
  weights and biases are compile-time constants; a tensor of more than 3 dimensions may have a size
  above 1 only in its 3 innermost dimensions (so batch 1).
- Operations and limits (`SUPPORTED`): elementwise Add, Sub, Mul, Maximum, Minimum; activations
  Logistic, ReLU, ReLU6, ReLUN1To1, Tanh; AveragePool2d and MaxPool2d without fused activation;
  Concatenation without fused activation, and a constant input only as the second of two inputs
  that is all zeros (a zero padding); Conv2d and DepthwiseConv2d with the same dilation in x and y;
  FullyConnected with the default weights format and a one-dimensional output; L2Normalization;
  Mean over x and/or y only; Pad along x and/or y only; Reshape; ResizeBilinear and
  ResizeNearestNeighbor on 3-dimensional (batch 1) input and output; Slice; Softmax on a 1-D input
  of at most 16,000 elements; SpaceToDepth; Split not along the batch; Squeeze; StridedSlice with
  all strides 1, no ellipsis mask and no new-axis mask; Quantize (Edge TPU runtime 13 and later).
- Not on the list, so on the CPU: HARD_SWISH (MobileNetV3's h-swish; the Coral maintainers say so
  in google-coral/edgetpu issues #272 and #353 and recommend the minimalistic MobileNetV3, which has
  none), TRANSPOSE (issues #242, #342: "Operation not supported"), DEQUANTIZE, and every op not in
  `SUPPORTED`.

Not checkable here: the table's "depending on input/output size, [a resize] may not be mapped to
avoid loss in precision", and the compiler's on-chip memory (parameters above about 8 MB are
streamed from the host). Ops that only the newest runtimes added (Pack, ExpandDims, Transpose,
TransposeConv, ...) are left out on purpose: a graph that needs them fails the check.

Operator versions (`check_versions`): TensorFlow numbers each builtin op's variants (a new input
type, a new option: CONV_2D v6 is TF 2.9's), and the Edge TPU compiler, built against an older
TensorFlow Lite, refuses a whole file whose op version it does not know ("Didn't find op for
builtin opcode 'X' version 'N' ... Model could not be parsed"): nothing is mapped at all. Coral
publishes no table of accepted versions; `COMPILER_MAX_VERSIONS` holds the highest version of each
op that compiler 16.0.384591198 (the last release) is known to accept, one below the version its
users saw refused, each with its thread. Ops not in that table are reported with their versions
but cannot be judged.

A detection graph is checked up to TFLite_Detection_PostProcess: that custom op and the DEQUANTIZE
ops that only feed it run on the CPU by design, after the Edge TPU part (as in the Object Detection
API's Edge TPU models).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from ondevice_vision.export.detection import POSTPROCESS_OP

SOURCE = "https://coral.ai/docs/edgetpu/models-intro/#supported-operations"
MAX_SOFTMAX_ELEMENTS = 16000

_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
_QUANTIZED = {schema.TensorType.INT8, schema.TensorType.UINT8}
_INT32 = schema.TensorType.INT32
_NUMPY_TYPES = {
    schema.TensorType.FLOAT32: np.float32,
    schema.TensorType.FLOAT16: np.float16,
    schema.TensorType.INT64: np.int64,
    schema.TensorType.INT32: np.int32,
    schema.TensorType.INT16: np.int16,
    schema.TensorType.INT8: np.int8,
    schema.TensorType.UINT8: np.uint8,
}
# int32 operands the ops below take besides their data: (op name, input position).
_INT32_OPERANDS = {
    ("CONV_2D", 2),
    ("DEPTHWISE_CONV_2D", 2),
    ("FULLY_CONNECTED", 2),
    ("RESHAPE", 1),
    ("MEAN", 1),
    ("PAD", 1),
    ("RESIZE_BILINEAR", 1),
    ("RESIZE_NEAREST_NEIGHBOR", 1),
    ("SLICE", 1),
    ("SLICE", 2),
    ("SPLIT", 0),
    ("STRIDED_SLICE", 1),
    ("STRIDED_SLICE", 2),
    ("STRIDED_SLICE", 3),
}
_CONSTANT_OPERANDS = {("CONV_2D", 1), ("DEPTHWISE_CONV_2D", 1), ("FULLY_CONNECTED", 1)} | {
    (op, 2) for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
}


COMPILER = "Edge TPU Compiler 16.0.384591198"
# Op -> (highest version the compiler parses, the public report of the next version's refusal).
COMPILER_MAX_VERSIONS = {
    "CONV_2D": (5, "https://github.com/google-coral/edgetpu/issues/631 (v6, TF 2.9.1)"),
    "QUANTIZE": (2, "https://github.com/google-coral/edgetpu/issues/879 (v3)"),
    "TRANSPOSE_CONV": (3, "https://github.com/google-coral/edgetpu/issues/845 (v4)"),
    "EXP": (1, "https://github.com/google-coral/libedgetpu/issues/71 (v2, TF 2.16)"),
}


@dataclasses.dataclass(frozen=True)
class VersionRefusal:
    op: str
    version: int
    count: int
    highest_accepted: int
    source: str

    def __str__(self):
        return (
            f"{self.op} version {self.version} x{self.count} (the compiler parses up to "
            f"version {self.highest_accepted}: {self.source})"
        )


@dataclasses.dataclass(frozen=True)
class Finding:
    op_index: int
    op: str
    problem: str

    def __str__(self):
        return f"op {self.op_index} {self.op}: {self.problem}"


class _Graph:
    """The first subgraph of a .tflite flatbuffer (object API), with helpers for the rules."""

    def __init__(self, flatbuffer: bytes):
        self.model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
        self.subgraph = self.model.subgraphs[0]

    def op_version(self, op) -> int:
        return int(self.model.operatorCodes[op.opcodeIndex].version)

    def op_name(self, op) -> str:
        code = self.model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        if builtin == schema.BuiltinOperator.CUSTOM:
            return code.customCode.decode()
        return _OP_NAMES.get(builtin, f"BUILTIN_{builtin}")

    def tensor(self, index):
        return self.subgraph.tensors[index]

    def shape(self, index) -> list[int]:
        tensor = self.tensor(index)
        return [] if tensor.shape is None else [int(d) for d in tensor.shape]

    def constant(self, index) -> np.ndarray | None:
        tensor = self.tensor(index)
        data = self.model.buffers[tensor.buffer].data
        if data is None or not len(data):
            return None
        dtype = _NUMPY_TYPES.get(tensor.type, np.uint8)
        return np.frombuffer(np.asarray(data, np.uint8).tobytes(), dtype).reshape(
            self.shape(index) or -1
        )

    def consumers(self, tensor_index) -> list:
        return [op for op in self.subgraph.operators if tensor_index in list(op.inputs)]


def _no_fused_activation(graph, op, name):
    options = op.builtinOptions
    if getattr(options, "fusedActivationFunction", 0) != schema.ActivationFunctionType.NONE:
        return "fused activation function (not allowed)"
    return None


def _same_dilation(graph, op, name):
    options = op.builtinOptions
    if options.dilationHFactor != options.dilationWFactor:
        return f"dilation {options.dilationHFactor}x{options.dilationWFactor} differs in x and y"
    return None


def _concatenation(graph, op, name):
    problem = _no_fused_activation(graph, op, name)
    if problem:
        return problem
    inputs = [int(i) for i in op.inputs]
    constants = [graph.constant(i) for i in inputs]
    for position, value in enumerate(constants):
        if value is None:
            continue
        zero = graph.tensor(inputs[position]).quantization.zeroPoint
        zero = int(zero[0]) if zero is not None and len(zero) else 0
        if len(inputs) != 2 or np.any(value.astype(np.int64) != zero):
            return "a constant input other than the all-zero second of two inputs"
    return None


def _fully_connected(graph, op, name):
    if op.builtinOptions.weightsFormat != schema.FullyConnectedOptionsWeightsFormat.DEFAULT:
        return "weights not in the default format"
    shape = graph.shape(int(op.outputs[0]))
    if sum(d > 1 for d in shape) > 1:
        return f"output {shape} is not one-dimensional"
    return None


def _axes(graph, op, position=1) -> list[int] | None:
    value = graph.constant(int(op.inputs[position]))
    return None if value is None else [int(a) for a in np.ravel(value)]


def _mean(graph, op, name):
    rank = len(graph.shape(int(op.inputs[0])))
    axes = _axes(graph, op)
    if axes is None:
        return "axes are not constant"
    axes = {a % rank for a in axes}
    if rank != 4 or not axes <= {1, 2}:
        return f"reduces axes {sorted(axes)} of a rank-{rank} tensor (x and/or y only)"
    return None


def _pad(graph, op, name):
    paddings = graph.constant(int(op.inputs[1]))
    if paddings is None:
        return "paddings are not constant"
    padded = [axis for axis, (a, b) in enumerate(paddings.reshape(-1, 2)) if a or b]
    if len(paddings) != 4 or not set(padded) <= {1, 2}:
        return f"pads axes {padded} (x and/or y only)"
    return None


def _resize(graph, op, name):
    for index in (int(op.inputs[0]), int(op.outputs[0])):
        shape = graph.shape(index)
        if len(shape) != 4 or shape[0] != 1:
            return f"tensor {shape} is not 3-dimensional (batch 1)"
    return None


def _softmax(graph, op, name):
    shape = graph.shape(int(op.inputs[0]))
    if sum(d > 1 for d in shape) > 1 or int(np.prod(shape)) > MAX_SOFTMAX_ELEMENTS:
        return f"input {shape}: only 1-D inputs of at most {MAX_SOFTMAX_ELEMENTS} elements"
    return None


def _split(graph, op, name):
    axes = _axes(graph, op, position=0)
    rank = len(graph.shape(int(op.inputs[1])))
    if axes is None or any(a % rank == 0 for a in axes):
        return "splits along the batch dimension (or a non-constant axis)"
    return None


def _strided_slice(graph, op, name):
    strides = graph.constant(int(op.inputs[3]))
    options = op.builtinOptions
    if strides is None or np.any(strides != 1):
        return f"strides {None if strides is None else strides.tolist()} (all must be 1)"
    if options.ellipsisMask or options.newAxisMask:
        return "ellipsis or new-axis mask"
    return None


# Op -> limit check (None: no limit beyond the general requirements).
SUPPORTED = {
    "ADD": None,
    "SUB": None,
    "MUL": None,
    "MAXIMUM": None,
    "MINIMUM": None,
    "LOGISTIC": None,
    "RELU": None,
    "RELU6": None,
    "RELU_N1_TO_1": None,
    "TANH": None,
    "AVERAGE_POOL_2D": _no_fused_activation,
    "MAX_POOL_2D": _no_fused_activation,
    "CONCATENATION": _concatenation,
    "CONV_2D": _same_dilation,
    "DEPTHWISE_CONV_2D": _same_dilation,
    "FULLY_CONNECTED": _fully_connected,
    "L2_NORMALIZATION": None,
    "MEAN": _mean,
    "PAD": _pad,
    "RESHAPE": None,
    "RESIZE_BILINEAR": _resize,
    "RESIZE_NEAREST_NEIGHBOR": _resize,
    "SLICE": None,
    "SOFTMAX": _softmax,
    "SPACE_TO_DEPTH": None,
    "SPLIT": _split,
    "SQUEEZE": None,
    "STRIDED_SLICE": _strided_slice,
    "QUANTIZE": None,
}


def _postprocess_tail(graph) -> set[int]:
    """Indices of the post-processing op and of the DEQUANTIZE ops that only feed it."""
    ops = graph.subgraph.operators
    tail = {i for i, op in enumerate(ops) if graph.op_name(op) == POSTPROCESS_OP}
    for i, op in enumerate(ops):
        if graph.op_name(op) != "DEQUANTIZE":
            continue
        consumers = graph.consumers(int(op.outputs[0]))
        if consumers and all(ops.index(c) in tail for c in consumers):
            tail.add(i)
    return tail


def _tensor_problems(graph, op, name) -> list[str]:
    problems = []
    for position, index in enumerate(int(i) for i in op.inputs):
        if index < 0:
            continue
        tensor = graph.tensor(index)
        allowed = _QUANTIZED | ({_INT32} if (name, position) in _INT32_OPERANDS else set())
        if tensor.type not in allowed:
            problems.append(f"input {position} is {_TYPE_NAMES.get(tensor.type, tensor.type)}")
        if (name, position) in _CONSTANT_OPERANDS and graph.constant(index) is None:
            problems.append(f"input {position} (weights / bias) is not a constant")
    for index in (int(i) for i in op.outputs):
        tensor = graph.tensor(index)
        if tensor.type not in _QUANTIZED:
            problems.append(f"output is {_TYPE_NAMES.get(tensor.type, tensor.type)}")
    for index in [int(i) for i in op.inputs if i >= 0] + [int(i) for i in op.outputs]:
        tensor = graph.tensor(index)
        signature = tensor.shapeSignature
        if signature is not None and any(int(d) < 0 for d in signature):
            problems.append(f"tensor {tensor.name.decode()} has a dynamic shape")
        shape = graph.shape(index)
        # The rank limit is on the data flowing through the graph, not on weights.
        is_data = graph.constant(index) is None
        if is_data and len(shape) > 3 and any(d > 1 for d in shape[:-3]):
            problems.append(f"tensor {shape}: only the 3 innermost dimensions may exceed 1")
    return problems


def check_graph(flatbuffer: bytes) -> list[Finding]:
    """Every operator (up to the detection post-processing) that the Edge TPU cannot run."""
    graph = _Graph(flatbuffer)
    tail = _postprocess_tail(graph)
    findings = []
    for i, op in enumerate(graph.subgraph.operators):
        if i in tail:
            continue
        name = graph.op_name(op)
        if name not in SUPPORTED:
            findings.append(Finding(i, name, f"not a supported Edge TPU operation ({SOURCE})"))
            continue
        problems = _tensor_problems(graph, op, name)
        limit = SUPPORTED[name]
        if limit is not None and not problems:
            problem = limit(graph, op, name)
            problems += [problem] if problem else []
        findings += [Finding(i, name, p) for p in dict.fromkeys(problems)]
    return findings


def op_versions(flatbuffer: bytes) -> dict[str, dict[int, int]]:
    """Op name -> {version: how many operators of the graph use it}, read from the flatbuffer."""
    graph = _Graph(flatbuffer)
    versions: dict[str, dict[int, int]] = {}
    for op in graph.subgraph.operators:
        by_version = versions.setdefault(graph.op_name(op), {})
        version = graph.op_version(op)
        by_version[version] = by_version.get(version, 0) + 1
    return versions


def check_versions(flatbuffer: bytes) -> list[VersionRefusal]:
    """Every (op, version) of the graph newer than the Edge TPU compiler parses; any one of them
    makes it refuse the whole file."""
    refusals = []
    for op, by_version in op_versions(flatbuffer).items():
        if op not in COMPILER_MAX_VERSIONS:
            continue
        highest, source = COMPILER_MAX_VERSIONS[op]
        for version, count in sorted(by_version.items()):
            if version > highest:
                refusals.append(VersionRefusal(op, version, count, highest, source))
    return refusals


def summary(findings: list[Finding], refusals: list[VersionRefusal] = (), versions=None) -> dict:
    """What `ondevice-export` logs and keeps in export.json: whether the compiler parses the file
    (op versions), how much of the graph maps, and every op's versions."""
    off_by_op: dict[str, int] = {}
    for f in findings:
        off_by_op[f.op] = off_by_op.get(f.op, 0) + 1
    result = {
        "compiler": COMPILER,
        "compiles": not refusals,
        "version_refusals": [dataclasses.asdict(r) for r in refusals],
        "operators_off": len(findings),
        "first_off": findings[0].op_index if findings else None,
        "off_by_op": off_by_op,
    }
    if versions is not None:
        result["op_versions"] = {
            op: {str(v): n for v, n in sorted(by_version.items())}
            for op, by_version in sorted(versions.items())
        }
    return result


def report(flatbuffer: bytes) -> dict:
    """`summary` of a whole file: operator rules, op versions, and the versions in use."""
    return summary(check_graph(flatbuffer), check_versions(flatbuffer), op_versions(flatbuffer))


def operator_counts(flatbuffer: bytes) -> dict[str, int]:
    """Op name -> how many times the graph uses it."""
    graph = _Graph(flatbuffer)
    counts: dict[str, int] = {}
    for op in graph.subgraph.operators:
        name = graph.op_name(op)
        counts[name] = counts.get(name, 0) + 1
    return counts
