"""LR-ASPP + MobileNetV3-Small on the built-in synthetic segmentation data: the CPU demo.

    ondevice-train --config=ondevice_vision/configs/lraspp_mobilenet_v3_small_shapes.py \
        --workdir=workdir/shapes_seg --mode=train_and_eval

Target: mIoU >= 0.8 on the synthetic validation split within 10 minutes on 2 CPU cores.
"""

from ondevice_vision.configs import base_segmentation, common


def get_config(arg=None):
    config = base_segmentation.segmentation_config("mobilenet_v3_small")
    config.model.num_classes = 4
    config.model.bn_momentum = 0.9
    config.model.input_size = (128, 128)
    config.data.source = "synthetic"
    config.data.image_size = (128, 128)
    config.data.num_train = 512
    config.data.num_eval = 64
    config.data.crop_size = (128, 128)
    config.data.min_scale = 0.75
    config.data.max_scale = 1.25
    config.train.batch_size = 16
    config.train.shuffle_buffer = 256  # keeps the saved iterator state (checkpoints) small
    config.train.total_steps = 300
    config.train.optimizer = "adam"
    config.train.base_learning_rate = 3e-3
    config.train.warmup_steps = 50
    config.train.checkpoint_every_steps = 100
    config.train.log_every_steps = 50
    config.eval.batch_size = 16
    if "smoke" in common.config_words(arg, ("smoke",)):
        base_segmentation.smoke(config)
    return config
