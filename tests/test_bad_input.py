"""Bad input the data tests do not already cover (docs/bad_input_policy.md lists where each case
is tested): command-line mistakes, empty datasets, PNG bytes in .jpg files, images without boxes,
more classes than the model has, corrupt segmentation images, out-of-range Cityscapes trainIds."""

import json
import logging
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from ondevice_vision.configs import ssdlite_mobilenet_v3_small_shapes
from ondevice_vision.data import (
    cityscapes_folder,
    coco_folder,
    image_decode,
    mask_folder,
    voc_folder,
)
from ondevice_vision.data.label_map import LabelMap
from ondevice_vision.heads.anchors import anchor_boxes
from ondevice_vision.tasks import detection as detection_task
from tests.helpers import train_cli


def test_command_line_mistakes_are_named(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    work = str(tmp_path / "work")
    cases = {
        "unknown_key": (
            [work, "--config.train.nope=1"],
            "--config.train.nope: the config has no key 'nope' under config.train",
        ),
        "unknown_section": ([work, "--config.nope.depth=1"], "no key 'nope' under config "),
        "bad_value": ([work, "--config.train.batch_size=many"], "config.train.batch_size"),
        "workdir": ([str(blocker / "run")], f"ERROR: workdir {blocker}/run is not writable"),
        "replicas": (
            [work, "--strategy=mirrored", "--cpu_replicas=2", "--config.train.batch_size=3"],
            "train.batch_size 3 is not divisible by the 2 replicas",
        ),
        "ranges": (
            [
                work,
                "--config.train.checkpoint_every_steps=0",
                "--config.train.base_learning_rate=-1",
            ],
            "ERROR: config.train.checkpoint_every_steps: must be a positive integer, got 0; "
            "config.train.base_learning_rate: must be positive, got -1.0",
        ),
        "config_word": (
            [work, "--config=ondevice_vision/configs/ssdlite_mobilenet_v3_small_shapes.py:smok"],
            "unknown config argument smok",
        ),
    }
    runs = {
        name: train_cli.start(args[0], *args[1:], log_path=tmp_path / f"{name}.log")
        for name, (args, _) in cases.items()
    }
    for name, process in runs.items():
        code, output = train_cli.finish(process, timeout=300)
        assert code != 0, f"{name}: {output[-2000:]}"
        assert cases[name][1] in output, f"{name}: {output[-2000:]}"
        # Every mistake ends as one line naming the key or file, no traceback.
        assert "Traceback" not in output, f"{name}: {output[-2000:]}"
        assert output.count("ERROR:") + output.count("FATAL") == 1, f"{name}: {output[-2000:]}"
    unknown = open(tmp_path / "unknown_key.log").read()
    assert "batch_size" in unknown and "nan_policy" in unknown  # the keys that do exist
    assert not os.path.exists(tmp_path / "work" / "checkpoints")


def _pixels(h, w):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([yy * 7 % 256, xx * 5 % 256, (yy + xx) % 256], -1).astype(np.uint8)


def _coco(directory, images, annotations=(), categories=({"id": 1, "name": "thing"},)):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "annotations.json"), "w") as f:
        json.dump(
            {"images": images, "annotations": list(annotations), "categories": list(categories)}, f
        )
    return str(directory)


def test_png_bytes_in_a_jpg_file_decode_by_content(tmp_path):
    pixels = _pixels(12, 20)
    Image.fromarray(pixels).save(tmp_path / "photo.jpg", format="PNG")
    check = image_decode.check_image_file(str(tmp_path / "photo.jpg"))
    assert check.problem is None and (check.width, check.height) == (20, 12)
    d = _coco(tmp_path, [{"id": 1, "file_name": "photo.jpg", "width": 20, "height": 12}])
    (example,) = list(coco_folder.load_coco_folder(d)[0].as_numpy_iterator())
    np.testing.assert_array_equal(example["image"], pixels)  # lossless: the PNG was decoded


def test_empty_datasets_are_errors_naming_the_folder(tmp_path):
    empty = _coco(tmp_path / "empty", [])
    with pytest.raises(ValueError, match=r"empty/annotations\.json: no usable images"):
        coco_folder.read_coco_folder(empty)
    # Every image unreadable: all skipped (and logged), then nothing is left.
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    _coco(broken, [{"id": 1, "file_name": "a.jpg", "width": 4, "height": 4}])
    with pytest.raises(ValueError, match="no usable images"):
        coco_folder.read_coco_folder(str(broken))
    (tmp_path / "voc" / "Annotations").mkdir(parents=True)
    with pytest.raises(ValueError, match="no VOC annotations found"):
        voc_folder.read_voc_folder(str(tmp_path / "voc"))


