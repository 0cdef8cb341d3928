"""LR-ASPP from scratch on a COCO polygon / RLE folder, as labelling tools export them.

    ondevice-train --config=ondevice_vision/configs/lraspp_coco_polygons.py:small \
        --workdir=workdir/facades --mode=train_and_eval \
        --config.data.train_dir=/data/facades/train --config.data.eval_dir=/data/facades/valid \
        --config.model.num_classes=12

`data.source="coco_folder"` (docs/segmentation.md): pycocotools paints each image's polygons,
larger objects first; unlabelled pixels are class 0 "background", so `model.num_classes` is the
number of categories plus one. Words: `small` (default) / `large` backbone; `deeplab` for
DeepLab's released LR-ASPP (output stride 32, hard-sigmoid gate, ...) instead of the paper's;
`inverse_frequency` for inverse-frequency class weights; `smoke` shrinks it to seconds.

A short CPU-sized recipe for photos around 1024 pixels: images seen at scales 0.375-0.75 in
256x256 crops, Adam 3e-3 with 50 warmup steps and poly decay over 600 steps at batch 8,
batch-norm momentum 0.9 (a short run); evaluated at scale 0.5 (`eval.scales`, the probabilities
resized back to the full image), e.g. `--config.eval.scales=0.375,0.5,0.625,0.75
--config.eval.flip=True` for multi-scale + flip. README's recipe table has the figures measured
on 160 / 40 street-facade photos.
"""

from ondevice_vision.configs import base_segmentation, common

WORDS = ("small", "large", "deeplab", "inverse_frequency", "smoke")


def get_config(arg=None):
    words = common.config_words(arg, WORDS)
    backbone = "mobilenet_v3_large" if "large" in words else "mobilenet_v3_small"
    config = base_segmentation.segmentation_config(backbone)
    if "deeplab" in words:
        config.model.lraspp_variant = "deeplab"
        config.model.output_stride = 32
    config.model.num_classes = 12
    config.model.bn_momentum = 0.9
    config.model.input_size = (512, 512)
    config.data.source = "coco_folder"
    config.data.coco_unlabeled = "background"
    config.data.crop_size = (256, 256)
    config.data.min_scale = 0.375
    config.data.max_scale = 0.75
    if "inverse_frequency" in words:
        config.loss.class_weights = "inverse_frequency"
    config.train.batch_size = 8
    config.train.shuffle_buffer = 160
    config.train.total_steps = 600
    config.train.optimizer = "adam"
    config.train.base_learning_rate = 3e-3
    config.train.warmup_steps = 50
    config.train.checkpoint_every_steps = 200
    config.train.log_every_steps = 25
    config.train.bn_recalibration_steps = 20
    config.eval.batch_size = 1
    config.eval.scales = (0.5,)
    config.eval.num_visualizations = 4
    if "smoke" in words:
        base_segmentation.smoke(config)
    return config
