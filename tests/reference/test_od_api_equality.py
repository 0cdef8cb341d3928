"""Our SSDLite detectors against the TF1 Object Detection API itself, on checkpoints it wrote.

The reference subprocess (od_api_reference.py) builds each zoo config with the OD API's
model_builder, draws random weights and batch-norm statistics, and saves a TF1 checkpoint and
its outputs on natural-looking images; we import that checkpoint with the importer users run on
the zoo's files and must reproduce every number.
"""

import functools
import importlib

import numpy as np
import pytest

from ondevice_vision.heads import losses, target_assigner
from ondevice_vision.heads.anchors import anchor_boxes
from ondevice_vision.importers import od_api
from ondevice_vision.models import ssdlite
from tests.reference import reference_harness

CONFIGS = {
    "ssdlite_v3_large": "ssdlite_mobilenet_v3_large_320_coco",
    "ssdlite_v3_small": "ssdlite_mobilenet_v3_small_320_coco",
    "ssdlite_edgetpu": "ssdlite_mobilenet_edgetpu_320_coco",
}


def config_of(name):
    return importlib.import_module(f"ondevice_vision.configs.{CONFIGS[name]}").get_config()


@functools.cache
def _imported(directory, name):
    model = ssdlite.build_detector(config_of(name).model)
    report = od_api.load_od_api_checkpoint(model, f"{directory}/{name}/model.ckpt")
    return model, report


@functools.cache
def _outputs(directory, name):
    model, _ = _imported(directory, name)
    images = np.load(f"{directory}/inputs.npz")["detection_images"]
    return {k: v.numpy() for k, v in model(images, training=False).items()}


def test_reference_is_the_published_recipe(reference_dir):
    # The figures the OD API's model_builder gives for the zoo's V3-Large config.
    reference = reference_harness.load(reference_dir, "ssdlite_v3_large")
    assert int(reference["trainable_parameters"]) == 3_248_255
    assert reference["anchors"].shape == (2034, 4)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_anchors_equal(reference_dir, name):
    reference = reference_harness.load(reference_dir, name)["anchors"]
    model, _ = _imported(reference_dir, name)
    ours = anchor_boxes(model.anchor_options, model.num_feature_maps, (320, 320))
    np.testing.assert_allclose(ours, reference, atol=1e-6, rtol=0)


def test_anchors_equal_non_square(reference_dir):
    reference = reference_harness.load(reference_dir, "anchors_256x384")["anchors"]
    model, _ = _imported(reference_dir, "ssdlite_v3_large")
    ours = anchor_boxes(model.anchor_options, model.num_feature_maps, (256, 384))
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_import_reports_skipped_training_state(reference_dir, name):
    model, report = _imported(reference_dir, name)
    assert len(report.assigned) == len(model.weights)
    reasons = set(report.skipped.values())
    expected = {
        "ssdlite_v3_large": {"training state", "training step"},
        "ssdlite_v3_small": set(),
        "ssdlite_edgetpu": {"quantisation range"},
    }[name]
    assert reasons == expected


