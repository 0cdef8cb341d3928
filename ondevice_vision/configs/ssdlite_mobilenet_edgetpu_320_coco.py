"""SSDLite + MobileNetEdgeTPU 320x320 on COCO, the TF OD API recipe from scratch.

    ondevice-train --config=ondevice_vision/configs/ssdlite_mobilenet_edgetpu_320_coco.py:coco14 \
        --workdir=workdirs/ssdlite_edgetpu --mode=train_and_eval

Target: 24.3 mAP on COCO14 minival (OD API model zoo, uint8 model on the Edge TPU). Taps: layer
18's expansion (384 ch, stride 16) and layer 23 (192 ch, stride 32); no reduced tail; base
learning rate 0.8.
"""

from ondevice_vision.configs import base_detection, common


def get_config(arg=None):
    config = base_detection.coco_config("mobilenet_edgetpu", arg)
    config.model.reduced_tail = None
    config.train.base_learning_rate = 0.8
    if "smoke" in common.config_words(arg, base_detection.COCO_WORDS):
        base_detection.smoke(config)
    return config
