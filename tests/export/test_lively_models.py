"""The export tests' lively models (`lively_model` in tests/helpers/export_fixtures.py, shared as
tests/conftest.py's `lively_detector` / `lively_segmenter`) are fit for their purpose: their
outputs depend strongly on the input, where a freshly built model's barely do."""

import numpy as np
import tensorflow as tf

from ondevice_vision import tasks
from tests.helpers.export_fixtures import (
    detection_config,
    eval_images,
    segmentation_config,
)


def test_lively_detector_depends_on_its_input(lively_detector):
    config = detection_config()
    images = eval_images(config)
    plain = tasks.get_task(config).build_model(config)(images.astype("float32"))
    lively = lively_detector(images.astype("float32"))
    for outputs, expect_lively in ((plain, False), (lively, True)):
        logits = outputs["class_outputs"].numpy()
        across_images = logits.std(axis=0).mean()
        assert (across_images > 0.5) == expect_lively, across_images
    scores = tf.sigmoid(lively["class_outputs"][..., 1:]).numpy()
    # Many confident and many unconfident anchors, different per image.
    assert 0.001 < (scores > 0.5).mean() < 0.5
    assert np.abs(scores[0] - scores[1]).max() > 0.3


def test_lively_segmenter_predicts_several_classes(lively_segmenter):
    config = segmentation_config()
    images = eval_images(config)
    logits = lively_segmenter(images.astype("float32")).numpy()
    assert logits.std(axis=0).mean() > 0.5
    assert len(np.unique(logits.argmax(-1))) >= 2
