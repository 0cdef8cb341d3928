"""Starts a model from another run's checkpoint, also when its class count differs.

`train.init_checkpoint` names a checkpoint in our trainer's layout (`tf.train.Checkpoint` with
`model=`, as the trainer and `ondevice-import` write it). Each model variable is found by its
object path inside `model` (e.g. `model/_operations/1/_operations/34/_kernel`: layer positions,
not layer names), which the object graph saved in the checkpoint maps to the key its value is
stored under, and copied when the shapes agree.
`train.init_checkpoint_mode` says which variables must come from the checkpoint:

- "all_but_class_layers" (alias "detection", the Object Detection API's name): every variable but
  those of the class-dependent layers (SSDLite's class predictor 1x1 convs, LR-ASPP's two logits
  convs), which keep their fresh initialisation for the new classes.
- "backbone" (alias "classification"): the feature extractor only; heads start fresh.
- "strict": every model variable, with the same shape (same model, same classes).

A variable the mode needs that is missing or has another shape (another backbone or width, a
different head) is an error naming the first layers that differ. Optimizer slots and the source
run's step are never read: the run starts at step 0 with fresh optimizer state. One log line
summarises what was restored and which layers were re-initialised.
"""

from __future__ import annotations

import collections
import dataclasses
import re

import keras
import tensorflow as tf
from absl import logging

# Private TF modules: the only way to learn the object path `tf.train.Checkpoint` gives a live
# variable, and to parse the object graph a checkpoint stores, without saving a checkpoint.
from tensorflow.core.protobuf import trackable_object_graph_pb2
from tensorflow.python.checkpoint import graph_view
from tensorflow.python.trackable import trackable_utils

from ondevice_vision.configs import checks

MODES = checks.INIT_CHECKPOINT_MODES
ALIASES = checks.INIT_CHECKPOINT_ALIASES
BACKBONE_LAYER = "backbone"
_LISTED = 5
_LISTED_LAYERS = 8
_OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"


@dataclasses.dataclass
class InitReport:
    path: str
    mode: str
    restored: list[str]  # variable names ("layer/weight") copied from the checkpoint
    reinitialised_layers: list[str]  # layers left with their fresh initialisation
    unused_in_checkpoint: int  # model variables of the checkpoint nobody read

    def summary(self) -> str:
        layers = ", ".join(self.reinitialised_layers[:_LISTED_LAYERS]) or "none"
        if len(self.reinitialised_layers) > _LISTED_LAYERS:
            layers += f" and {len(self.reinitialised_layers) - _LISTED_LAYERS} more"
        return (
            f"Initialised from {self.path} (mode {self.mode}): restored {len(self.restored)} "
            f"variables; re-initialised {len(self.reinitialised_layers)} layers: {layers}; "
            f"{self.unused_in_checkpoint} checkpoint variables unused; optimizer state and step "
            "not restored (the run starts at step 0)."
        )


def resolve_mode(mode: str) -> str:
    mode = ALIASES.get(mode, mode)
    if mode not in MODES:
        choices = ", ".join([*MODES, *ALIASES])
        raise ValueError(f"train.init_checkpoint_mode must be one of {choices}, got {mode!r}")
    return mode


def resolve_path(path: str) -> str:
    """A checkpoint prefix; a directory means its latest checkpoint."""
    if tf.io.gfile.isdir(path):
        found = tf.train.latest_checkpoint(path)
        if not found:
            raise FileNotFoundError(f"train.init_checkpoint: no checkpoint in {path}")
        return found
    if not tf.io.gfile.exists(path + ".index"):
        raise FileNotFoundError(f"train.init_checkpoint: checkpoint not found: {path}")
    return path


def _layer_names(model: keras.Model) -> dict[int, tuple[str, bool]]:
    """id(variable) -> ("parent/layer/weight", whether the layer is inside the backbone)."""
    names: dict[int, tuple[str, bool]] = {}

    def visit(layer, prefix, in_backbone):
        for child in getattr(layer, "layers", []):
            name = f"{prefix}{child.name}"
            inside = in_backbone or (layer is model and child.name == BACKBONE_LAYER)
            if getattr(child, "layers", None):
                visit(child, name + "/", inside)
            else:
                for v in child.weights:
                    names.setdefault(id(v), (f"{name}/{v.name}", inside))

    visit(model, "", False)
    return names


def _object_paths(model: keras.Model) -> dict[str, keras.Variable]:
    """The object path ("model/_operations/1/...") of each model variable, found the way
    `tf.train.Checkpoint(model=model)` finds it (breadth first, children in order)."""
    root = tf.train.Checkpoint(model=model)
    _, paths = graph_view.ObjectGraphView(root).breadth_first_traversal()
    path_of = {id(obj): trackable_utils.object_path_to_string(p) for obj, p in paths.items()}
    missing = [v.path for v in model.weights if id(v) not in path_of]
    if missing:
        raise RuntimeError(f"no checkpoint path for the model variables {missing[:_LISTED]}")
    # In the model's own order (backbone first), so errors name the earliest layers.
    return {path_of[id(v)]: v for v in model.weights}


