"""Backbones reproduce the published parameter counts and MAdds to the unit."""

import os

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

from ondevice_vision.backbones import build_backbone
from ondevice_vision.backbones.imagenet_weights import (
    load_keras_application_weights,
    weights_file_name,
)
from ondevice_vision.model_stats import count_madds, count_params

# docs/reference_facts.md: keras.applications counts (weights=None): (total, trainable).
KERAS_COUNTS = {
    ("mobilenet_v3_large", 1.0, True): (5_507_432, 5_483_032),
    ("mobilenet_v3_large", 1.0, False): (2_996_352, 2_971_952),
    ("mobilenet_v3_large", 0.75, True): (4_012_616, 3_993_528),
    ("mobilenet_v3_large", 0.75, False): (1_808_736, 1_789_648),
    ("mobilenet_v3_large_minimalistic", 1.0, True): (3_948_688, 3_924_288),
    ("mobilenet_v3_large_minimalistic", 1.0, False): (1_437_608, 1_413_208),
    ("mobilenet_v3_small", 1.0, True): (2_554_968, 2_542_856),
    ("mobilenet_v3_small", 1.0, False): (939_120, 927_008),
    ("mobilenet_v3_small", 0.75, True): (2_051_552, 2_041_872),
    ("mobilenet_v3_small", 0.75, False): (583_160, 573_480),
    ("mobilenet_v3_small_minimalistic", 1.0, True): (2_056_848, 2_044_736),
    ("mobilenet_v3_small_minimalistic", 1.0, False): (441_000, 428_888),
}


@pytest.mark.parametrize(("name", "multiplier", "top"), sorted(KERAS_COUNTS))
def test_v3_parameter_counts_match_keras_applications(name, multiplier, top):
    model = build_backbone(name, depth_multiplier=multiplier, include_top=top)
    counts = count_params(model)
    assert (counts["params"], counts["trainable_params"]) == KERAS_COUNTS[(name, multiplier, top)]


@pytest.mark.parametrize(
    ("multiplier", "slim_trainable", "slim_total", "model_garden"),
    [(1.0, 4_092_713, 4_131_593, 2_849_312), (0.75, 2_989_441, 3_019_569, 1_737_288)],
)
def test_edgetpu_counts_match_slim_and_model_garden(
    multiplier, slim_trainable, slim_total, model_garden
):
    classifier = build_backbone(
        "mobilenet_edgetpu", depth_multiplier=multiplier, include_top=True, num_classes=1001
    )
    assert count_params(classifier) == {"params": slim_total, "trainable_params": slim_trainable}
    features = build_backbone("mobilenet_edgetpu", depth_multiplier=multiplier)
    assert features.count_params() == model_garden


@pytest.mark.parametrize(
    ("name", "classes", "published"),
    [
        ("mobilenet_v3_large", 1000, 216.6e6),
        ("mobilenet_v3_small", 1000, 56.5e6),
        ("mobilenet_v3_large_minimalistic", 1000, 209.1e6),
        ("mobilenet_edgetpu", 1001, 990.7e6),
    ],
)
def test_madds_at_224_with_top(name, classes, published):
    model = build_backbone(name, include_top=True, num_classes=classes)
    assert abs(count_madds(model, 224) - published) / published < 0.01


def test_madds_scale_with_input_area():
    model = build_backbone("mobilenet_v3_small")
    # No top: every counted op is a conv over a map whose area scales with the input
    # (the SE squeezes on pooled features do not), so 448 costs a bit under 4x 224.
    small, large = count_madds(model, 224), count_madds(model, 448)
    assert 3.8 * small < large < 4.0 * small


