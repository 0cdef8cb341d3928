"""The COCO recipes initialise as the Object Detection API's zoo configs set it.

feature_extractor: truncated_normal_initializer { stddev: 0.03 } for every convolution (backbone
with depthwise and squeeze-excite, extra layers); box_predictor: random_normal_initializer
{ stddev: 0.03 } (tensorflow/models, research/object_detection/samples/configs/ssdlite_*.config).
"""

import importlib

import keras
import numpy as np
import pytest

from ondevice_vision.models import ssdlite


def _kernel_initializer(layer):
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return layer.depthwise_initializer
    return layer.kernel_initializer


def _convs(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _convs(layer)
        elif isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D):
            yield layer


@pytest.mark.parametrize(
    "config_name",
    [
        "ssdlite_mobilenet_v3_large_320_coco",
        "ssdlite_mobilenet_v3_small_320_coco",
        "ssdlite_mobilenet_edgetpu_320_coco",
    ],
)
def test_every_layer_initialises_as_the_od_api_config(config_name):
    config = importlib.import_module(f"ondevice_vision.configs.{config_name}").get_config()
    model = ssdlite.build_detector(config.model)
    counts = {"feature": 0, "predictor": 0}
    for layer in _convs(model):
        init = _kernel_initializer(layer)
        if "predictor" in layer.name:
            expected, kind = keras.initializers.RandomNormal, "predictor"
        else:
            expected, kind = keras.initializers.TruncatedNormal, "feature"
        assert type(init) is expected, (layer.name, init)
        assert init.get_config()["stddev"] == 0.03 and init.get_config()["mean"] == 0.0
        counts[kind] += 1
        kernel = layer.kernel.numpy()
        if kind == "feature":
            # Truncated at two standard deviations, as TF1's truncated_normal_initializer.
            assert np.abs(kernel).max() <= 0.06 + 1e-6, layer.name
        if layer.use_bias and "class_predictor" not in layer.name:
            np.testing.assert_array_equal(layer.bias.numpy(), 0.0)
    # 6 levels x (box, class) x (depthwise, 1x1) predictor convs; the rest is feature extractor.
    assert counts["predictor"] == 24 and counts["feature"] > 40
    class_bias = model.get_layer("class_predictor_0_conv").bias.numpy()
    np.testing.assert_allclose(class_bias, -4.6)


def test_the_shapes_demo_keeps_keras_defaults_in_the_backbone():
    from ondevice_vision.configs import ssdlite_mobilenet_v3_small_shapes

    model = ssdlite.build_detector(ssdlite_mobilenet_v3_small_shapes.get_config().model)
    init = model.backbone.get_layer("conv").kernel_initializer
    assert isinstance(init, keras.initializers.GlorotUniform)
