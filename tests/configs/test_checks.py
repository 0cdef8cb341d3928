"""Config values are range-checked before anything runs, each problem naming its key."""

import re

import pytest

from ondevice_vision.configs import (
    lraspp_finetune_own_masks,
    lraspp_mobilenet_v3_small_shapes,
    ssdlite_finetune_own_data,
    ssdlite_mobilenet_v3_large_320_coco,
    ssdlite_mobilenet_v3_small_shapes,
)
from ondevice_vision.configs.checks import check_config, config_problems


@pytest.mark.parametrize(
    "module", [ssdlite_mobilenet_v3_large_320_coco, lraspp_mobilenet_v3_small_shapes]
)
def test_shipped_configs_pass(module):
    assert config_problems(module.get_config()) == []
    assert config_problems(module.get_config("smoke")) == []


@pytest.mark.parametrize(
    "key,value",
    [
        ("train.checkpoint_every_steps", 0),
        ("train.log_every_steps", 0),
        ("train.batch_size", 0),
        ("train.batch_size", -4),
        ("eval.batch_size", 0),
        ("train.base_learning_rate", -0.1),
        ("train.total_steps", 0),
        ("model.num_classes", 0),
    ],
)
def test_out_of_range_values_name_their_key(key, value):
    config = ssdlite_mobilenet_v3_small_shapes.get_config()
    section, name = key.split(".")
    config[section][name] = value
    with pytest.raises(ValueError, match=rf"config\.{key}: must be"):
        check_config(config)


@pytest.mark.parametrize(
    "module,key,value",
    [
        (ssdlite_mobilenet_v3_small_shapes, "task", "keypoints"),
        (ssdlite_mobilenet_v3_small_shapes, "train.nan_policy", "ignore"),
        (ssdlite_mobilenet_v3_small_shapes, "train.data_service_sharding", "static"),
        (ssdlite_mobilenet_v3_small_shapes, "train.init_checkpoint_mode", "everything"),
        (ssdlite_mobilenet_v3_small_shapes, "data.anchor_matching", "host"),
        (ssdlite_mobilenet_v3_small_shapes, "data.class_index", "dataset_id"),
        (ssdlite_mobilenet_v3_small_shapes, "model.matcher.crowd_matches", "negative"),
        (lraspp_mobilenet_v3_small_shapes, "model.attention_pooling", "mean"),
        (lraspp_mobilenet_v3_small_shapes, "model.output_stride", 4),
        (lraspp_mobilenet_v3_small_shapes, "data.coco_unlabeled", "drop"),
    ],
)
def test_unknown_choices_name_their_key_and_the_choices(module, key, value):
    config = module.get_config()
    *path, name = key.split(".")
    node = config
    for part in path:
        node = node[part]
    node[name] = value
    (problem,) = config_problems(config)
    assert problem.startswith(f"config.{key}: must be one of ") and repr(value) in problem


def test_init_checkpoint_aliases_are_choices():
    config = ssdlite_mobilenet_v3_small_shapes.get_config()
    for mode in ("detection", "classification", "strict"):
        config.train.init_checkpoint_mode = mode
        assert config_problems(config) == []


def test_config_arguments_are_whole_words():
    with pytest.raises(ValueError, match="unknown config argument smok"):
        ssdlite_mobilenet_v3_small_shapes.get_config("smok")
    with pytest.raises(ValueError, match="unknown config argument coco"):
        ssdlite_mobilenet_v3_large_320_coco.get_config("coco")
    assert ssdlite_mobilenet_v3_large_320_coco.get_config("coco14,smoke").data.source == "shapes"


@pytest.mark.parametrize(
    "key,value,want",
    [
        ("model.postprocess.iou_threshold", 1.5, "in (0, 1]"),
        ("model.postprocess.score_threshold", -0.1, "in [0, 1)"),
        ("model.postprocess.max_detections", 0, "a positive integer"),
        ("data.max_boxes", 0, "a positive integer"),
        ("data.max_image_pixels", -1, "zero or more"),
    ],
)
def test_postprocess_and_data_values_name_their_key(key, value, want):
    config = ssdlite_mobilenet_v3_small_shapes.get_config()
    node = config
    *parents, name = key.split(".")
    for part in parents:
        node = node[part]
    node[name] = value
    with pytest.raises(ValueError, match=rf"config\.{re.escape(key)}: must be {re.escape(want)}"):
        check_config(config)


def test_a_minimum_above_its_maximum_names_both_keys():
    config = lraspp_mobilenet_v3_small_shapes.get_config()
    config.data.min_scale, config.data.max_scale = 2.0, 0.5
    with pytest.raises(ValueError, match=r"config\.data\.min_scale: must not exceed config\.data"):
        check_config(config)
    detection = ssdlite_mobilenet_v3_small_shapes.get_config()
    detection.model.anchors.min_scale, detection.model.anchors.max_scale = 0.9, 0.2
    assert "model.anchors.min_scale" in "; ".join(config_problems(detection))


@pytest.mark.parametrize(
    "module,arg,word",
    [
        (ssdlite_finetune_own_data, "smok", "smok"),
        (ssdlite_finetune_own_data, "enlarged,coconut", "coconut, enlarged"),
        (lraspp_finetune_own_masks, "lrage", "lrage"),
    ],
)
def test_fine_tuning_config_arguments_are_whole_words(module, arg, word):
    with pytest.raises(ValueError, match=f"unknown config argument {word} in"):
        module.get_config(arg)
    with pytest.raises(ValueError, match="pick one of small and large"):
        module.get_config("small,large")
    assert module.get_config("large,smoke").model.backbone == "mobilenet_v3_large"
