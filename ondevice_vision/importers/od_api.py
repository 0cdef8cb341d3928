"""Object Detection API (TF1) SSDLite checkpoints into our SSDLiteDetector.

The zoo's `ssdlite_mobilenet_v3_{large,small}_320x320_coco` and MobileNetEdgeTPU SSDLite
checkpoints name their variables after the TF1 scopes: the backbone under
`FeatureExtractor/<slim scope>/`, the extra layers as `multi_resolution_feature_maps` names them
(`layer_<N>_1_Conv2d_<k>_1x1_<d/2>`, `layer_<N>_2_Conv2d_<k>_3x3_s2_<d>[_depthwise]`, N the last
backbone layer) and the predictors as `BoxPredictor_<l>/{BoxEncoding,Class}Predictor[_depthwise]`.
"""

from __future__ import annotations

import re

from ondevice_vision.backbones import slim_checkpoint
from ondevice_vision.backbones import specs as specs_lib
from ondevice_vision.backbones.slim_checkpoint import (
    CheckpointMismatchError,
    ImportReport,
    layer_variable_names,
)

_EXTRA = re.compile(r"^extra_(\d+)_(1x1_reduce|3x3_s2_depthwise|1x1)(_bn)?$")
_PREDICTOR = re.compile(r"^(box|class)_predictor_(\d+)_(depthwise|conv)(_bn)?$")


def detector_variable_names(detector) -> dict:
    """{Object Detection API checkpoint name: our variable} for every variable of the detector."""
    backbone = detector.backbone
    scope = f"FeatureExtractor/{slim_checkpoint.slim_scope(backbone.backbone_name)}"
    names = slim_checkpoint.backbone_variable_names(backbone, prefix="FeatureExtractor/")
    # Slim numbers its layers from 1 with the stem conv first, so block i is layer i + 2; the
    # extra layers are named after the layer of the second tap (a block or the head conv).
    spec = specs_lib.get_spec(backbone.backbone_name)
    c5 = len(spec.blocks) if spec.ssd_c5_block is None else spec.ssd_c5_block
    base = f"layer_{c5 + 2}"
    layers = {layer.name: layer for layer in detector.layers}
    for name, layer in layers.items():
        if name == "backbone" or not layer.weights:
            continue
        extra = _EXTRA.match(name)
        predictor = _PREDICTOR.match(name)
        if extra:
            k, part = int(extra.group(1)), extra.group(2)
            depth = layers[f"extra_{k}_1x1"].filters
            if part == "1x1_reduce":
                layer_scope = f"{base}_1_Conv2d_{k}_1x1_{layers[f'extra_{k}_1x1_reduce'].filters}"
            elif part == "3x3_s2_depthwise":
                layer_scope = f"{base}_2_Conv2d_{k}_3x3_s2_{depth}_depthwise"
            else:
                layer_scope = f"{base}_2_Conv2d_{k}_3x3_s2_{depth}"
            names.update(layer_variable_names(layer, f"{scope}/{layer_scope}"))
        elif predictor:
            kind = "BoxEncodingPredictor" if predictor.group(1) == "box" else "ClassPredictor"
            suffix = "_depthwise" if predictor.group(3) == "depthwise" else ""
            layer_scope = f"BoxPredictor_{predictor.group(2)}/{kind}{suffix}"
            names.update(layer_variable_names(layer, layer_scope))
        else:
            raise CheckpointMismatchError(f"no Object Detection API counterpart for {name!r}")
    return names


def is_od_api_checkpoint(path: str) -> bool:
    import tensorflow as tf

    return any(name.startswith("FeatureExtractor/") for name, _ in tf.train.list_variables(path))


def load_od_api_checkpoint(detector, path: str, moving_averages: bool = False) -> ImportReport:
    """Assigns every variable of `detector` from the Object Detection API checkpoint at `path`
    (its ExponentialMovingAverage values where it has them, with `moving_averages`)."""
    return slim_checkpoint.assign_from_checkpoint(
        detector_variable_names(detector), path, moving_averages=moving_averages
    )
