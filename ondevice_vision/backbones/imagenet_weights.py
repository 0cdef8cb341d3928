"""ImageNet weights for the MobileNetV3 backbones from keras.applications `.h5` files.

Our V3 layers carry keras.applications' names, so a weight file maps onto them by name. Matching by
name (not by order) lets the same file serve a backbone with or without the classifier and gives a
precise error when a file belongs to another variant or width.
"""

from __future__ import annotations

import os

import h5py
import keras
import numpy as np

BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/"
_CLASSIFIER_LAYERS = ("conv_2", "logits")


def weights_file_name(backbone: str, depth_multiplier: float, include_top: bool) -> str:
    """The keras.applications file name, e.g. weights_mobilenet_v3_large_224_1.0_float.h5."""
    if backbone == "mobilenet_edgetpu":
        raise ValueError(
            "No Keras ImageNet weights exist for mobilenet_edgetpu: train from scratch or "
            "initialise from one of our checkpoints (--config.init_checkpoint=...)."
        )
    minimal = backbone.endswith("_minimalistic")
    base = backbone.removesuffix("_minimalistic")
    size = base.rsplit("_", 1)[-1]
    if minimal and depth_multiplier != 1.0:
        raise ValueError(f"keras.applications ships {backbone} at depth_multiplier 1.0 only")
    if depth_multiplier not in (1.0, 0.75):
        raise ValueError(
            f"keras.applications ships depth multipliers 1.0 and 0.75, not {depth_multiplier}"
        )
    name = f"weights_mobilenet_v3_{size}{'_minimalistic' if minimal else ''}_224_{depth_multiplier}_float"
    return name + ("" if include_top else "_no_top_v2") + ".h5"


def resolve_weights(backbone: str, depth_multiplier: float, include_top: bool, path=None) -> str:
    """A local file if given (or found in the Keras cache), else a download from the official URL."""
    if path:
        if not os.path.exists(path):
            raise FileNotFoundError(f"ImageNet weight file not found: {path}")
        return path
    file_name = weights_file_name(backbone, depth_multiplier, include_top)
    return keras.utils.get_file(file_name, BASE_URL + file_name, cache_subdir="models")


def _read_h5_layers(path):
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in group.attrs:
            raise ValueError(f"{path}: not a Keras .h5 weight file (no 'layer_names' attribute)")
        layers = {}
        for raw in group.attrs["layer_names"]:
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            weight_names = group[name].attrs.get("weight_names", [])
            if len(weight_names):
                layers[name] = [
                    np.asarray(group[name][w.decode() if isinstance(w, bytes) else w])
                    for w in weight_names
                ]
        return layers


def load_keras_application_weights(backbone: keras.Model, path: str) -> list[str]:
    """Loads a keras.applications MobileNetV3 `.h5` file into `backbone`; returns the layers set.

    Every layer of ours that has weights must find a same-shaped entry in the file; the file's
    classifier may be left unused by a backbone without top. Anything else raises a ValueError
    naming the first layer that does not match.
    """
    file_layers = _read_h5_layers(path)
    ours = {layer.name: layer for layer in _layers_with_weights(backbone)}
    for name in file_layers:
        if name not in ours and name not in _CLASSIFIER_LAYERS:
            raise ValueError(
                f"{path}: layer {name!r} of the file does not exist in {backbone.name}"
            )
    updates = []
    for name, layer in ours.items():
        if name not in file_layers:
            raise ValueError(
                f"{path}: layer {name!r} of {backbone.name} has no weights in the file"
            )
        current = layer.get_weights()
        new = file_layers[name]
        shapes_ours = [tuple(w.shape) for w in current]
        shapes_file = [tuple(w.shape) for w in new]
        if shapes_ours != shapes_file:
            raise ValueError(
                f"{path}: layer {name!r} does not match: the model has weights {shapes_ours}, "
                f"the file has {shapes_file} (another variant or depth multiplier?)"
            )
        updates.append((layer, new))
    for layer, new in updates:
        layer.set_weights(new)
    return [layer.name for layer, _ in updates]


def _layers_with_weights(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers_with_weights(layer)
        elif layer.weights:
            yield layer


def load_imagenet_weights(backbone: keras.Model, path: str | None = None) -> str:
    """Loads ImageNet weights into a Backbone from `path` or the official URL; returns the file.

    `path` may also be a slim TF1 checkpoint prefix (PATH/model.ckpt of Google's published
    MobileNetV3 / MobileNetEdgeTPU checkpoints), the only ImageNet weights of MobileNetEdgeTPU.
    """
    from ondevice_vision.backbones import slim_checkpoint

    if path and slim_checkpoint.is_tf1_checkpoint(path):
        slim_checkpoint.load_slim_checkpoint(backbone, path)
        return path
    file_path = resolve_weights(
        backbone.backbone_name, backbone.depth_multiplier, backbone.include_top, path
    )
    load_keras_application_weights(backbone, file_path)
    return file_path