def test_images_without_boxes_train_as_all_background():
    config = ssdlite_mobilenet_v3_small_shapes.get_config("smoke")
    config.model.input_size = (64, 64)
    config.data.augment = True  # the SSD crop must cope with no boxes too
    anchors = tf.constant(
        anchor_boxes(
            config.model.anchors, 2 + len(config.model.extra_depths), config.model.input_size
        )
    )
    example = {
        "image": tf.constant(_pixels(40, 50)),
        "image_id": tf.constant(3, tf.int64),
        "boxes": tf.zeros([0, 4], tf.float32),
        "classes": tf.zeros([0], tf.int32),
        "is_crowd": tf.zeros([0], tf.bool),
    }
    image, labels = detection_task.parse_example(example, config, None, training=True)
    assert image.shape == (64, 64, 3)
    batch = tf.nest.map_structure(lambda t: t[tf.newaxis], labels)
    _, batch = detection_task.add_targets(image[tf.newaxis], batch, config, anchors)
    assert int(batch["num_positives"][0]) == 0
    assert not np.any(batch["box_weights"].numpy())
    rng = np.random.default_rng(0)
    outputs = {
        "box_outputs": tf.constant(rng.normal(size=(1, len(anchors), 4)), tf.float32),
        "class_outputs": tf.constant(
            rng.normal(size=(1, len(anchors), config.model.num_classes + 1)), tf.float32
        ),
    }
    sums, normalizer = detection_task.compute_losses(config, outputs, batch)
    assert float(normalizer[0]) == 0.0  # the loop divides by max(1, global positives)
    assert float(sums["box_loss"][0]) == 0.0
    assert np.isfinite(float(sums["cls_loss"][0])) and float(sums["cls_loss"][0]) > 0


def test_data_with_more_classes_than_the_model_is_an_error():
    config = ssdlite_mobilenet_v3_small_shapes.get_config("smoke")
    source = LabelMap.contiguous(("a", "b", "c", "d", "e"))
    with pytest.raises(ValueError, match="the data has 5 classes .* model.num_classes is 4"):
        detection_task.model_label_map(config, source)


def test_cityscapes_train_ids_outside_the_classes_name_the_file(tmp_path):
    image_dir = tmp_path / "leftImg8bit" / "train" / "ulm"
    label_dir = tmp_path / "gtFine" / "train" / "ulm"
    image_dir.mkdir(parents=True)
    label_dir.mkdir(parents=True)
    for stem, bad_value in (("ulm_000000_000019", None), ("ulm_000001_000019", 33)):
        Image.fromarray(_pixels(8, 16)).save(image_dir / f"{stem}_leftImg8bit.png")
        train_ids = np.full((8, 16), 5, np.uint8)
        train_ids[0, :4] = 255
        if bad_value is not None:
            train_ids[3, 3] = bad_value
        Image.fromarray(train_ids).save(label_dir / f"{stem}_gtFine_labelTrainIds.png")
    ds, _ = cityscapes_folder.load(str(tmp_path), "train")
    iterator = ds.as_numpy_iterator()
    good = next(iterator)
    assert set(np.unique(good["mask"])) == {5, 255}
    with pytest.raises(tf.errors.InvalidArgumentError, match="ulm_000001_000019_gtFine_labelT"):
        next(iterator)


def _truncated_copy(source, target):
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])


def test_mask_folder_skips_corrupt_images_counted_and_logged(tmp_path, caplog):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "classes.txt").write_text("background\nthing\n")
    for stem in ("a", "b", "c"):
        Image.fromarray(_pixels(16, 16)).save(tmp_path / "images" / f"{stem}.jpg", quality=95)
        Image.fromarray(np.ones((16, 16), np.uint8)).save(tmp_path / "masks" / f"{stem}.png")
    _truncated_copy(tmp_path / "images" / "a.jpg", tmp_path / "images" / "b.jpg")
    (tmp_path / "images" / "c.jpg").write_bytes(b"not an image")
    with caplog.at_level(logging.WARNING):
        ds, _ = mask_folder.load(str(tmp_path))
    assert [e["image_id"] for e in ds.as_numpy_iterator()] == [b"a"]
    assert "b.jpg" in caplog.text and "c.jpg" in caplog.text and "skipped 2 of 3" in caplog.text


def test_cityscapes_corrupt_files_are_named_up_front(tmp_path):
    image_dir = tmp_path / "leftImg8bit" / "val" / "ulm"
    label_dir = tmp_path / "gtFine" / "val" / "ulm"
    image_dir.mkdir(parents=True)
    label_dir.mkdir(parents=True)
    stem = "ulm_000000_000019"
    Image.fromarray(_pixels(8, 16)).save(tmp_path / "full.png")
    _truncated_copy(tmp_path / "full.png", image_dir / f"{stem}_leftImg8bit.png")
    Image.fromarray(np.zeros((8, 16), np.uint8)).save(label_dir / f"{stem}_gtFine_labelIds.png")
    with pytest.raises(ValueError, match=f"{stem}_leftImg8bit.png: corrupt image"):
        cityscapes_folder.list_files(str(tmp_path), "val")
