"""DeepLab's released LR-ASPP + MobileNetV3-Small on Cityscapes (`model.lraspp_variant="deeplab"`).

The model of DeepLab's `mobilenetv3_small_cityscapes_trainfine` checkpoint
(`deeplab_mnv3_small_cityscapes_trainfine_2019_11_15.tar.gz`); everything else, commands
included, as lraspp_mobilenet_v3_large_cityscapes_deeplab.py with `small` for `large`.

Target: 68.99 mIoU on Cityscapes val (DeepLab model zoo: OS32, single scale, no flip);
468,830 trainable parameters, 2.103B MAdds at 1024x2048 (tests/configs/test_deeplab_configs.py).
"""

from ondevice_vision.configs import base_segmentation


def get_config(arg=None):
    return base_segmentation.deeplab_cityscapes_config("mobilenet_v3_small", arg)
