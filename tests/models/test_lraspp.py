import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from ondevice_vision.backbones import BACKBONES
from ondevice_vision.model_stats import count_madds, count_params
from ondevice_vision.models.lraspp import Segmenter
from ondevice_vision.models.lraspp_decoder import (
    AttentionPooling,
    ResizeToMatch,
    lraspp_decoder,
    paper_pooling_geometry,
)

# Paper Table 7 / Table 8 (docs/reference_facts.md): trainable params, MAdds at 1024x2048 OS16 and OS32.
PAPER = {
    "mobilenet_v3_large": (1.51e6, 9.74e9, 7.74e9),
    "mobilenet_v3_small": (0.47e6, 2.90e9, 2.06e9),
}
FULL = (1024, 2048)


def _images(batch, height, width, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, height, width, 3)).astype("float32")


def _numpy_avg_pool(x, window, strides):
    """VALID average pooling with the window clamped to the input, one loop per output cell."""
    _, height, width, _ = x.shape
    wh, ww = min(window[0], height), min(window[1], width)
    rows = (height - wh) // strides[0] + 1
    cols = (width - ww) // strides[1] + 1
    out = np.zeros((x.shape[0], rows, cols, x.shape[3]), np.float64)
    for i in range(rows):
        for j in range(cols):
            r, c = i * strides[0], j * strides[1]
            out[:, i, j] = x[:, r : r + wh, c : c + ww].mean(axis=(1, 2))
    return out


# --- attention pooling -------------------------------------------------------------------------


def test_paper_pooling_geometry_reproduces_the_paper_and_covers_the_crop():
    assert paper_pooling_geometry(769, 16) == ((49, 49), (16, 20))
    for crop, stride in [((513, 1025), 16), ((769, 769), 32), ((321, 321), 8)]:
        window, strides = paper_pooling_geometry(crop, stride)
        for c, w in zip(crop, window, strict=True):
            # The window is the feature size of a training crop under SAME padding.
            assert (w - 1) * stride < c <= w * stride
        assert all(1 <= s <= w for s, w in zip(strides, window, strict=True))


@pytest.mark.parametrize(
    "shape", [(2, 11, 17, 3), (1, 4, 30, 2), (1, 30, 4, 2), (1, 3, 3, 5), (1, 1, 1, 1)]
)
def test_paper_pooling_matches_numpy_and_clamps_small_inputs(shape):
    x = np.random.default_rng(1).normal(size=shape).astype("float32")
    layer = AttentionPooling("paper", window=(5, 7), strides=(2, 3))
    got = layer(x).numpy()
    np.testing.assert_allclose(got, _numpy_avg_pool(x, (5, 7), (2, 3)), rtol=1e-5, atol=1e-6)
    assert tuple(layer.compute_output_shape(shape)) == got.shape


def test_paper_pooling_agrees_with_tf_avg_pool_when_the_window_fits():
    x = tf.random.stateless_normal((2, 64, 128, 8), seed=(1, 2))
    got = AttentionPooling("paper", window=(49, 49), strides=(16, 20))(x)
    want = tf.nn.avg_pool2d(x, (49, 49), (16, 20), "VALID")
    assert got.shape == (2, 1, 4, 8)  # the paper's pooled grid on a 1024x2048 image at OS16
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


def test_paper_pooling_runs_with_unknown_spatial_dimensions():
    layer = AttentionPooling("paper", window=(5, 7), strides=(2, 3))
    pool = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, 2), tf.float32)])
    for shape in [(1, 3, 40, 2), (2, 12, 12, 2)]:
        x = np.random.default_rng(2).normal(size=shape).astype("float32")
        np.testing.assert_allclose(
            pool(x).numpy(), _numpy_avg_pool(x, (5, 7), (2, 3)), rtol=1e-5, atol=1e-6
        )


def test_global_pooling_is_the_spatial_mean():
    x = np.random.default_rng(3).normal(size=(2, 5, 9, 4)).astype("float32")
    got = AttentionPooling("global")(x).numpy()
    np.testing.assert_allclose(got, x.mean(axis=(1, 2), keepdims=True), rtol=1e-5, atol=1e-6)


def test_bad_pooling_options_are_rejected():
    with pytest.raises(ValueError, match="attention pooling"):
        AttentionPooling("max")
    with pytest.raises(ValueError, match="window"):
        AttentionPooling("paper", window=(0, 3))
    with pytest.raises(ValueError, match="attention_pooling"):
        Segmenter("mobilenet_v3_small", 3, attention_pooling="mean")
    with pytest.raises(ValueError, match="output_stride"):
        Segmenter("mobilenet_v3_small", 3, output_stride=4)


