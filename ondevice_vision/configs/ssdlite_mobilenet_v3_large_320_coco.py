"""SSDLite + MobileNetV3-Large (reduced tail) 320x320 on COCO, the TF OD API recipe from scratch.

Train (COCO 2017; `:coco14` for train2014 + valminusminival, evaluated on COCO14 minival):

    ondevice-train --config=ondevice_vision/configs/ssdlite_mobilenet_v3_large_320_coco.py:coco14 \
        --workdir=workdirs/ssdlite_v3_large --mode=train_and_eval

Targets: 22.6 mAP on COCO14 minival (OD API model zoo), 22.0 on test-dev (paper Table 6);
3.22M parameters, 0.51B MAdds at 320 (`ondevice-info --config=<this file>`).
"""

from ondevice_vision.configs import base_detection, common


def get_config(arg=None):
    config = base_detection.coco_config("mobilenet_v3_large", arg)
    if "smoke" in common.config_words(arg, base_detection.COCO_WORDS):
        base_detection.smoke(config)
    return config
