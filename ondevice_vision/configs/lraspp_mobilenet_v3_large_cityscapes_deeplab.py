"""DeepLab's released LR-ASPP + MobileNetV3-Large on Cityscapes (`model.lraspp_variant="deeplab"`).

The model of DeepLab's `mobilenetv3_large_cityscapes_trainfine` checkpoint
(`deeplab_mnv3_large_cityscapes_trainfine_2019_11_15.tar.gz`): output stride 32, hard-sigmoid
gate, pooling window 25 with stride (4, 5) for the 769 crop, `align_corners` resizes, head batch
norm epsilon 1e-5 (docs/reference_facts.md). Train it from scratch like the paper variant:

    ondevice-train --config=ondevice_vision/configs/lraspp_mobilenet_v3_large_cityscapes_deeplab.py \
        --workdir=workdirs/lraspp_v3_large_deeplab --mode=train_and_eval \
        --config.data.root=/data/cityscapes

or import DeepLab's checkpoint (docs/published_checkpoints.md):

    ondevice-import --config=ondevice_vision/configs/lraspp_mobilenet_v3_large_cityscapes_deeplab.py \
        --checkpoint=deeplab_mnv3_large_cityscapes_trainfine/model.ckpt \
        --workdir=workdirs/deeplab_mnv3_large

Target: 72.41 mIoU on Cityscapes val (DeepLab model zoo: OS32, single scale, no flip);
1,507,198 trainable parameters, 7.624B MAdds at 1024x2048 (tests/configs/test_deeplab_configs.py).
`:tfds` reads TFDS instead of the folder layout; `:smoke` shrinks it to seconds.
"""

from ondevice_vision.configs import base_segmentation


def get_config(arg=None):
    return base_segmentation.deeplab_cityscapes_config("mobilenet_v3_large", arg)
