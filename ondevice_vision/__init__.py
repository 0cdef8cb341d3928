"""ondevice_vision: MobileNetV3 / MobileNetEdgeTPU SSDLite and LR-ASPP in TF2."""

__version__ = "0.1.0"
