"""SSDLite end to end in-process: published counts, the input pipeline's targets, overfitting."""

import numpy as np
import pytest
import tensorflow as tf

from ondevice_vision.configs import (
    ssdlite_mobilenet_edgetpu_320_coco,
    ssdlite_mobilenet_v3_large_320_coco,
    ssdlite_mobilenet_v3_small_320_coco,
    ssdlite_mobilenet_v3_small_shapes,
)
from ondevice_vision.data.label_map import LabelMap
from ondevice_vision.heads.anchors import anchor_boxes
from ondevice_vision.heads.target_assigner import pairwise_iou
from ondevice_vision.model_stats import count_madds, count_params
from ondevice_vision.tasks import detection as detection_task


@pytest.mark.parametrize(
    ("module", "params", "madds"),
    [
        (ssdlite_mobilenet_v3_large_320_coco, 3.22e6, 0.51e9),
        (ssdlite_mobilenet_v3_small_320_coco, 1.77e6, 0.16e9),
    ],
)
def test_coco_detectors_reproduce_paper_table_6(module, params, madds):
    config = module.get_config()
    model = detection_task.build_model(config)
    assert count_params(model)["trainable_params"] == pytest.approx(params, rel=0.02)
    assert count_madds(model, (320, 320)) == pytest.approx(madds, rel=0.05)
    outputs = model(np.zeros((1, 320, 320, 3), np.uint8))
    assert outputs["box_outputs"].shape == (1, 2034, 4)
    assert outputs["class_outputs"].shape == (1, 2034, 91)


def test_edgetpu_detector_and_other_input_sizes():
    config = ssdlite_mobilenet_edgetpu_320_coco.get_config()
    config.model.num_classes = 7
    model = detection_task.build_model(config)
    for size in ((320, 320), (256, 384)):
        outputs = model(np.zeros((1, *size, 3), np.float32))
        anchors = anchor_boxes(model.anchor_options, model.num_feature_maps, size)
        assert outputs["box_outputs"].shape == (1, len(anchors), 4)
        assert outputs["class_outputs"].shape == (1, len(anchors), 8)


def test_coco_category_id_label_space_has_the_od_api_90_slots():
    config = ssdlite_mobilenet_v3_large_320_coco.get_config()
    source = LabelMap(names=("person", "bicycle", "toothbrush"), dataset_ids=(1, 2, 90))
    model_map = detection_task.model_label_map(config, source)
    assert model_map.num_classes == 90
    assert model_map.dataset_ids[89] == 90 and model_map.names[89] == "toothbrush"
    assert model_map.names[2] == "unused_3"
    config.model.num_classes = 80
    with pytest.raises(ValueError, match="num_classes >= 90"):
        detection_task.model_label_map(config, source)


def test_input_pipeline_targets_match_ground_truth():
    config = ssdlite_mobilenet_v3_small_shapes.get_config("smoke")
    config.data.augment = False
    ds, label_map = detection_task.build_dataset(config, "eval", batch_size=2)
    images, labels = next(iter(ds))
    assert images.shape == (2, 128, 128, 3) and images.dtype == tf.float32
    assert label_map.names[:2] == ("circle", "square")
    m = config.model
    anchors = anchor_boxes(m.anchors, 2 + len(m.extra_depths), m.input_size)
    for i in range(2):
        n = int(tf.reduce_sum(tf.cast(labels["gt_classes"][i] >= 0, tf.int32)))
        assert n >= 1
        positives = labels["cls_targets"][i].numpy() > 0
        # Every object is force-matched to at least one anchor, with its class.
        assert positives.sum() >= n
        assert set(labels["cls_targets"][i].numpy()[positives] - 1) <= set(
            labels["gt_classes"][i].numpy()[:n]
        )
        assert labels["num_positives"][i] == positives.sum()
        best = pairwise_iou(labels["gt_boxes"][i][:n], tf.constant(anchors)).numpy().argmax(1)
        assert positives[best].all()


@pytest.mark.parametrize("augment", [False, True])
def test_matching_in_the_train_step_gives_the_pipelines_targets_and_losses(augment):
    """data.anchor_matching: "train_step" batches carry no targets, and the loss matches them
    itself; the targets and losses are those of matching in the input pipeline, bit for bit."""
    config = ssdlite_mobilenet_v3_small_shapes.get_config("smoke")
    config.data.augment = augment
    config.train.shuffle_buffer = 1  # the same order in both pipelines
    assert config.data.anchor_matching == "train_step"
    m = config.model
    tf.random.set_seed(1)
    ds, _ = detection_task.build_dataset(config, "train", batch_size=4)
    images, labels = next(iter(ds))
    assert "cls_targets" not in labels and "gt_boxes" in labels
    _, matched = detection_task.add_targets(
        images,
        labels,
        config,
        tf.constant(anchor_boxes(m.anchors, 2 + len(m.extra_depths), m.input_size)),
    )
    host = config.copy_and_resolve_references()
    host.data.anchor_matching = "input_pipeline"
    tf.random.set_seed(1)
    host_ds, _ = detection_task.build_dataset(host, "train", batch_size=4)
    host_images, host_labels = next(iter(host_ds))
    if not augment:  # the random crops differ between two pipelines, the rule does not
        np.testing.assert_array_equal(images.numpy(), host_images.numpy())
        for key in ("cls_targets", "cls_weights", "box_targets", "box_weights", "num_positives"):
            np.testing.assert_array_equal(matched[key].numpy(), host_labels[key].numpy(), key)
    model = detection_task.build_model(config)
    outputs = model(images, training=False)
    in_step = detection_task.compute_losses(config, outputs, labels)
    precomputed = detection_task.compute_losses(host, outputs, matched)
    for a, b in zip(tf.nest.flatten(in_step), tf.nest.flatten(precomputed), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert float(tf.reduce_sum(in_step[1])) > 0  # some anchors matched: the check is not empty


def test_overfits_two_images_and_recovers_their_boxes(overfit_detector):
    """120 steps on two 128x128 images (tests/helpers/export_fixtures.py:
    overfit_detection_config): every ground-truth box is found again. The int8 export tests
    use the same trained model."""
    config, model, result = overfit_detector
    assert result["step"] == 120
    ds, _ = detection_task.build_dataset(config, "train", batch_size=2, repeat=False)
    images, labels = next(iter(ds))
    predictions = detection_task.predict(config, model, images)
    for i in range(2):
        n = int(np.sum(labels["gt_classes"][i].numpy() >= 0))
        keep = predictions["detection_scores"][i].numpy() > 0.3
        boxes = predictions["detection_boxes"][i].numpy()[keep]
        classes = predictions["detection_classes"][i].numpy()[keep]
        for box, cls in zip(
            labels["gt_boxes"][i].numpy()[:n], labels["gt_classes"][i].numpy()[:n], strict=True
        ):
            ious = pairwise_iou(box[None], boxes).numpy()[0] if len(boxes) else np.zeros(0)
            hits = (ious > 0.5) & (classes == cls)
            assert hits.any(), f"image {i}: no detection of class {cls} at IoU > 0.5 for {box}"
