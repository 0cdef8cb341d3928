"""LR-ASPP fine-tuned on your own masks (a few hundred images), from a checkpoint.

    ondevice-train --config=ondevice_vision/configs/lraspp_finetune_own_masks.py:small \
        --workdir=workdir/my_segmenter --mode=train_and_eval \
        --config.data.train_dir=/data/my_masks/train --config.data.eval_dir=/data/my_masks/val \
        --config.model.num_classes=3 \
        --config.train.init_checkpoint=workdirs/lraspp_v3_small/checkpoints

Each folder is a mask folder: `images/*.jpg|png`, `masks/*.png` (class index per pixel, same
stem, 255 = unlabelled) and `classes.txt`. `small` (default) or `large` picks MobileNetV3-Small /
-Large; the source checkpoint (a Cityscapes run, the segmentation demo, or an imported DeepLab
checkpoint) must have the same backbone, width and decoder filters.

Why these settings:
- `train.init_checkpoint_mode="all_but_class_layers"`: backbone and decoder come from the
  checkpoint; the two logits convs (the only class-dependent layers) start fresh.
- Adam 1e-3, 50 warmup steps, poly decay over 1,000 steps at batch 8: a few epochs of a few
  hundred images, with a rate low enough not to wash out the pretrained features in the first
  steps while the new logits layers are still random.
- 384x384 crops at random scale 0.5-2.0 with flips: enough context for the attention branch
  and the main guard against overfitting a small set; evaluation on whole images.
- Batch norm: momentum 0.99 (the base recipe's 0.997 averages over ~300 steps, too long for a
  fine-tune) and `train.bn_recalibration_steps` (50) re-estimates the statistics from training
  batches before every evaluation and the final checkpoint, so inference-mode results match
  what training saw.
"""

from ondevice_vision.configs import base_segmentation, common

WORDS = ("small", "large", "smoke")


def get_config(arg=None):
    words = common.config_words(arg, WORDS)
    if {"small", "large"} <= words:
        raise ValueError(f"config argument {arg!r}: pick one of small and large")
    backbone = "mobilenet_v3_large" if "large" in words else "mobilenet_v3_small"
    config = base_segmentation.segmentation_config(backbone)
    config.model.num_classes = 2
    config.model.bn_momentum = 0.99
    config.model.input_size = (512, 512)
    config.data.source = "mask_folder"
    config.data.crop_size = (384, 384)
    config.data.min_scale = 0.5
    config.data.max_scale = 2.0
    config.train.batch_size = 8
    config.train.shuffle_buffer = 256
    config.train.total_steps = 1000
    config.train.optimizer = "adam"
    config.train.base_learning_rate = 1e-3
    config.train.warmup_steps = 50
    config.train.weight_decay = 4e-5
    config.train.checkpoint_every_steps = 250
    config.train.log_every_steps = 25
    config.train.init_checkpoint_mode = "all_but_class_layers"
    config.eval.batch_size = 1
    if "smoke" in words:
        base_segmentation.smoke(config)
    return config
