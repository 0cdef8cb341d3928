"""The DeepLab-release LR-ASPP configs: published numbers in the docstrings, exact counts."""

import pytest

from ondevice_vision.configs import (
    lraspp_mobilenet_v3_large_cityscapes_deeplab as large_config,
)
from ondevice_vision.configs import (
    lraspp_mobilenet_v3_small_cityscapes_deeplab as small_config,
)
from ondevice_vision.model_stats import count_madds, count_params
from ondevice_vision.models.lraspp import Segmenter
from ondevice_vision.models.lraspp_decoder import AttentionPooling, QSigmoid, ResizeToMatch
from ondevice_vision.tasks import segmentation as segmentation_task

# (config module, DeepLab zoo mIoU, our trainable parameters, our MAdds at 1024x2048)
CASES = {
    "large": (large_config, "72.41", 1_507_198, 7_624_353_920),
    "small": (small_config, "68.99", 468_830, 2_102_607_616),
}


@pytest.mark.parametrize("name", list(CASES))
def test_counts_at_1024x2048_and_the_published_miou(name):
    module, miou, params, madds = CASES[name]
    assert f"Target: {miou} mIoU on Cityscapes val" in module.__doc__
    config = module.get_config()
    assert config.model.lraspp_variant == "deeplab" and config.model.output_stride == 32
    model = segmentation_task.build_model(config)
    assert count_params(model)["trainable_params"] == params
    assert count_madds(model, (1024, 2048)) == madds
    # DeepLab's head: hard-sigmoid gate, pooling 25x25 every (4, 5), align_corners resizes.
    layers = {layer.name: layer for layer in model.layers}
    assert isinstance(layers["lraspp_attention_sigmoid"], QSigmoid)
    pool = layers["lraspp_attention_pool"]
    assert isinstance(pool, AttentionPooling)
    assert pool.window == (25, 25) and pool.strides == (4, 5)
    resizes = [layer for layer in model.layers if isinstance(layer, ResizeToMatch)]
    assert len(resizes) == 3 and all(r.align_corners for r in resizes)
    assert layers["lraspp_semantic_bn"].epsilon == 1e-5
    clone = Segmenter.from_config(model.get_config())
    assert clone.lraspp_variant == "deeplab"


def test_the_paper_variant_is_the_default():
    config = large_config.get_config()
    config.model.lraspp_variant = "paper"
    config.model.output_stride = 16
    model = segmentation_task.build_model(config)
    layers = {layer.name: layer for layer in model.layers}
    assert layers["lraspp_attention_sigmoid"].get_config()["activation"] == "sigmoid"
    assert layers["lraspp_attention_pool"].strides == (16, 20)
    with pytest.raises(ValueError, match="lraspp_variant must be one of"):
        Segmenter("mobilenet_v3_small", 4, lraspp_variant="torchvision")


def test_coco_polygons_recipe_words():
    from ondevice_vision.configs import checks, lraspp_coco_polygons

    config = lraspp_coco_polygons.get_config("small,deeplab,inverse_frequency")
    assert config.data.source == "coco_folder" and config.model.lraspp_variant == "deeplab"
    assert config.model.output_stride == 32 and config.loss.class_weights == "inverse_frequency"
    assert lraspp_coco_polygons.get_config().model.lraspp_variant == "paper"
    checks.check_config(config)
    with pytest.raises(ValueError, match="unknown config argument"):
        lraspp_coco_polygons.get_config("deeplap")