@pytest.mark.parametrize("name", list(CONFIGS))
def test_box_encodings_and_class_logits_equal(reference_dir, name):
    reference = reference_harness.load(reference_dir, name)
    ours = _outputs(reference_dir, name)
    # Natural-scale outputs (std of a few units), so 1e-4 is a tight bound.
    assert reference["box_encodings"].std() > 0.3 and reference["class_predictions"].std() > 0.3
    np.testing.assert_allclose(ours["box_outputs"], reference["box_encodings"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(
        ours["class_outputs"], reference["class_predictions"], atol=1e-4, rtol=0
    )


@pytest.mark.parametrize("name", list(CONFIGS))
def test_postprocessed_detections_equal(reference_dir, name):
    reference = reference_harness.load(reference_dir, name)
    ours = _outputs(reference_dir, name)
    model, _ = _imported(reference_dir, name)
    detections = model.detect(ours, (320, 320))
    np.testing.assert_array_equal(detections["num_detections"], reference["num_detections"])
    np.testing.assert_array_equal(
        detections["detection_classes"], reference["detection_classes"].astype(np.int32)
    )
    np.testing.assert_allclose(
        detections["detection_scores"], reference["detection_scores"], atol=1e-5, rtol=0
    )
    np.testing.assert_allclose(
        detections["detection_boxes"], reference["detection_boxes"], atol=1e-5, rtol=0
    )


def _padded_batch(data):
    """The reference inputs as a padded batch: class -1 past each image's box count (at least
    one padding row, for the image without boxes)."""
    rows = data["gt_boxes"].shape[1] + 1
    boxes = np.zeros((len(data["gt_counts"]), rows, 4), np.float32)
    classes = np.full((len(data["gt_counts"]), rows), -1, np.int32)
    crowd = np.zeros((len(data["gt_counts"]), rows), bool)
    for i, count in enumerate(data["gt_counts"]):
        boxes[i, :count] = data["gt_boxes"][i, :count]
        classes[i, :count] = data["gt_classes"][i, :count]
        crowd[i, :count] = data["gt_is_crowd"][i, :count]
    return boxes, classes, crowd


@pytest.mark.parametrize("name", list(CONFIGS))
def test_training_loss_equal(reference_dir, name):
    """Crowd box, a box across the border and an image without boxes, as the OD API's loss()."""
    reference = reference_harness.load(reference_dir, name)
    data = np.load(f"{reference_dir}/inputs.npz")
    m = config_of(name).model
    ours = _outputs(reference_dir, name)
    model = _imported(reference_dir, name)[0]
    anchors = anchor_boxes(model.anchor_options, model.num_feature_maps, (320, 320))
    targets = target_assigner.assign_targets_batch(
        *_padded_batch(data),
        anchors,
        num_classes=m.num_classes,
        matched_threshold=m.matcher.matched_threshold,
        unmatched_threshold=m.matcher.unmatched_threshold,
        force_match_for_each_row=m.matcher.force_match,
        scale_factors=tuple(m.anchors.box_scale_factors),
        crowd_matches=m.matcher.crowd_matches,
    )
    loss = losses.detection_loss(
        ours["box_outputs"],
        ours["class_outputs"],
        targets,
        num_classes=m.num_classes,
        alpha=m.loss.focal_alpha,
        gamma=m.loss.focal_gamma,
        delta=m.loss.huber_delta,
        cls_weight=m.loss.cls_weight,
        box_weight=m.loss.box_weight,
        encode_background_as_zeros=m.loss.encode_background_as_zeros,
        normalize_box_loss_by_codesize=m.loss.normalize_box_loss_by_codesize,
    )
    # The OD API normalises the batch's sums by the batch's matches (as our trainer does).
    normaliser = max(targets["num_positives"].numpy().sum(), 1.0)
    cls = loss["cls_loss"].numpy().sum() / normaliser
    box = loss["box_loss"].numpy().sum() / normaliser
    assert reference["classification_loss"] > 0 and reference["localization_loss"] > 0
    np.testing.assert_allclose(cls, reference["classification_loss"], rtol=1e-4)
    np.testing.assert_allclose(box, reference["localization_loss"], rtol=1e-4)


def test_crowd_box_matters_in_the_loss_batch(reference_dir):
    """The batch really tests crowd handling: ignoring crowd matches changes the targets."""
    data = np.load(f"{reference_dir}/inputs.npz")
    model = _imported(reference_dir, "ssdlite_v3_large")[0]
    anchors = anchor_boxes(model.anchor_options, model.num_feature_maps, (320, 320))
    boxes, classes, crowd = (x[:1] for x in _padded_batch(data))
    assert crowd.any()
    positive = target_assigner.assign_targets_batch(
        boxes, classes, crowd, anchors, num_classes=90, crowd_matches="positive"
    )
    ignore = target_assigner.assign_targets_batch(
        boxes, classes, crowd, anchors, num_classes=90, crowd_matches="ignore"
    )
    assert positive["num_positives"][0] > ignore["num_positives"][0]
