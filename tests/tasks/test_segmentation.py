"""LR-ASPP end to end in-process: overfitting, the loss, and mIoU against the official evaluator."""

import os

import numpy as np
import pytest
import tensorflow as tf
from cityscapesscripts.helpers.labels import labels as cs_labels
from PIL import Image

from ondevice_vision.configs import (
    lraspp_mobilenet_v3_large_cityscapes,
    lraspp_mobilenet_v3_small_shapes,
)
from ondevice_vision.eval import evaluate as eval_lib
from ondevice_vision.eval.segmentation import write_cityscapes_submission
from ondevice_vision.tasks import segmentation as segmentation_task


def test_loss_ignores_the_ignore_label_and_counts_labelled_pixels():
    config = lraspp_mobilenet_v3_small_shapes.get_config()
    logits = tf.constant(np.random.default_rng(0).normal(size=(2, 4, 4, 4)), tf.float32)
    mask = np.random.default_rng(1).integers(0, 4, (2, 4, 4, 1)).astype(np.uint8)
    mask[0, :2] = 255
    sums, count = segmentation_task.compute_losses(config, logits, {"mask": tf.constant(mask)})
    assert count.numpy().tolist() == [8.0, 16.0]
    log_p = tf.nn.log_softmax(logits).numpy()
    expected = [
        -sum(
            log_p[b, y, x, mask[b, y, x, 0]]
            for y in range(4)
            for x in range(4)
            if mask[b, y, x, 0] != 255
        )
        for b in range(2)
    ]
    np.testing.assert_allclose(sums["ce_loss"].numpy(), expected, rtol=1e-5)


def test_overfits_two_images(overfit_segmenter):
    """120 steps on two 64x64 images (tests/helpers/export_fixtures.py:
    overfit_segmentation_config): the model labels their pixels. The int8 export tests use the
    same trained model."""
    config, model, result = overfit_segmenter
    assert result["step"] == 120
    ds, _ = segmentation_task.build_dataset(config, "train", batch_size=2, repeat=False)
    correct = total = 0
    for images, labels in ds:
        # No augmentation in this config (not even flips): the images as the model learnt them.
        pred = segmentation_task.predict(config, model, images)["semantic_map"].numpy()
        mask = labels["mask"].numpy()[..., 0]
        valid = mask != 255
        correct += int(np.sum((pred == mask) & valid))
        total += int(valid.sum())
    assert correct / total > 0.95


def _write_cityscapes_tree(root, rng):
    """leftImg8bit + gtFine (labelIds, instanceIds) for 3 tiny val images."""
    eval_ids = [lab.id for lab in cs_labels if 0 <= lab.trainId < 19] + [0, 4]
    stems = ["aachen_000000_000019", "aachen_000001_000019", "bremen_000002_000019"]
    for stem in stems:
        city = stem.split("_")[0]
        (root / "leftImg8bit" / "val" / city).mkdir(parents=True, exist_ok=True)
        (root / "gtFine" / "val" / city).mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png")
        blocks = rng.choice(eval_ids, size=(4, 8))
        label_ids = np.kron(blocks, np.ones((8, 8), np.int64)).astype(np.uint8)
        gt = root / "gtFine" / "val" / city
        Image.fromarray(label_ids).save(gt / f"{stem}_gtFine_labelIds.png")
        Image.fromarray(label_ids.astype(np.uint16)).save(gt / f"{stem}_gtFine_instanceIds.png")


def test_miou_equals_the_official_cityscapes_evaluation(tmp_path):
    _write_cityscapes_tree(tmp_path / "cityscapes", np.random.default_rng(0))
    config = lraspp_mobilenet_v3_large_cityscapes.get_config()
    config.model.backbone = "mobilenet_v3_small"
    config.data.root = str(tmp_path / "cityscapes")
    config.data.crop_size = (32, 64)
    config.eval.batch_size = 2
    config.eval.num_visualizations = 2
    config.eval.prediction_dir = str(tmp_path / "predictions")
    assert config.eval.official_cityscapes
    model = segmentation_task.build_model(config)
    # A random network predicts few classes; bias its logits so every class shows up somewhere.
    rng = np.random.default_rng(1)

    def predict_fn(images):
        logits = model(images, training=False) + tf.constant(
            rng.normal(0, 3, (1, 32, 64, 19)), tf.float32
        )
        return {"semantic_map": tf.argmax(logits, -1, output_type=tf.int32)}

    metrics = eval_lib.evaluate(
        config, model, str(tmp_path / "work"), step=0, predict_fn=predict_fn
    )
    official = metrics["official_cityscapes"]
    assert official["num_images"] == 3
    assert metrics["mIoU"] == pytest.approx(official["classIoU"], abs=1e-4)
    assert 0.0 < metrics["mIoU"] < 1.0
    assert (tmp_path / "work" / "eval" / "predictions_0.png").exists()


def test_cityscapes_submission_files(tmp_path):
    _write_cityscapes_tree(tmp_path / "cityscapes", np.random.default_rng(2))
    config = lraspp_mobilenet_v3_large_cityscapes.get_config()
    config.model.backbone = "mobilenet_v3_small"
    config.data.root = str(tmp_path / "cityscapes")
    config.data.crop_size = (32, 64)
    config.eval.batch_size = 2
    model = segmentation_task.build_model(config)
    paths = write_cityscapes_submission(
        config,
        model,
        str(tmp_path / "submit"),
        zip_path=str(tmp_path / "submit.zip"),
        expected_shape=(32, 64),
    )
    assert sorted(os.path.basename(p) for p in paths) == [
        "aachen_000000_000019_pred.png",
        "aachen_000001_000019_pred.png",
        "bremen_000002_000019_pred.png",
    ]
    label_ids = {lab.id for lab in cs_labels if 0 <= lab.trainId < 19}
    for path in paths:
        pixels = np.asarray(Image.open(path))
        assert pixels.shape == (32, 64)
        assert set(np.unique(pixels)) <= label_ids
    assert (tmp_path / "submit.zip").exists()
    # The same through ondevice-eval --cityscapes_submission, from a checkpoint.
    from ondevice_vision.eval.main import cityscapes_submission

    prefix = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt" / "ckpt-5"))
    result = cityscapes_submission(
        config, str(tmp_path / "cli"), checkpoint=prefix, expected_shape=(32, 64)
    )
    assert result["images"] == 3 and (tmp_path / "cli.zip").exists()
    for path in paths:
        np.testing.assert_array_equal(
            np.asarray(Image.open(path)),
            np.asarray(Image.open(tmp_path / "cli" / os.path.basename(path))),
        )
