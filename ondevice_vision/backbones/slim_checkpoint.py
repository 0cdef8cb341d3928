"""TF1 (slim) checkpoints into our backbones: the published MobileNetV3 / MobileNetEdgeTPU weights.

Google's ImageNet checkpoints of these networks (tensorflow/models, research/slim/nets/mobilenet)
and the backbones inside the Object Detection API's zoo checkpoints are TF1 name-based
checkpoints. Every variable of ours has exactly one slim name (`backbone_variable_names`); the
loader reads the checkpoint with `tf.train.load_checkpoint` and assigns by name.

Strict by design: a variable of ours without a counterpart, a checkpoint variable nobody takes, or
a shape that differs is an error naming them. Training state (global step, optimizer slots,
moving-average shadows) and the quantisation ranges of fake-quant trained checkpoints are skipped
and reported, and so is a classifier the model has no use for.
"""

from __future__ import annotations

import dataclasses
import re

import keras
import numpy as np
import tensorflow as tf

# (pattern, reason) of checkpoint variables that are not weights of the network.
SKIPPED_PATTERNS = (
    (re.compile(r"(^|/)global_step$"), "training step"),
    (re.compile(r"/(Momentum|RMSProp(_1)?|Adam(_1)?|ExponentialMovingAverage)$"), "training state"),
    (re.compile(r"^(beta1_power|beta2_power)$"), "training state"),
    (re.compile(r"/(act_quant|weights_quant)(/|$)|/(min|max)$"), "quantisation range"),
)
_CLASSIFIER_LAYERS = {"conv_2": "Conv_2", "logits": "Logits/Conv2d_1c_1x1"}
_FIXED_LAYERS = {"conv": "Conv", "conv_1": "Conv_1", **_CLASSIFIER_LAYERS}
_BLOCK_PARTS = {
    "expand": "expand",
    "fused": "expand",  # slim builds the fused block's full conv as its expansion
    "depthwise": "depthwise",
    "project": "project",
    "squeeze_excite_conv": "squeeze_excite/Conv",
    "squeeze_excite_conv_1": "squeeze_excite/Conv_1",
}
_BLOCK_NAME = re.compile(r"^(?:expanded_conv_(\d+)_|expanded_conv_|block_(\d+)_)(\w+)$")


class CheckpointMismatchError(ValueError):
    pass


@dataclasses.dataclass
class ImportReport:
    path: str
    assigned: list[str] = dataclasses.field(default_factory=list)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> reason
    averaged: list[str] = dataclasses.field(default_factory=list)  # moving averages used

    def summary(self) -> str:
        reasons = {}
        for reason in self.skipped.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        skipped = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items())) or "none"
        return f"{self.path}: assigned {len(self.assigned)} variables; skipped: {skipped}"


def slim_scope(model_name: str) -> str:
    return "MobilenetEdgeTPU" if model_name == "mobilenet_edgetpu" else "MobilenetV3"


