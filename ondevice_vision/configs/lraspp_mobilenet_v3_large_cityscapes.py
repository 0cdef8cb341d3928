"""LR-ASPP + MobileNetV3-Large (RF2 = reduced_tail "segmentation", OS16, F=128) on Cityscapes.

From scratch on the fine annotations, DeepLab style: 769x769 crops, random scale 0.5-2.0, flip,
poly learning rate, batch 16, evaluated on full 1024x2048 frames, also with the official
cityscapesscripts evaluator (data.root holds leftImg8bit/ and gtFine/):

    ondevice-train --config=ondevice_vision/configs/lraspp_mobilenet_v3_large_cityscapes.py \
        --workdir=workdirs/lraspp_v3_large --mode=train_and_eval --config.data.root=/data/cityscapes

`:tfds` reads TFDS cityscapes/semantic_segmentation instead (--config.data.manual_dir=...).
Target: 72.36 mIoU on Cityscapes val (paper Table 7; DeepLab zoo OS32: 72.41); 1.51M parameters, 9.74B MAdds at 1024x2048.
"""

from ondevice_vision.configs import base_segmentation, common


def get_config(arg=None):
    config = base_segmentation.cityscapes_config("mobilenet_v3_large", arg)
    if "smoke" in common.config_words(arg, base_segmentation.CITYSCAPES_WORDS):
        base_segmentation.smoke(config)
    return config
