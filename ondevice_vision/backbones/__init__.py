"""MobileNetV3 / MobileNetEdgeTPU backbones with named endpoints."""

from ondevice_vision.backbones.imagenet_weights import load_imagenet_weights
from ondevice_vision.backbones.mobilenet import ENDPOINTS, Backbone, build_backbone
from ondevice_vision.backbones.specs import SPECS

BACKBONES = tuple(SPECS)

__all__ = ["BACKBONES", "ENDPOINTS", "Backbone", "build_backbone", "load_imagenet_weights"]