def layer_variable_names(layer, scope: str) -> dict[str, keras.Variable]:
    """Slim names of one conv / depthwise / batch-norm layer's variables under `scope`."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return {
            f"{scope}/BatchNorm/{attr}": getattr(layer, attr)
            for attr in ("gamma", "beta", "moving_mean", "moving_variance")
            if getattr(layer, attr, None) is not None
        }
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        names = {f"{scope}/depthwise_weights": layer.kernel}
    elif isinstance(layer, keras.layers.Conv2D):
        names = {f"{scope}/weights": layer.kernel}
    else:
        raise CheckpointMismatchError(f"no slim counterpart for layer {layer.name!r}")
    if layer.use_bias:
        names[f"{scope}/biases"] = layer.bias
    return names


def _backbone_layer_scope(layer_name: str) -> str | None:
    bn = layer_name.endswith("_bn")
    base = layer_name[: -len("_bn")] if bn else layer_name
    if base in _FIXED_LAYERS:
        scope = _FIXED_LAYERS[base]
    else:
        match = _BLOCK_NAME.match(base)
        if match is None or match.group(3) not in _BLOCK_PARTS:
            return None
        index = int(match.group(1) or match.group(2) or 0)
        block = "expanded_conv" if index == 0 else f"expanded_conv_{index}"
        scope = f"{block}/{_BLOCK_PARTS[match.group(3)]}"
    return scope  # the BatchNorm suffix is added by layer_variable_names


def backbone_variable_names(backbone, prefix: str = "") -> dict[str, keras.Variable]:
    """{slim checkpoint name: our variable} for every variable of a Backbone."""
    scope = prefix + slim_scope(backbone.backbone_name)
    names = {}
    for layer in backbone.layers:
        if not layer.weights:
            continue
        layer_scope = _backbone_layer_scope(layer.name)
        if layer_scope is None:
            raise CheckpointMismatchError(f"no slim counterpart for layer {layer.name!r}")
        names.update(layer_variable_names(layer, f"{scope}/{layer_scope}"))
    return names


def skip_reason(name: str) -> str | None:
    for pattern, reason in SKIPPED_PATTERNS:
        if pattern.search(name):
            return reason
    return None


def _listing(names, limit=8) -> str:
    names = sorted(names)
    more = f" ... ({len(names)} in all)" if len(names) > limit else f" ({len(names)})"
    return ", ".join(names[:limit]) + more


MOVING_AVERAGE_SUFFIX = "/ExponentialMovingAverage"


def assign_from_checkpoint(
    variables: dict[str, keras.Variable], path: str, unused_ok=None, moving_averages=False
) -> ImportReport:
    """Assigns every variable of `variables` from the TF1 checkpoint at `path`.

    `unused_ok(name)` may return a reason for leaving a checkpoint variable unused (a classifier the
    model does not have); any other unused variable, missing one or shape difference raises.
    `moving_averages`: where the checkpoint holds `NAME/ExponentialMovingAverage` (the averages
    tf.train.ExponentialMovingAverage kept while the OD API or slim trained it), that value is
    assigned instead of NAME's (the OD API's `use_moving_averages` export); the report's
    `averaged` lists them.
    """
    try:
        reader = tf.train.load_checkpoint(path)
    except (tf.errors.NotFoundError, tf.errors.DataLossError, ValueError) as e:
        raise FileNotFoundError(f"cannot read a TF1 checkpoint at {path}: {e}") from e
    shapes = reader.get_variable_to_shape_map()
    report = ImportReport(path=path)
    missing = [name for name in variables if name not in shapes]
    unused = []
    for name in shapes:
        if name in variables:
            continue
        reason = skip_reason(name) or (unused_ok(name) if unused_ok else None)
        if reason:
            report.skipped[name] = reason
        else:
            unused.append(name)
    wrong = [
        f"{name} (checkpoint {list(shapes[name])}, model {list(var.shape)})"
        for name, var in variables.items()
        if name in shapes and tuple(shapes[name]) != tuple(var.shape)
    ]
    problems = []
    if missing:
        problems.append(f"not in the checkpoint: {_listing(missing)}")
    if unused:
        problems.append(f"in the checkpoint but not in the model: {_listing(unused)}")
    if wrong:
        problems.append(f"of another shape: {_listing(wrong)}")
    if problems:
        raise CheckpointMismatchError(
            f"{path} does not match the model (another architecture, width or number of "
            f"classes?). Variables " + "; ".join(problems)
        )
    if moving_averages and not any(n.endswith(MOVING_AVERAGE_SUFFIX) for n in shapes):
        raise CheckpointMismatchError(
            f"{path} holds no ExponentialMovingAverage variables: import it without "
            "--use_moving_averages"
        )
    for name, var in variables.items():
        source = name
        if moving_averages and name + MOVING_AVERAGE_SUFFIX in shapes:
            source = name + MOVING_AVERAGE_SUFFIX
            report.averaged.append(name)
        var.assign(np.asarray(reader.get_tensor(source), dtype=var.dtype))
        report.assigned.append(name)
    return report


def is_tf1_checkpoint(path: str) -> bool:
    """A TF1/TF2 name-based checkpoint prefix (PATH/model.ckpt with PATH/model.ckpt.index)."""
    return bool(path) and tf.io.gfile.exists(path + ".index")


def load_slim_checkpoint(backbone, path: str, moving_averages: bool = False) -> ImportReport:
    """A slim ImageNet checkpoint into a Backbone (its classifier only if the backbone has one).

    Slim's classifiers have 1001 outputs (class 0 is "background"): a backbone with
    include_top=True must be built with num_classes=1001 to take them.
    """
    variables = backbone_variable_names(backbone)
    scope = slim_scope(backbone.backbone_name)
    ours = {name.rsplit("/", 1)[0] for name in variables}

    def beyond_the_model(name):
        # A backbone restricted to early endpoints (SSDLite's EdgeTPU taps block 21) or built
        # without top has no use for the checkpoint's last layers.
        for layer in ("Conv_1", "Conv_2", "Logits/Conv2d_1c_1x1"):
            if name.startswith(f"{scope}/{layer}/") and not any(
                o.startswith(f"{scope}/{layer}") for o in ours
            ):
                return "layer not in the model (classifier or head)"
        return None

    return assign_from_checkpoint(variables, path, beyond_the_model, moving_averages)
