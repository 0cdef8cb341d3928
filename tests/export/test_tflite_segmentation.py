"""Float and fp16 TFLite segmenters: logits match the Keras model, probabilities and class maps
match the SavedModel's serving function, and other image sizes are resized in and out."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from ondevice_vision import tasks
from ondevice_vision.export import tflite
from ondevice_vision.export.exported_model import load_exported_model
from tests.helpers.export_fixtures import (
    eval_images,
    label_map,
    operators,
    segmentation_config,
)


@pytest.fixture(scope="module")
def case(tmp_path_factory, lively_segmenter):
    root = tmp_path_factory.mktemp("tflite_segmentation")
    config = segmentation_config()
    model = lively_segmenter
    labels = label_map(config)
    size = tuple(config.model.input_size)
    models = {
        q: load_exported_model(
            tflite.export_tflite(config, model, labels, str(root / q), size, quantization=q),
            num_threads=2,
        )
        for q in ("none", "fp16")
    }
    return config, model, labels, eval_images(config), models


def _serving(config, model, labels, input_size=None):
    functions = tasks.get_task(config).make_export(
        config, model, labels, input_size, with_probabilities=True
    )
    return lambda images: {k: v.numpy() for k, v in functions.serving_default(images).items()}


def test_float_logits_match_the_keras_model(case):
    config, model, _, images, models = case
    assert images.shape[1:3] == tuple(config.model.input_size)
    for image in images:
        want = model(image[None].astype("float32")).numpy()
        got = models["none"].run(image[None])["logits"]
        assert want.std() > 0.3  # logits of a lively network, not near-zero noise
        np.testing.assert_allclose(got, want, atol=1e-3)


def test_float_probabilities_and_maps_match_the_saved_model(case):
    config, model, labels, images, models = case
    want = _serving(config, model, labels)(images)
    got = models["none"].predict(images, with_probabilities=True)
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=1e-3)
    assert (got["semantic_map"] == want["semantic_map"]).mean() > 0.999
    assert len(np.unique(want["semantic_map"])) >= 3


def test_fp16_stays_close_to_float(case):
    _, model, _, images, models = case
    want = model(images.astype("float32")).numpy()
    got = np.concatenate([models["fp16"].run(image[None])["logits"] for image in images])
    assert np.abs(got - want).max() <= 0.02 * np.ptp(want)
    assert (got.argmax(-1) == want.argmax(-1)).mean() > 0.98
    names = {name for name, _, _ in operators(models["fp16"].path)[1]}
    assert "DEQUANTIZE" in names  # float16 weights, expanded to float32 at load
    assert models["fp16"].info.quantization == "fp16"


def test_other_image_sizes_are_resized_in_and_out(case):
    config, model, labels, images, models = case
    bigger = tf.image.resize(images[:2], (80, 120), method="nearest").numpy().astype(np.uint8)
    want = _serving(config, model, labels, tuple(config.model.input_size))(bigger)
    got = models["none"].predict(bigger, with_probabilities=True)
    assert got["semantic_map"].shape == (2, 80, 120)
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], atol=1e-3)
    assert (got["semantic_map"] == want["semantic_map"]).mean() > 0.999
