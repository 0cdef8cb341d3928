"""LR-ASPP segmentation (MobileNetV3 paper section 6.4): decoder layers and the segmenter model."""

from ondevice_vision.lr_aspp.decoder import (
    ATTENTION_POOLING,
    AttentionPooling,
    ResizeToMatch,
    lraspp_decoder,
    paper_pooling_geometry,
)
from ondevice_vision.lr_aspp.segmenter import Segmenter, build_segmenter

__all__ = [
    "ATTENTION_POOLING",
    "AttentionPooling",
    "ResizeToMatch",
    "Segmenter",
    "build_segmenter",
    "lraspp_decoder",
    "paper_pooling_geometry",
]
