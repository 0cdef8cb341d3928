"""SSDLite + MobileNetV3-Small on the built-in synthetic shapes: the CPU demo (`make demo`).

    ondevice-train --config=ondevice_vision/configs/ssdlite_mobilenet_v3_small_shapes.py \
        --workdir=workdir/shapes_det --mode=train_and_eval

Target: AP50 >= 0.5 on the synthetic validation split within 10 minutes on 2 CPU cores.
"""

from ondevice_vision.configs import base_detection, common


def get_config(arg=None):
    config = base_detection.detection_config("mobilenet_v3_small")
    config.model.input_size = (192, 192)
    config.model.num_classes = 4
    config.model.head_bn_momentum = 0.9
    config.model.backbone_bn_momentum = 0.9
    config.data.source = "shapes"
    config.data.image_size = 192
    config.data.num_train = 1024
    config.data.num_eval = 128
    config.train.batch_size = 16
    config.train.shuffle_buffer = 256  # keeps the saved iterator state (checkpoints) small
    config.train.total_steps = 1000
    config.train.optimizer = "adam"
    config.train.base_learning_rate = 3e-3
    config.train.warmup_steps = 100
    config.train.weight_decay = 4e-5
    config.train.checkpoint_every_steps = 200
    config.train.log_every_steps = 50
    config.eval.batch_size = 16
    config.eval.every_steps = 0
    if "smoke" in common.config_words(arg, ("smoke",)):
        base_detection.smoke(config)
    return config
