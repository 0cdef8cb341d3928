"""`train.trainable`: which weights train.

- "all": every weight (the default).
- "head": everything but the backbone (SSDLite's extra layers and box / class predictors, the
  LR-ASPP decoder): the backbone is frozen as a whole, so its batch norm runs in inference mode
  (Keras runs a BatchNormalization layer with trainable=False on its moving statistics).
- any other string: a regular expression searched in each weight's path (`conv/kernel`,
  `class_predictor_0_conv/bias`, ...): matching weights train, the others are frozen; a batch-norm
  layer whose gamma and beta are both frozen is frozen as a layer (inference mode, moving
  statistics kept).

Frozen weights are left out of the optimizer, the weight decay and the moving averages.
"""

from __future__ import annotations

import re

import keras
from absl import logging

SETTINGS = ("all", "head")


def _layers(layer):
    for child in getattr(layer, "layers", []):
        yield child
        yield from _layers(child)


def apply_trainable(model, setting: str) -> dict:
    """Freezes per `setting`; returns {"trainable": n, "frozen": n} weight counts."""
    setting = setting or "all"
    if setting == "head":
        model.backbone.trainable = False
    elif setting != "all":
        try:
            pattern = re.compile(setting)
        except re.error as e:
            raise ValueError(
                f"train.trainable: {setting!r} is not a regular expression ({e})"
            ) from e
        weights = list(model.trainable_variables)
        keep = [v for v in weights if pattern.search(v.path)]
        if not keep:
            raise ValueError(
                f"train.trainable: {setting!r} matches no weight path (e.g. {weights[0].path})"
            )
        for v in weights:
            if not pattern.search(v.path):
                v.trainable = False
        for layer in _layers(model):
            if isinstance(layer, keras.layers.BatchNormalization) and not any(
                v.trainable for v in (layer.gamma, layer.beta) if v is not None
            ):
                layer.trainable = False
    trainable = len(model.trainable_variables)
    frozen = len(model.weights) - trainable
    if setting != "all":
        logging.info(
            "train.trainable=%r: %d weights train, %d frozen (incl. moving statistics)",
            setting,
            trainable,
            frozen,
        )
    return {"trainable": trainable, "frozen": frozen}