@pytest.mark.parametrize(
    ("output_stride", "size", "expect"),
    [
        (32, (224, 224), {"stride_4": 56, "stride_8": 28, "stride_16": 14, "stride_32": 7}),
        (16, (224, 224), {"stride_4": 56, "stride_8": 28, "stride_16": 14, "stride_32": 14}),
        (8, (224, 224), {"stride_4": 56, "stride_8": 28, "stride_16": 28, "stride_32": 28}),
        (32, (97, 131), {"stride_4": 25, "stride_8": 13, "stride_16": 7, "stride_32": 4}),
    ],
)
def test_endpoint_strides(output_stride, size, expect):
    model = build_backbone("mobilenet_v3_large", output_stride=output_stride)
    out = model(np.zeros((1, *size, 3), np.uint8))
    for name, height in expect.items():
        assert out[name].shape[1] == height, name
    assert out["ssd_c4"].shape[-1] == 672
    assert out["lraspp_low"].shape[1:] == (-(-size[0] // 8), -(-size[1] // 8), 120)


@pytest.mark.parametrize(
    ("name", "tail", "c4", "c5"),
    [
        ("mobilenet_v3_large", None, 672, 960),
        ("mobilenet_v3_large", "detection", 672, 480),
        ("mobilenet_v3_small", "detection", 288, 288),
        ("mobilenet_v3_small", None, 288, 576),
        ("mobilenet_edgetpu", None, 384, 192),
    ],
)
def test_ssd_taps(name, tail, c4, c5):
    model = build_backbone(name, reduced_tail=tail, endpoints=("ssd_c4", "ssd_c5"))
    out = model(np.zeros((1, 320, 320, 3), np.float32))
    assert out["ssd_c4"].shape == (1, 20, 20, c4)
    assert out["ssd_c5"].shape == (1, 10, 10, c5)


def test_segmentation_tail_also_halves_the_first_last_stage_expansion():
    model = build_backbone("mobilenet_v3_large", reduced_tail="segmentation")
    assert model.get_layer("expanded_conv_11_project").filters == 112
    assert model.get_layer("expanded_conv_12_expand").filters == 336
    assert model.get_layer("expanded_conv_12_project").filters == 80
    assert model.get_layer("expanded_conv_13_expand").filters == 480
    assert model.get_layer("conv_1").filters == 480
    small = build_backbone("mobilenet_v3_small", reduced_tail="segmentation")
    assert small.get_layer("expanded_conv_8_expand").filters == 144
    assert small.get_layer("conv_1").filters == 288


def test_bad_options_raise():
    with pytest.raises(ValueError, match="Unknown backbone"):
        build_backbone("mobilenet_v9")
    with pytest.raises(ValueError, match="output_stride"):
        build_backbone("mobilenet_v3_small", output_stride=4)
    with pytest.raises(ValueError, match="reduced_tail"):
        build_backbone("mobilenet_v3_small", reduced_tail="half")
    with pytest.raises(ValueError, match="endpoints"):
        build_backbone("mobilenet_v3_small", endpoints=("nope",))


def _randomise(model, seed):
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        value = rng.normal(0.0, 0.2, weight.shape).astype("float32")
        if "moving_variance" in weight.path:
            value = np.abs(value) + 0.5
        weight.assign(value)


def _save_legacy_h5(model, path):
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


@pytest.mark.parametrize(
    ("name", "keras_fn", "kwargs"),
    [
        ("mobilenet_v3_large", keras.applications.MobileNetV3Large, {}),
        ("mobilenet_v3_small", keras.applications.MobileNetV3Small, {"alpha": 0.75}),
        (
            "mobilenet_v3_small_minimalistic",
            keras.applications.MobileNetV3Small,
            {"minimalistic": True},
        ),
    ],
)
def test_keras_application_weights_give_identical_outputs(tmp_path, name, keras_fn, kwargs):
    reference = keras_fn(
        weights=None,
        input_shape=(None, None, 3),
        include_top=True,
        classifier_activation=None,
        **kwargs,
    )
    _randomise(reference, seed=1)
    path = os.path.join(tmp_path, "weights.h5")
    _save_legacy_h5(reference, path)
    ours = build_backbone(name, depth_multiplier=kwargs.get("alpha", 1.0), include_top=True)
    loaded = load_keras_application_weights(ours, path)
    assert len(loaded) == len([layer for layer in reference.layers if layer.weights])
    # The classifier-less backbone takes the same file and matches keras' own no-top model.
    features = build_backbone(name, depth_multiplier=kwargs.get("alpha", 1.0))
    load_keras_application_weights(features, path)
    reference_features = keras_fn(
        weights=None, input_shape=(None, None, 3), include_top=False, **kwargs
    )
    for layer in reference_features.layers:
        if layer.weights:
            layer.set_weights(reference.get_layer(layer.name).get_weights())
    rng = np.random.default_rng(0)
    for size in ((224, 224), (320, 256)):
        images = rng.uniform(0, 255, (2, *size, 3)).astype("float32")
        expected = reference(images, training=False).numpy()
        got = ours(images, training=False)["logits"].numpy()
        assert np.max(np.abs(expected - got)) <= 1e-4
        expected = reference_features(images, training=False).numpy()
        got = features(images, training=False)["stride_32"].numpy()
        assert np.max(np.abs(expected - got)) <= 1e-4


def test_weight_file_mismatch_names_the_layer(tmp_path):
    reference = keras.applications.MobileNetV3Small(weights=None, include_top=False)
    path = os.path.join(tmp_path, "small.h5")
    _save_legacy_h5(reference, path)
    with pytest.raises(ValueError, match="expanded_conv_squeeze_excite_conv"):
        load_keras_application_weights(build_backbone("mobilenet_v3_large"), path)
    with pytest.raises(ValueError, match=r"layer 'conv'.*does not match|expanded_conv"):
        load_keras_application_weights(
            build_backbone("mobilenet_v3_small", depth_multiplier=0.5), path
        )


def test_weight_file_names_follow_keras_applications():
    assert (
        weights_file_name("mobilenet_v3_large", 1.0, True)
        == "weights_mobilenet_v3_large_224_1.0_float.h5"
    )
    assert (
        weights_file_name("mobilenet_v3_small_minimalistic", 1.0, False)
        == "weights_mobilenet_v3_small_minimalistic_224_1.0_float_no_top_v2.h5"
    )
    with pytest.raises(ValueError, match="from scratch"):
        weights_file_name("mobilenet_edgetpu", 1.0, False)


def test_keras_file_round_trip(tmp_path):
    model = build_backbone("mobilenet_v3_small", include_top=True, num_classes=7, output_stride=16)
    _randomise(model, seed=3)
    path = os.path.join(tmp_path, "backbone.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    images = np.random.default_rng(1).uniform(0, 255, (1, 96, 128, 3)).astype("float32")
    a, b = model(images), restored(images)
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
    assert restored.get_config() == model.get_config()


def test_uint8_and_float_inputs_agree():
    model = build_backbone("mobilenet_v3_small_minimalistic", endpoints=("stride_32",))
    pixels = np.random.default_rng(2).integers(0, 256, (1, 64, 64, 3)).astype(np.uint8)
    a = model(pixels)["stride_32"].numpy()
    b = model(pixels.astype(np.float32))["stride_32"].numpy()
    np.testing.assert_allclose(a, b, atol=1e-6)
