"""The SSDLite detection recipe of the TF Object Detection API as a ConfigDict.

Values: the OD API's `ssdlite_mobilenet_v3_*_320x320_coco.config` sample configs
(tensorflow/models, research/object_detection/samples/configs); see docs/reference_facts.md.
Imports ml_collections only: loading a config never imports TensorFlow.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from ondevice_vision.configs import common


def detection_config(backbone: str) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.task = "detection"
    config.model = ml_collections.ConfigDict(
        {
            "backbone": backbone,
            "depth_multiplier": 1.0,
            "reduced_tail": "detection",
            "input_size": (320, 320),
            "num_classes": 90,
            "extra_depths": (512, 256, 256, 128),
            "class_bias_init": -4.6,
            # Box predictor: random_normal(init_stddev). Backbone and extra layers:
            # truncated_normal(feature_init_stddev), or Keras' defaults with None.
            "init_stddev": 0.03,
            "feature_init_stddev": config_dict.placeholder(float),
            "head_bn_momentum": 0.97,
            "backbone_bn_momentum": 0.97,
            "anchors": {
                "min_scale": 0.2,
                "max_scale": 0.95,
                "aspect_ratios": (1.0, 2.0, 0.5, 3.0, 0.3333),
                "interpolated_scale_aspect_ratio": 1.0,
                "reduce_boxes_in_lowest_layer": True,
                "box_scale_factors": (10.0, 10.0, 5.0, 5.0),
            },
            "matcher": {
                "matched_threshold": 0.5,
                "unmatched_threshold": 0.5,
                "force_match": True,
                # "ignore": anchors matched to crowd boxes are ignored; "positive": crowd boxes
                # are ordinary boxes (the OD API's SSD loss, which the *_coco recipes reproduce).
                "crowd_matches": "ignore",
            },
            "loss": {
                "focal_alpha": 0.75,
                "focal_gamma": 2.0,
                "huber_delta": 1.0,
                "cls_weight": 1.0,
                "box_weight": 1.0,
                "encode_background_as_zeros": True,
                "normalize_box_loss_by_codesize": True,
            },
            "postprocess": {
                "score_threshold": 1e-8,
                "iou_threshold": 0.6,
                "max_detections_per_class": 100,
                "max_detections": 100,
            },
        }
    )
    config.data = detection_data_config()
    # "category_id": class index = dataset category id - 1, so COCO heads have the OD API's 90
    # classes; "contiguous": the source's own 0..K-1 indices.
    config.data.class_index = "contiguous"
    config.data.max_boxes = 100
    config.data.augment = True
    # Where training batches get their anchor targets: "train_step" (in the loss, on the
    # accelerator, as the Object Detection API's SSD loss does; the host only decodes and
    # augments) or "input_pipeline" (on the host, once per batch). The targets are the same.
    config.data.anchor_matching = "train_step"
    config.train = common.train_config()
    config.eval = common.eval_config()
    config.eval.annotation_file = config_dict.placeholder(str)
    config.eval.write_detections = True
    return config


def detection_data_config() -> ml_collections.ConfigDict:
    """Every field any detection source reads; the default is the built-in shapes data."""
    return ml_collections.ConfigDict(
        {
            "source": "shapes",  # tfds | coco_folder | voc_folder | shapes
            # tfds
            "tfds_name": "coco/2017",
            "train_split": "train",
            "eval_split": "validation",
            "data_dir": config_dict.placeholder(str),
            # coco_folder / voc_folder
            "train_dir": config_dict.placeholder(str),
            "eval_dir": config_dict.placeholder(str),
            # coco_folder: the annotation file in each folder (default: annotations.json, else
            # the folder's only *.json)
            "train_annotations": config_dict.placeholder(str),
            "eval_annotations": config_dict.placeholder(str),
            # voc_folder: class order (default: every name in the XML, sorted) and the optional
            # ImageSets/Main/<name>.txt lists (default: every Annotations/*.xml of the folder)
            "class_names": config_dict.placeholder(tuple),
            "train_image_set": config_dict.placeholder(str),
            "eval_image_set": config_dict.placeholder(str),
            # shapes
            "num_train": 2048,
            "num_eval": 256,
            "image_size": 256,
            "seed": 0,
            # A local directory: decoded training images are written there during the first
            # epoch and read back afterwards (data/decoded_cache.py). "" = decode every time.
            "decoded_cache": "",
            # Image files with more pixels (width x height, read from the header before any
            # decoding) are skipped and named; 0: no limit. Pillow's decompression-bomb limit.
            "max_image_pixels": common.MAX_IMAGE_PIXELS,
        }
    )


def coco_config(backbone: str, arg: str | None) -> ml_collections.ConfigDict:
    """COCO 2017 by default; `arg` "coco14" switches to train2014+valminusminival / minival."""
    config = detection_config(backbone)
    config.data.source = "tfds"
    config.data.class_index = "category_id"
    config.model.matcher.crowd_matches = "positive"
    # The zoo configs' override_base_feature_extractor_hyperparams with
    # truncated_normal_initializer { stddev: 0.03 }: from-scratch runs start where theirs did.
    config.model.feature_init_stddev = 0.03
    config.data.tfds_name = "coco/2017"
    config.data.train_split = "train"
    config.data.eval_split = "validation"
    if "coco14" in common.config_words(arg, COCO_WORDS):
        config.data.tfds_name = "coco/2014"
        config.data.train_split = "train+valminusminival"
        config.data.eval_split = "minival"
    config.train.batch_size = 512
    config.train.total_steps = 400_000
    config.train.schedule = "cosine"
    config.train.base_learning_rate = 0.4
    config.train.warmup_learning_rate = 0.13333
    config.train.warmup_steps = 2000
    config.train.weight_decay = 4e-5
    config.train.checkpoint_every_steps = 5000
    config.train.log_every_steps = 100
    # The iterator state holds the shuffle buffer of decoded images (~0.9 GB for 1000 COCO
    # images): too large to save every checkpoint.
    config.train.checkpoint_data_iterator = False
    config.eval.batch_size = 32
    config.eval.every_steps = 25_000
    return config


COCO_WORDS = ("coco14", "smoke")


def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Tiny input and synthetic data, whatever the recipe's data source."""
    common.shrink_for_smoke(config)
    config.model.input_size = (128, 128)
    config.data.source = "shapes"
    config.data.class_index = "contiguous"
    config.data.num_train = 8
    config.data.num_eval = 4
    config.data.image_size = 128
    return config
