"""The fine-tuning configs resolve to what their docstrings promise."""

from __future__ import annotations

import pytest

from ondevice_vision.configs import lraspp_finetune_own_masks, ssdlite_finetune_own_data
from ondevice_vision.train.init_from_checkpoint import resolve_mode


@pytest.mark.parametrize(
    "arg, backbone, source",
    [
        (None, "mobilenet_v3_small", "voc_folder"),
        ("large", "mobilenet_v3_large", "voc_folder"),
        ("large,coco", "mobilenet_v3_large", "coco_folder"),
        ("small,coco", "mobilenet_v3_small", "coco_folder"),
    ],
)
def test_detection_fine_tuning_config(arg, backbone, source):
    config = ssdlite_finetune_own_data.get_config(arg)
    assert (config.model.backbone, config.data.source) == (backbone, source)
    assert resolve_mode(config.train.init_checkpoint_mode) == "all_but_class_layers"
    assert config.train.bn_recalibration_steps > 0
    if source == "voc_folder":
        assert (config.data.train_image_set, config.data.eval_image_set) == ("train", "val")
    smoke = ssdlite_finetune_own_data.get_config(f"{arg or ''},smoke")
    assert smoke.data.source == "shapes" and smoke.train.total_steps < 10


@pytest.mark.parametrize("arg", [None, "large"])
def test_mask_fine_tuning_config(arg):
    config = lraspp_finetune_own_masks.get_config(arg)
    assert config.data.source == "mask_folder"
    assert config.model.backbone.endswith("large" if arg else "small")
    assert resolve_mode(config.train.init_checkpoint_mode) == "all_but_class_layers"
    assert config.model.bn_momentum == 0.99 and config.train.bn_recalibration_steps > 0
    assert lraspp_finetune_own_masks.get_config("smoke").data.source == "synthetic"
