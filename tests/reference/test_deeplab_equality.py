"""DeepLab's released LR-ASPP: its checkpoints import, and our model computes what it computes.

The reference subprocess (od_api_reference.py, `run_deeplab_lraspp`) builds slim's MobileNetV3
with DeepLab's segmentation changes (real slim code) and, on top, the LR-ASPP head in
`tf.compat.v1` from the facts of docs/reference_facts.md (DeepLab's code itself is not on PyPI),
with DeepLab's variable names; it saves the TF1 checkpoint and its feature maps and logits.
"""

import numpy as np
import pytest

from ondevice_vision.backbones.slim_checkpoint import CheckpointMismatchError
from ondevice_vision.configs import lraspp_mobilenet_v3_small_cityscapes_deeplab
from ondevice_vision.importers import deeplab
from ondevice_vision.importers.main import import_checkpoint
from ondevice_vision.models.lraspp import Segmenter
from tests.reference import reference_harness

CROP = 129  # od_api_reference.DEEPLAB_CROP


def _segmenter(backbone, variant="deeplab"):
    return Segmenter(backbone, 19, output_stride=32, crop_size=(CROP, CROP), lraspp_variant=variant)


@pytest.mark.parametrize("builder", ["large", "small"])
def test_imported_checkpoint_computes_deeplabs_features_and_logits(reference_dir, builder):
    path = f"{reference_dir}/deeplab_lraspp_{builder}/model.ckpt"
    model = _segmenter(f"mobilenet_v3_{builder}")
    assert deeplab.is_deeplab_checkpoint(path)
    report = deeplab.load_deeplab_checkpoint(model, path)
    # Every variable by name; the step and the EMA shadow skipped as training state.
    assert len(report.assigned) == len(model.weights)
    assert sorted(report.skipped) == ["aspp0/weights/ExponentialMovingAverage", "global_step"]
    images = np.load(f"{reference_dir}/inputs.npz")["segmentation_images"]
    reference = reference_harness.load(reference_dir, f"deeplab_lraspp_{builder}")
    features = model.backbone(images, training=False)
    assert reference["high"].std() > 0.2 and reference["logits"].std() > 0.2
    np.testing.assert_allclose(features["lraspp_high"].numpy(), reference["high"], atol=1e-4)
    np.testing.assert_allclose(features["lraspp_low"].numpy(), reference["low"], atol=1e-4)
    logits = model(images, training=False).numpy()
    assert logits.shape == reference["logits"].shape == (2, 257, 321, 19)
    np.testing.assert_allclose(logits, reference["logits"], atol=1e-4)


def test_the_paper_variant_is_told_what_it_needs(reference_dir):
    path = f"{reference_dir}/deeplab_lraspp_small/model.ckpt"
    with pytest.raises(ValueError, match="lraspp_variant='deeplab'"):
        deeplab.load_deeplab_checkpoint(_segmenter("mobilenet_v3_small", "paper"), path)
    # Another backbone: the error names the variables of another shape or missing.
    with pytest.raises(CheckpointMismatchError, match=r"of another shape: .*MobilenetV3/"):
        deeplab.load_deeplab_checkpoint(_segmenter("mobilenet_v3_large"), path)


def test_ondevice_import_takes_a_deeplab_checkpoint(reference_dir, tmp_path):
    config = lraspp_mobilenet_v3_small_cityscapes_deeplab.get_config()
    config.data.crop_size = (CROP, CROP)
    path = f"{reference_dir}/deeplab_lraspp_small/model.ckpt"
    report = import_checkpoint(config, path, str(tmp_path / "imported"))
    assert report["kind"] == "deeplab"
    assert report["skipped"] == {"training step": 1, "training state": 1}
    assert report["assigned"] == len(_segmenter("mobilenet_v3_small").weights)
