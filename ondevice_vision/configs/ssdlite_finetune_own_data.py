"""SSDLite fine-tuned on your own detection data (a few hundred images), from a checkpoint.

    ondevice-train --config=ondevice_vision/configs/ssdlite_finetune_own_data.py:small \
        --workdir=workdir/my_detector --mode=train_and_eval \
        --config.data.train_dir=/data/my_voc --config.data.eval_dir=/data/my_voc \
        --config.model.num_classes=3 \
        --config.train.init_checkpoint=workdir/shapes_det/checkpoints

`small` (default) or `large` picks MobileNetV3-Small / -Large (the source checkpoint must have
the same backbone and width); add `coco` (`:large,coco`) for a COCO-format folder
(`annotations.json` + images) instead of a Pascal VOC folder (`ImageSets/Main/train.txt` and
`val.txt` select the splits; change `data.train_image_set` / `data.eval_image_set`, or set them to
None to use every annotation of the folder). docs/fine_tuning.md has the measured numbers.

Why these settings (a few hundred images, a CPU or one GPU):
- `train.init_checkpoint_mode="detection"`: every layer but the class predictors starts from the
  checkpoint, whatever its class count; the class predictors are re-initialised for the new
  classes (with the focal-loss prior bias). "backbone" keeps only the feature extractor.
- Adam 2e-3, 50 warmup steps, cosine to 0 over 600 steps at batch 8 (36 epochs of 132 images):
  short enough for a CPU, and every layer trains (a frozen backbone caps what a detector learns
  on a new domain; with so few steps the pretrained features still dominate).
- SSD random crop + horizontal flip (`data.augment`): with a few hundred images they are most
  of what keeps the detector from memorising its training set.
- Batch norm: momentum 0.97 in the backbone and the head, and `train.bn_recalibration_steps`
  re-estimates the moving statistics on training batches before every evaluation and export,
  so the inference-mode model matches what training saw whatever the run length.
"""

from ondevice_vision.configs import base_detection, common

WORDS = ("small", "large", "coco", "smoke")


def get_config(arg=None):
    words = common.config_words(arg, WORDS)
    if {"small", "large"} <= words:
        raise ValueError(f"config argument {arg!r}: pick one of small and large")
    backbone = "mobilenet_v3_large" if "large" in words else "mobilenet_v3_small"
    config = base_detection.detection_config(backbone)
    config.model.num_classes = 1
    config.data.source = "coco_folder" if "coco" in words else "voc_folder"
    if config.data.source == "voc_folder":
        config.data.train_image_set = "train"
        config.data.eval_image_set = "val"
    config.train.batch_size = 8
    config.train.shuffle_buffer = 256
    config.train.total_steps = 600
    config.train.optimizer = "adam"
    config.train.base_learning_rate = 2e-3
    config.train.warmup_steps = 50
    config.train.weight_decay = 4e-5
    config.train.checkpoint_every_steps = 200
    config.train.log_every_steps = 25
    config.train.init_checkpoint_mode = "detection"
    config.eval.batch_size = 8
    config.eval.every_steps = 0
    if "smoke" in words:
        base_detection.smoke(config)
    return config
