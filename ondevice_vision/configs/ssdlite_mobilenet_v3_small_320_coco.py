"""SSDLite + MobileNetV3-Small (reduced tail) 320x320 on COCO, the TF OD API recipe from scratch.

    ondevice-train --config=ondevice_vision/configs/ssdlite_mobilenet_v3_small_320_coco.py:coco14 \
        --workdir=workdirs/ssdlite_v3_small --mode=train_and_eval

Targets: 15.4 mAP on COCO14 minival (OD API model zoo), 16.1 on test-dev (paper Table 6);
1.77M parameters, 0.16B MAdds at 320. The recipe trains twice as long as V3-Large (800k steps).
"""

from ondevice_vision.configs import base_detection, common


def get_config(arg=None):
    config = base_detection.coco_config("mobilenet_v3_small", arg)
    config.train.total_steps = 800_000
    if "smoke" in common.config_words(arg, base_detection.COCO_WORDS):
        base_detection.smoke(config)
    return config
