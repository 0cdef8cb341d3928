"""Our backbones as ImageNet classifiers against slim's MobileNetV3 / MobileNetEdgeTPU.

One network per published slim checkpoint (tensorflow/models research/slim/nets/mobilenet):
the reference subprocess saves a randomly initialised slim classifier (1001 classes) and its
logits; our backbone loads that TF1 checkpoint by name and must give the same logits.
"""

import numpy as np
import pytest

from ondevice_vision.backbones import build_backbone, slim_checkpoint
from ondevice_vision.backbones.imagenet_weights import load_imagenet_weights
from tests.reference import reference_harness

CLASSIFIERS = {
    "v3_large_1.0": ("mobilenet_v3_large", 1.0),
    "v3_large_0.75": ("mobilenet_v3_large", 0.75),
    "v3_small_1.0": ("mobilenet_v3_small", 1.0),
    "v3_small_0.75": ("mobilenet_v3_small", 0.75),
    "v3_large_minimalistic_1.0": ("mobilenet_v3_large_minimalistic", 1.0),
    "v3_small_minimalistic_1.0": ("mobilenet_v3_small_minimalistic", 1.0),
    "edgetpu_1.0": ("mobilenet_edgetpu", 1.0),
    "edgetpu_0.75": ("mobilenet_edgetpu", 0.75),
}


@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_classifier_logits_equal(reference_dir, name):
    model_name, multiplier = CLASSIFIERS[name]
    backbone = build_backbone(
        model_name, depth_multiplier=multiplier, include_top=True, num_classes=1001
    )
    report = slim_checkpoint.load_slim_checkpoint(backbone, f"{reference_dir}/{name}/model.ckpt")
    assert len(report.assigned) == len(backbone.weights) and not report.skipped
    images = np.load(f"{reference_dir}/inputs.npz")["classifier_images"]
    reference = reference_harness.load(reference_dir, name)
    ours = backbone(images, training=False)
    # The head conv's map carries the images' variation that global pooling averages away.
    assert reference["head"].std() > 0.2 and reference["logits"].shape == (2, 1001)
    np.testing.assert_allclose(ours["stride_32"].numpy(), reference["head"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(ours["logits"].numpy(), reference["logits"], atol=1e-4, rtol=0)


def test_imagenet_weights_from_a_slim_checkpoint(reference_dir):
    """train.imagenet_weights=PATH/model.ckpt: a backbone without top takes the slim weights."""
    path = f"{reference_dir}/v3_small_1.0/model.ckpt"
    classifier = build_backbone("mobilenet_v3_small", include_top=True, num_classes=1001)
    slim_checkpoint.load_slim_checkpoint(classifier, path)
    backbone = build_backbone("mobilenet_v3_small", endpoints=("stride_32",))
    assert load_imagenet_weights(backbone, path) == path
    images = np.load(f"{reference_dir}/inputs.npz")["classifier_images"]
    np.testing.assert_allclose(
        backbone(images, training=False)["stride_32"].numpy(),
        classifier(images, training=False)["stride_32"].numpy(),
        atol=1e-5,
    )


def test_wrong_width_is_an_error_naming_the_variables(reference_dir):
    backbone = build_backbone("mobilenet_v3_small", depth_multiplier=0.75)
    with pytest.raises(slim_checkpoint.CheckpointMismatchError, match=r"of another shape: .*"):
        load_imagenet_weights(backbone, f"{reference_dir}/v3_small_1.0/model.ckpt")
