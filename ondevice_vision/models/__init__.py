"""The models: the SSDLite detector and the LR-ASPP segmenter, on the MobileNet backbones.

    ssdlite.py         SSDLiteDetector (backbone taps, extra layers, depthwise predictors)
    lraspp.py          Segmenter (backbone + LR-ASPP decoder)
    lraspp_decoder.py  the LR-ASPP decoder layers
    ondevice_vision/backbones/  MobileNetV3 / MobileNetEdgeTPU with named endpoints (re-exported)

Anchors, box coding, matching, losses and post-processing live in ondevice_vision/heads/.
"""

from ondevice_vision.backbones import BACKBONES, Backbone, build_backbone
from ondevice_vision.models.lraspp import Segmenter
from ondevice_vision.models.ssdlite import SSDLiteDetector, build_detector

__all__ = [
    "BACKBONES",
    "Backbone",
    "SSDLiteDetector",
    "Segmenter",
    "build_backbone",
    "build_detector",
]