def test_custom_layers_config_round_trip():
    x = np.random.default_rng(4).normal(size=(1, 9, 13, 3)).astype("float32")
    pool = AttentionPooling("paper", window=(4, 6), strides=(2, 5), name="pool")
    clone = AttentionPooling.from_config(pool.get_config())
    assert clone.get_config() == pool.get_config()
    np.testing.assert_array_equal(clone(x).numpy(), pool(x).numpy())

    resize = ResizeToMatch(name="resize")
    clone = ResizeToMatch.from_config(resize.get_config())
    assert clone.get_config() == resize.get_config()
    reference = np.zeros((1, 20, 7, 1), np.uint8)
    got = clone([x, reference]).numpy()
    assert got.shape == (1, 20, 7, 3)
    np.testing.assert_array_equal(got, tf.image.resize(x, (20, 7)).numpy())


# --- decoder wiring against a NumPy reference --------------------------------------------------


@pytest.mark.parametrize("pooling", ["paper", "global"])
def test_decoder_matches_numpy_reference(pooling):
    rng = np.random.default_rng(5)
    low_in = keras.Input((None, None, 6))
    high_in = keras.Input((None, None, 10))
    image_in = keras.Input((None, None, 3))
    out = lraspp_decoder(
        low_in,
        high_in,
        image_in,
        num_classes=3,
        filters=4,
        attention_pooling=pooling,
        pool_window=(3, 3),
        pool_strides=(1, 2),
    )
    model = keras.Model([low_in, high_in, image_in], out)
    for w in model.weights:
        w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32") * rng.choice([-1, 1], w.shape))
    bn = model.get_layer("lraspp_semantic_bn")
    bn.moving_variance.assign(np.abs(bn.moving_variance.numpy()))

    low = rng.normal(size=(2, 8, 10, 6)).astype("float32")
    high = rng.normal(size=(2, 4, 5, 10)).astype("float32")
    image = np.zeros((2, 31, 37, 3), np.float32)
    got = model([low, high, image], training=False).numpy()

    def conv(x, name):
        layer = model.get_layer(name)
        y = x @ layer.kernel.numpy()[0, 0]
        return y + layer.bias.numpy() if layer.use_bias else y

    g, b = bn.gamma.numpy(), bn.beta.numpy()
    mean, var = bn.moving_mean.numpy(), bn.moving_variance.numpy()
    semantic = np.maximum(
        g * (conv(high, "lraspp_semantic_conv") - mean) / np.sqrt(var + 1e-3) + b, 0
    )
    if pooling == "paper":
        pooled = _numpy_avg_pool(high, (3, 3), (1, 2))
    else:
        pooled = high.mean(axis=(1, 2), keepdims=True)
    gate = 1 / (1 + np.exp(-conv(pooled, "lraspp_attention_conv")))
    gate = tf.image.resize(gate, (4, 5)).numpy()  # bilinear, half-pixel centres
    gated = tf.image.resize(semantic * gate, (8, 10)).numpy()
    logits = conv(gated, "lraspp_high_logits") + conv(low, "lraspp_low_logits")
    want = tf.image.resize(logits, (31, 37)).numpy()
    assert got.shape == (2, 31, 37, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# --- segmenter: the paper's counts -------------------------------------------------------------


def _head_counts(low_ch, high_ch, filters, classes, output_stride, window, strides):
    """Closed-form trainable params and MAdds of the decoder at 1024x2048."""
    params = high_ch * filters + 2 * filters  # semantic conv + BN gamma/beta
    params += high_ch * filters + filters  # attention conv with bias
    params += (filters + 1) * classes + (low_ch + 1) * classes
    high_hw = [math.ceil(s / output_stride) for s in FULL]
    low_hw = [math.ceil(s / 8) for s in FULL]
    pooled = [
        (size - min(w, size)) // s + 1 for size, w, s in zip(high_hw, window, strides, strict=True)
    ]
    madds = math.prod(high_hw) * high_ch * filters + math.prod(pooled) * high_ch * filters
    madds += math.prod(low_hw) * (filters + low_ch) * classes
    # Bilinear resizes, 4 multiply-adds per output value: attention gate to the semantic map,
    # product to stride 8, logits to the input size.
    madds += 4 * (math.prod(high_hw) * filters + math.prod(low_hw) * filters)
    madds += 4 * math.prod(FULL) * classes
    return params, madds


@pytest.mark.parametrize("name", ["mobilenet_v3_large", "mobilenet_v3_small"])
def test_counts_reproduce_the_paper(name):
    paper_params, paper_madds_os16, paper_madds_os32 = PAPER[name]
    madds = {}
    for output_stride in (16, 32):
        model = Segmenter(name, 19, output_stride=output_stride)
        madds[output_stride] = count_madds(model, FULL)
        # The decoder on top of the backbone is exactly the paper's Figure 10.
        backbone = model.backbone
        low_ch = backbone.output["lraspp_low"].shape[-1]
        high_ch = backbone.output["lraspp_high"].shape[-1]
        window, strides = paper_pooling_geometry(769, output_stride)
        head_params, head_madds = _head_counts(
            low_ch, high_ch, 128, 19, output_stride, window, strides
        )
        params = count_params(model)["trainable_params"]
        assert params - count_params(backbone)["trainable_params"] == head_params
        assert madds[output_stride] - count_madds(backbone, FULL) == head_madds

    # reduced_tail="segmentation" (DeepLab's *_seg tail) reproduces Table 7/8 (models/lraspp.py).
    assert params == pytest.approx(paper_params, rel=0.05)
    assert madds[16] == pytest.approx(paper_madds_os16, rel=0.05)
    assert madds[32] == pytest.approx(paper_madds_os32, rel=0.05)


def test_head_options_change_the_counts_as_expected():
    model = Segmenter(
        "mobilenet_v3_small", 7, head_filters=256, attention_pooling="global", reduced_tail=None
    )
    backbone = model.backbone
    low_ch = backbone.output["lraspp_low"].shape[-1]
    high_ch = backbone.output["lraspp_high"].shape[-1]
    assert high_ch == 576  # no reduced tail
    # Global pooling: one pooled cell, i.e. a window covering the whole map.
    params, madds = _head_counts(low_ch, high_ch, 256, 7, 16, (10**6, 10**6), (1, 1))
    assert (
        count_params(model)["trainable_params"] - count_params(backbone)["trainable_params"]
        == params
    )
    assert count_madds(model, FULL) - count_madds(backbone, FULL) == madds


# --- segmenter: shapes, backbones, serialisation -----------------------------------------------


@pytest.fixture(scope="module")
def small_segmenter():
    return Segmenter("mobilenet_v3_small", 5)


@pytest.mark.parametrize("size", [(97, 131), (256, 512), (33, 17), (1, 1)])
def test_output_is_float32_logits_at_input_size(small_segmenter, size):
    # Paper pooling with inputs far below the 769 crop: the window clamps to the feature map.
    out = small_segmenter(_images(2, *size), training=False)
    assert tuple(out.shape) == (2, *size, 5) and out.dtype == tf.float32
    assert np.all(np.isfinite(out.numpy()))


def test_uint8_input_gives_the_same_logits(small_segmenter):
    pixels = np.random.default_rng(6).integers(0, 256, (1, 40, 48, 3), dtype=np.uint8)
    np.testing.assert_allclose(
        small_segmenter(pixels, training=False).numpy(),
        small_segmenter(pixels.astype("float32"), training=False).numpy(),
        rtol=1e-6,
        atol=1e-6,
    )


def test_global_pooling_and_output_stride_32_shapes():
    model = Segmenter(
        "mobilenet_v3_small", 2, attention_pooling="global", output_stride=32, head_filters=16
    )
    assert model.get_layer("lraspp_attention_pool").mode == "global"
    assert tuple(model(_images(1, 70, 90), training=False).shape) == (1, 70, 90, 2)


def test_paper_pooling_window_follows_crop_and_output_stride():
    model = Segmenter("mobilenet_v3_small", 2, output_stride=32, crop_size=(513, 1025))
    pool = model.get_layer("lraspp_attention_pool")
    assert pool.window == (17, 33)
    model = Segmenter("mobilenet_v3_small", 2, attention_pool_strides=(4, 5))
    pool = model.get_layer("lraspp_attention_pool")
    assert pool.window == (49, 49) and pool.strides == (4, 5)


@pytest.mark.parametrize("name", BACKBONES)
def test_every_backbone_builds_and_runs(name):
    model = Segmenter(name, 3)
    out = model(_images(1, 64, 64), training=False)
    assert tuple(out.shape) == (1, 64, 64, 3) and out.dtype == tf.float32


def test_mixed_precision_output_is_float32():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = Segmenter("mobilenet_v3_small", 4, head_filters=16)
        assert model.get_layer("lraspp_gate").compute_dtype == "float16"
        out = model(_images(1, 48, 40), training=False)
    finally:
        keras.config.set_dtype_policy(previous)
    assert out.dtype == tf.float32 and tuple(out.shape) == (1, 48, 40, 4)


def test_keras_file_round_trip(tmp_path, small_segmenter):
    path = os.path.join(tmp_path, "segmenter.keras")
    images = _images(2, 64, 80, seed=7)
    # Non-trivial BN statistics so a weight that fails to load would show.
    small_segmenter(images, training=True)
    want = small_segmenter(images, training=False).numpy()
    small_segmenter.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, Segmenter)
    assert restored.get_config() == small_segmenter.get_config()
    np.testing.assert_array_equal(restored(images, training=False).numpy(), want)


def test_segmenter_config_round_trip():
    model = Segmenter(
        "mobilenet_v3_small_minimalistic",
        4,
        depth_multiplier=0.75,
        reduced_tail="detection",
        output_stride=32,
        head_filters=64,
        attention_pooling="global",
        crop_size=512,
        bn_momentum=0.97,
    )
    clone = Segmenter.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    assert count_params(clone) == count_params(model)
