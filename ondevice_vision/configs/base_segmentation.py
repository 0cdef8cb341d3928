"""The LR-ASPP segmentation recipe (DeepLab style) as a ConfigDict.

Imports ml_collections only: loading a config never imports TensorFlow.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from ondevice_vision.configs import common


def segmentation_config(backbone: str) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.task = "segmentation"
    config.model = ml_collections.ConfigDict(
        {
            "backbone": backbone,
            "depth_multiplier": 1.0,
            "reduced_tail": "segmentation",  # DeepLab's *_seg = the paper's RF2
            "output_stride": 16,
            "head_filters": 128,
            # "paper" (MobileNetV3 section 6.4) or "deeplab" (DeepLab's released Cityscapes
            # checkpoints: hard-sigmoid gate, pooling stride (4, 5), align_corners resizes;
            # docs/reference_facts.md). The *_deeplab configs also set output_stride 32.
            "lraspp_variant": "paper",
            "attention_pooling": "paper",  # window/stride from data.crop_size; "global" also works
            "num_classes": 19,
            "bn_momentum": 0.997,
            # Size `ondevice-info --config` reports (full Cityscapes frames).
            "input_size": (1024, 2048),
        }
    )
    config.data = segmentation_data_config()
    config.data.crop_size = (769, 769)
    config.data.min_scale = 0.5
    config.data.max_scale = 2.0
    # Mirror half of the training crops left-right (DeepLab's training input does). Off only for
    # runs that must see their images exactly as stored, e.g. fitting two images in a test.
    config.data.random_flip = True
    # Softmax cross-entropy options (tasks/segmentation_loss.py): class_weights "" (all 1),
    # "inverse_frequency" (from the training masks, logged) or one weight per class ("1,2.5,...");
    # top_k_percent_pixels < 1: only the hardest pixels of each image count (DeepLab's mining).
    config.loss = ml_collections.ConfigDict({"class_weights": "", "top_k_percent_pixels": 1.0})
    config.train = common.train_config()
    config.train.schedule = "poly"
    config.train.poly_power = 0.9
    config.eval = common.eval_config()
    config.eval.batch_size = 1
    config.eval.official_cityscapes = False
    config.eval.prediction_dir = config_dict.placeholder(str)
    # Multi-scale / flip evaluation (DeepLab's eval_scales / add_flipped_images: softmax
    # probabilities averaged at the input size), e.g. scales=(0.75, 1.0, 1.25, 1.5, 1.75).
    config.eval.scales = (1.0,)
    config.eval.flip = False
    # Sliding window for frames larger than the network input: (h, w), (0, 0) = whole image.
    config.eval.window = (0, 0)
    config.eval.window_stride = (0, 0)  # (0, 0): the window (no overlap)
    # Evaluate (and export) the trained weights at another output stride by dilation, e.g. an
    # OS32 model at 16 or 8 (DeepLab's eval --output_stride); 0: as trained.
    config.eval.output_stride = 0
    return config


IGNORE_LABEL = 255  # the unlabelled mask value (also data.label_map.IGNORE_LABEL)


def segmentation_data_config() -> ml_collections.ConfigDict:
    """Every field any segmentation source reads; `source` picks which ones matter."""
    return ml_collections.ConfigDict(
        {
            "source": "synthetic",  # tfds | cityscapes_folder | mask_folder | coco_folder | synthetic
            # tfds and cityscapes_folder. "val" also names TFDS's "validation" split.
            "train_split": "train",
            "eval_split": "val",
            # tfds
            "tfds_name": "cityscapes/semantic_segmentation",
            "data_dir": config_dict.placeholder(str),
            "manual_dir": config_dict.placeholder(str),
            # cityscapes_folder: directory holding leftImg8bit/ and gtFine/
            "root": config_dict.placeholder(str),
            # mask_folder: each dir has images/, masks/ and classes.txt (or its parent has it)
            "train_dir": config_dict.placeholder(str),
            "eval_dir": config_dict.placeholder(str),
            "ignore_label": IGNORE_LABEL,  # mask value meaning "unlabelled" in mask_folder masks
            # coco_folder (train_dir / eval_dir hold a COCO JSON with polygon or RLE
            # "segmentation"s): pixels no annotation covers become class 0 "background" or
            # "ignore" (255). Larger objects are painted first (data/coco_segmentation.py).
            "coco_unlabeled": "background",
            # synthetic
            "num_train": 512,
            "num_eval": 64,
            "image_size": (128, 128),
            "seed": 0,
            # A local directory: decoded training images are written there during the first
            # epoch and read back afterwards (data/decoded_cache.py). "" = decode every time.
            "decoded_cache": "",
            # Image files with more pixels (width x height, read from the header before any
            # decoding) are skipped and named; 0: no limit. Pillow's decompression-bomb limit.
            "max_image_pixels": common.MAX_IMAGE_PIXELS,
        }
    )


CITYSCAPES_WORDS = ("tfds", "smoke")


def cityscapes_config(backbone: str, arg: str | None) -> ml_collections.ConfigDict:
    """Fine annotations, from scratch; `arg` "tfds" reads TFDS instead of the folder layout."""
    config = segmentation_config(backbone)
    words = common.config_words(arg, CITYSCAPES_WORDS)
    config.data.source = "tfds" if "tfds" in words else "cityscapes_folder"
    config.data.train_split = "train"
    config.data.eval_split = "val"
    config.train.batch_size = 16
    config.train.total_steps = 300_000
    config.train.base_learning_rate = 0.02
    config.train.weight_decay = 4e-5
    config.train.checkpoint_every_steps = 5000
    config.train.shuffle_buffer = 200
    # The iterator state would hold the shuffle buffer of full-size frames: too large to save.
    config.train.checkpoint_data_iterator = False
    config.eval.every_steps = 25_000
    config.eval.official_cityscapes = config.data.source == "cityscapes_folder"
    return config


def deeplab_cityscapes_config(backbone: str, arg: str | None) -> ml_collections.ConfigDict:
    """cityscapes_config with DeepLab's released LR-ASPP: the variant switch and output stride 32
    (DeepLab's model_zoo.md flags; the rest follows from the variant, see models/lraspp_decoder.py)."""
    config = cityscapes_config(backbone, arg)
    config.model.lraspp_variant = "deeplab"
    config.model.output_stride = 32
    if "smoke" in common.config_words(arg, CITYSCAPES_WORDS):
        smoke(config)
    return config


def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    common.shrink_for_smoke(config)
    config.data.source = "synthetic"
    config.data.num_train = 8
    config.data.num_eval = 4
    config.data.image_size = (64, 96)
    config.data.crop_size = (64, 64)
    config.model.num_classes = 4
    config.model.input_size = (64, 96)
    config.eval.official_cityscapes = False
    config.train.checkpoint_data_iterator = True
    return config
