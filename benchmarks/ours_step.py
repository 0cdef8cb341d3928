"""Our training step on one prepared batch, as the benchmarks time it: the recipe's config, the
trainer's own loop (`Trainer._build_train_loop`: L2 term, gradient norm, finite checks), one batch
of the real input pipeline repeated. Used by side_by_side.py and profile_train_step.py."""

from __future__ import annotations

import ast
import os

SEG_CLASSES = 4  # the synthetic source's classes (torchvision's model gets as many)
SEG_CROP = 512


def set_override(config, item):
    key, _, text = item.partition("=")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    *parents, leaf = key.strip().split(".")
    node = config
    for name in parents:
        node = node[name]
    with node.ignore_type():
        node[leaf] = value


def ours_config(task, tmp, batch_size):
    """The recipe's config for one prepared batch of `batch_size` (also used by
    benchmarks/profile_train_step.py)."""
    if task == "detection":
        from pipeline_data import write_coco

        from ondevice_vision.configs import ssdlite_mobilenet_v3_large_320_coco as module

        config = module.get_config()
        data_dir = write_coco(os.path.join(tmp, "coco"), num_images=batch_size)
        config.data.source = "coco_folder"
        config.data.train_dir = config.data.eval_dir = data_dir
        config.data.class_index = "category_id"
    else:
        from ondevice_vision.configs import lraspp_mobilenet_v3_large_cityscapes as module

        config = module.get_config()
        config.data.source = "synthetic"
        config.data.image_size = (SEG_CROP, SEG_CROP)
        config.data.num_train = batch_size
        config.data.crop_size = (SEG_CROP, SEG_CROP)
        config.model.num_classes = SEG_CLASSES
    config.train.batch_size = batch_size
    config.train.shuffle_buffer = 1
    config.train.total_steps = 10**6
    config.train.bn_recalibration_steps = 0
    return config


def ours_train_loop(task, tmp, batch_size, overrides=""):
    """(config, the trainer's train_loop, one prepared batch, an iterator repeating it)."""
    import tensorflow as tf

    from ondevice_vision.train.strategy import create_strategy
    from ondevice_vision.train.trainer import Trainer

    config = ours_config(task, tmp, batch_size)
    for item in filter(None, overrides.split(",")):
        set_override(config, item)
    trainer = Trainer(config, tmp, create_strategy("one_device"))
    train_loop = trainer._build_train_loop()
    batch = next(iter(trainer._train_dataset()))
    return config, train_loop, batch, iter(tf.data.Dataset.from_tensors(batch).repeat())