def _checkpoint_keys(reader) -> dict[str, str]:
    """Object path under the root's `model` -> checkpoint key of the variable's value.

    Keys are not the paths: a checkpoint saves each variable under its shortest path from the
    root, and the trainer's (with the optimizer beside the model) stores trainable variables
    under `optimizer/_trainable_variables/N`. The object graph saved with the checkpoint links
    the two; it is walked breadth first from `model`, as the live model is.
    """
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor(_OBJECT_GRAPH_KEY))
    model = [c.node_id for c in graph.nodes[0].children if c.local_name == "model"]
    if not model:
        raise ValueError("the checkpoint has no `model` object: not one of our checkpoints")
    keys, seen = {}, {model[0]}
    queue = collections.deque([(model[0], "model")])
    while queue:
        node_id, path = queue.popleft()
        node = graph.nodes[node_id]
        for attribute in node.attributes:
            if attribute.name == "VARIABLE_VALUE":
                keys[path] = attribute.checkpoint_key
        for child in node.children:
            if child.node_id not in seen:
                seen.add(child.node_id)
                name = trackable_utils.escape_local_name(child.local_name)
                queue.append((child.node_id, f"{path}/{name}"))
    return keys


def _layer_of(name: str) -> str:
    return name.rsplit("/", 1)[0]


def initialise_from_checkpoint(
    model: keras.Model, path: str, mode: str, class_pattern: re.Pattern
) -> InitReport:
    """Copies the checkpoint's variables into `model` as `mode` says; returns what it did.

    `class_pattern` matches the names of the layers whose shapes depend on the number of classes
    (the task's `class_layers`)."""
    mode = resolve_mode(mode)
    path = resolve_path(path)
    reader = tf.train.load_checkpoint(path)
    shapes = reader.get_variable_to_shape_map()
    keys = _checkpoint_keys(reader)
    names = _layer_names(model)
    plan, skipped_layers = [], []
    mismatches: dict[str, str] = {}  # layer -> its first differing variable
    variables = _object_paths(model)
    class_layers = set()
    for object_path, variable in variables.items():
        key = keys.get(object_path, object_path)
        name, in_backbone = names.get(id(variable), (variable.path, False))
        layer = _layer_of(name)
        is_class = bool(class_pattern.search(layer.rsplit("/", 1)[-1]))
        if is_class:
            class_layers.add(layer)
        wanted = (
            mode == "strict"
            or (mode == "backbone" and in_backbone)
            or (mode == "all_but_class_layers" and not is_class)
        )
        if not wanted:
            if layer not in skipped_layers:
                skipped_layers.append(layer)
            continue
        source_shape = shapes.get(key)
        if source_shape is None or tuple(source_shape) != tuple(variable.shape):
            found = (
                "not in the checkpoint" if source_shape is None else f"checkpoint {source_shape}"
            )
            weight = name.rsplit("/", 1)[-1]
            mismatches.setdefault(
                layer, f"{layer} ({weight}: model {list(variable.shape)}, {found})"
            )
            continue
        plan.append((key, variable, name))
    if not class_layers:
        raise RuntimeError(f"no layer of {model.name} matches {class_pattern.pattern!r}")
    used = {key for key, _, _ in plan}
    unused = sorted(set(keys.values()) - used)
    if mode == "strict":
        model_paths = set(variables)
        for extra in (p for p in keys if p not in model_paths):
            mismatches.setdefault(
                extra, f"{keys[extra]} {shapes.get(keys[extra])} (not in the model)"
            )
    if mismatches:
        if mode == "strict" and set(mismatches) <= class_layers:
            hint = (
                "only the class-dependent layers differ (another class count): "
                "init_checkpoint_mode='all_but_class_layers' re-initialises them"
            )
        else:
            hint = (
                "the checkpoint is of another model: check model.backbone, depth_multiplier, "
                "reduced_tail and the head settings"
            )
        shown = "; ".join(list(mismatches.values())[:_LISTED])
        more = f" (and {len(mismatches) - _LISTED} more)" if len(mismatches) > _LISTED else ""
        raise ValueError(
            f"train.init_checkpoint {path} does not match the model (mode {mode}): "
            f"{len(mismatches)} layers differ, first: {shown}{more}. {hint}."
        )
    for key, variable, _ in plan:
        variable.assign(reader.get_tensor(key))
    report = InitReport(
        path=path,
        mode=mode,
        restored=[name for _, _, name in plan],
        reinitialised_layers=skipped_layers,
        unused_in_checkpoint=len(unused),
    )
    logging.info("%s", report.summary())
    return report
