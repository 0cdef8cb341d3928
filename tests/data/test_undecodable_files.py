"""Files that pass a header check but that TensorFlow's decoders refuse, files that are not regular
files, and decompression bombs: skipped and named (training, evaluation, predict), never a hang or
an error naming no file. docs/bad_input_policy.md lists the cases."""

import io
import json
import logging
import os
import signal
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from ondevice_vision import predict
from ondevice_vision.configs import base_detection
from ondevice_vision.data import (
    coco_folder,
    coco_segmentation,
    detection_augment,
    image_decode,
    mask_folder,
)
from ondevice_vision.eval import evaluate
from ondevice_vision.tasks import detection as detection_task


@pytest.fixture(autouse=True)
def _no_hang():
    """A read that blocks (a FIFO) fails the test instead of hanging the run."""
    signal.signal(signal.SIGALRM, signal.default_int_handler)
    signal.alarm(120)
    yield
    signal.alarm(0)


def _pixels(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _damaged_jpeg(path):
    """Markers intact (PIL opens and verifies it; it ends with FFD9), scan data overwritten."""
    buffer = io.BytesIO()
    Image.fromarray(_pixels(48, 64)).save(buffer, "JPEG", quality=90)
    data = bytearray(buffer.getvalue())
    start = data.index(b"\xff\xda") + 20
    for i in range(start, len(data) - 10, 7):
        data[i] = 0xFF if i % 2 else 0xD3
    with open(path, "wb") as f:
        f.write(bytes(data))
    assert image_decode.check_image_file(path).problem is None


def _png_header_only(path, width, height):
    """A PNG declaring width x height whose pixel data is a few bytes: what the header says is all
    a reader may look at before deciding to decode it."""

    def chunk(kind, body):
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
    with open(path, "wb") as f:
        f.write(data + chunk(b"IEND", b""))


def _coco_folder(d, names):
    os.makedirs(d, exist_ok=True)
    images, annotations = [], []
    for i, name in enumerate(names, start=1):
        images.append({"id": i, "file_name": name, "width": 64, "height": 48})
        annotations.append(
            {"id": i, "image_id": i, "category_id": 1, "bbox": [4, 4, 20, 20], "iscrowd": 0}
        )
    with open(os.path.join(d, "annotations.json"), "w") as f:
        json.dump(
            {
                "images": images,
                "annotations": annotations,
                "categories": [{"id": 1, "name": "thing"}],
            },
            f,
        )
    return str(d)


def test_rgba_webp_decodes_and_animated_webp_is_refused_up_front(tmp_path):
    rgba = np.concatenate([_pixels(20, 30), np.full((20, 30, 1), 128, np.uint8)], -1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.webp", "WEBP", lossless=True)
    frames = [Image.fromarray(_pixels(20, 30, s)) for s in (1, 2)]
    frames[0].save(tmp_path / "anim.webp", "WEBP", save_all=True, append_images=frames[1:])
    decoded = image_decode.read_rgb(str(tmp_path / "rgba.webp")).numpy()
    np.testing.assert_array_equal(decoded, rgba[..., :3])
    check = image_decode.check_image_file(str(tmp_path / "anim.webp"))
    assert check.problem == "animated WebP (TensorFlow decodes still WebP images only)"


def test_damaged_jpeg_is_skipped_and_named_in_evaluation_and_training(tmp_path, capfd):
    d = tmp_path / "coco"
    os.makedirs(d)
    for name in ("a.jpg", "c.jpg"):
        Image.fromarray(_pixels(48, 64)).save(d / name, quality=95)
    _damaged_jpeg(str(d / "b.jpg"))
    _coco_folder(d, ["a.jpg", "b.jpg", "c.jpg"])

    ds, _ = coco_folder.load_coco_folder(str(d))  # decoded: what evaluation reads
    assert [int(e["image_id"]) for e in ds.as_numpy_iterator()] == [1, 3]
    assert f"skipping {d}/b.jpg (TensorFlow cannot decode it; 1 skipped so far)" in (
        capfd.readouterr().err
    )
    segmentation, _ = coco_segmentation.load(str(d))  # the same folder as segmentation data
    assert [e["image_id"] for e in segmentation.as_numpy_iterator()] == [b"a", b"c"]
    assert f"WARNING: {d}: skipping {d}/b.jpg (TensorFlow cannot decode it;" in (
        capfd.readouterr().err
    )

    config = base_detection.detection_config("mobilenet_v3_small")
    config.model.input_size = (64, 64)
    config.model.num_classes = 1
    config.data.update(source="coco_folder", train_dir=str(d), eval_dir=str(d))
    config.train.shuffle_buffer = 4
    config.data.augment = False  # the whole file is decoded in the training parse step
    train, _ = detection_task.build_dataset(config, "train", batch_size=2)
    for _, labels in train.take(3):
        assert set(labels["image_id"].numpy()) <= {1, 3}
    err = capfd.readouterr().err
    assert f"WARNING: train images: skipping {d}/b.jpg (TensorFlow cannot decode it;" in err
    # With the SSD crop only the crop window is decoded: libjpeg may recover that part of the
    # file with a warning, or refuse it; either way the run goes on.
    config.data.augment = True
    train, _ = detection_task.build_dataset(config, "train", batch_size=2)
    assert len(list(train.take(4))) == 4


def test_the_ssd_crop_guards_only_its_decode_and_reports_it():
    """The training parse decodes in its middle (the SSD crop window of a JPEG): only that decode
    runs under the guard, which hands back a placeholder and a flag for the pipeline to drop."""
    jpeg, png = io.BytesIO(), io.BytesIO()
    Image.fromarray(_pixels(48, 64)).save(jpeg, "JPEG", quality=90)
    Image.fromarray(_pixels(48, 64)).save(png, "PNG")
    jpeg, png = jpeg.getvalue(), png.getvalue()
    cut_jpeg = jpeg[: jpeg.index(b"\xff\xda") + 40]  # header intact, scan data cut short
    boxes, classes, crowd = tf.constant([[0.1, 0.1, 0.9, 0.9]]), tf.constant([1]), tf.constant([0])
    for encoded, decodable in ((jpeg, True), (png, True), (cut_jpeg, False), (png[:200], False)):
        image, *_, ok = detection_augment.ssd_random_crop_encoded(
            tf.constant(encoded), boxes, classes, tf.cast(crowd, tf.bool), skip_undecodable=True
        )
        assert bool(ok) == decodable
        assert (image.shape == (1, 1, 3)) != decodable


def test_non_regular_files_are_named_and_skipped_never_read(tmp_path, caplog):
    d = tmp_path / "masks_folder"
    (d / "images").mkdir(parents=True)
    (d / "masks").mkdir()
    (d / "classes.txt").write_text("background\nthing\n")
    Image.fromarray(_pixels(16, 16)).save(d / "images" / "a.png")
    for stem in ("a", "pipe"):
        Image.fromarray(np.ones((16, 16), np.uint8)).save(d / "masks" / f"{stem}.png")
    os.mkfifo(d / "images" / "pipe.png")
    check = image_decode.check_image_file(str(d / "images" / "pipe.png"))
    assert check.problem == "a FIFO (named pipe), not a regular file"
    ds, _ = mask_folder.load(str(d))
    assert [e["image_id"] for e in ds.as_numpy_iterator()] == [b"a"]
    assert f"{d}/images/pipe.png: a FIFO" in caplog.text

    coco = _coco_folder(tmp_path / "coco", ["a.png", "pipe.png"])
    Image.fromarray(_pixels(48, 64)).save(tmp_path / "coco" / "a.png")
    os.mkfifo(tmp_path / "coco" / "pipe.png")
    records, _, stats = coco_folder.read_coco_folder(coco)
    assert [r["image_id"] for r in records] == [1] and stats.skipped_images == 1

    # predict lists only regular files of a folder
    assert predict.list_inputs(str(d / "images")) == [str(d / "images" / "a.png")]
    assert f"Skipping {d}/images/pipe.png: not a regular file" in caplog.text


def test_a_decompression_bomb_is_named_from_its_header_without_decoding(tmp_path):
    path = str(tmp_path / "bomb.png")
    _png_header_only(path, 13000, 13000)
    assert os.path.getsize(path) < 200
    check = image_decode.check_image_file(path)
    assert check.problem == (
        "13000x13000 = 169,000,000 pixels, above data.max_image_pixels (89,478,485); raise it "
        "to read this image"
    )
    assert (
        "above data.max_image_pixels (1,000)"
        in image_decode.check_image_file(path, max_pixels=1000).problem
    )
    _png_header_only(str(tmp_path / "small.png"), 40, 30)
    assert "above" in image_decode.check_image_file(str(tmp_path / "small.png"), 1000).problem

    # Through a COCO folder with the config's limit, and predict's inputs.
    coco = _coco_folder(tmp_path / "coco", ["bomb.png", "ok.png"])
    os.rename(path, tmp_path / "coco" / "bomb.png")
    Image.fromarray(_pixels(48, 64)).save(tmp_path / "coco" / "ok.png")
    records, _, stats = coco_folder.read_coco_folder(coco, max_pixels=5000)
    assert [r["image_id"] for r in records] == [2] and stats.skipped_images == 1
    assert predict.checked_inputs(coco, max_pixels=5000) == [
        f"{coco}/bomb.png",
        f"{coco}/ok.png",
    ]
    with pytest.raises(ValueError, match="above data.max_image_pixels"):
        predict.read_image(f"{coco}/bomb.png", max_pixels=5000)


def test_predict_refuses_an_output_folder_in_its_input_or_holding_files_of_others(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(_pixels(16, 16)).save(photos / "a.jpg")
    inputs = [str(photos / "a.jpg")]
    for output in (photos, photos / "out"):
        with pytest.raises(ValueError, match=f"--output={output}: is the input folder {photos}"):
            predict.check_output_dir(str(output), str(photos), inputs)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.jpg.png").write_bytes(b"the user's")
    with pytest.raises(FileExistsError, match=f"{out}/a.jpg.png: exists and was not written by"):
        predict.check_output_dir(str(out), str(photos), inputs)
    (out / "predictions.json").write_text('{"mine": 1}')
    with pytest.raises(FileExistsError, match=f"{out}/predictions.json: exists and was not"):
        predict.check_output_dir(str(out), str(photos), inputs)
    # What an earlier run wrote (its predictions.json lists it) is replaced.
    earlier = {"model": "m", "task": "detection", "images": [{"picture": "a.jpg.png"}]}
    (out / "predictions.json").write_text(json.dumps(earlier))
    predict.check_output_dir(str(out), str(photos), inputs)


def test_no_labels_at_the_start_and_nothing_scored_at_the_end_are_loud(tmp_path, caplog):
    d = tmp_path / "coco"
    os.makedirs(d)
    Image.fromarray(_pixels(48, 64)).save(d / "a.png")
    with open(d / "annotations.json", "w") as f:
        json.dump(
            {
                "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
                "annotations": [],
                "categories": [{"id": 1, "name": "thing"}],
            },
            f,
        )
    with caplog.at_level(logging.WARNING):
        coco_folder.read_coco_folder(str(d))
        nothing = {"AP": -1.0, "AP50": -1.0, "AR100": -1.0}
        assert evaluate.warn_if_nothing_scored(nothing, num_images=3)
        assert not evaluate.warn_if_nothing_scored({"AP": 0.0, "AP50": -1.0}, num_images=3)
        assert evaluate.warn_if_nothing_scored({"mIoU": 0.5}, num_images=0)
        # mIoU of masks without a labelled pixel: NaN, not -1.
        nan = float("nan")
        assert evaluate.warn_if_nothing_scored({"mIoU": nan, "pixel_accuracy": nan}, 2)
        assert not evaluate.warn_if_nothing_scored({"mIoU": nan, "pixel_accuracy": 0.5}, 2)
    assert f"{d}/annotations.json: NO BOXES AT ALL in 1 images" in caplog.text
    assert "NOTHING WAS SCORED: 3 eval images, every metric is -1" in caplog.text


def test_an_imageless_eval_split_stops_the_run_before_training(tmp_path):
    train = _coco_folder(tmp_path / "train", ["a.png"])
    Image.fromarray(_pixels(48, 64)).save(tmp_path / "train" / "a.png")
    empty = _coco_folder(tmp_path / "eval", [])
    config = base_detection.detection_config("mobilenet_v3_small")
    config.data.update(source="coco_folder", train_dir=train, eval_dir=empty)
    with pytest.raises(ValueError, match=f"{empty}/annotations.json: no usable images"):
        evaluate.check_eval_split(config)


def test_evaluation_keeps_every_box_and_training_names_the_images_it_cuts(tmp_path, capfd):
    d = tmp_path / "crowded"
    os.makedirs(d)
    Image.fromarray(_pixels(48, 64)).save(d / "a.png")
    Image.fromarray(_pixels(48, 64, 1)).save(d / "b.png")
    boxes = [[x % 60, x % 44, 3, 3] for x in range(151)]
    annotations = [
        {"id": i, "image_id": 1, "category_id": 1, "bbox": b, "iscrowd": 0}
        for i, b in enumerate(boxes, start=1)
    ] + [{"id": 999, "image_id": 2, "category_id": 1, "bbox": [1, 1, 9, 9], "iscrowd": 0}]
    with open(d / "annotations.json", "w") as f:
        json.dump(
            {
                "images": [
                    {"id": 1, "file_name": "a.png", "width": 64, "height": 48},
                    {"id": 2, "file_name": "b.png", "width": 64, "height": 48},
                ],
                "annotations": annotations,
                "categories": [{"id": 1, "name": "thing"}],
            },
            f,
        )
    config = base_detection.detection_config("mobilenet_v3_small")
    config.model.input_size = (64, 64)
    config.model.num_classes = 1
    config.data.update(source="coco_folder", train_dir=str(d), eval_dir=str(d), augment=False)
    config.train.shuffle_buffer = 1
    evaluation, _ = detection_task.build_dataset(config, "eval", batch_size=2)
    ((_, labels),) = evaluation.take(1)
    assert labels["gt_boxes"].shape == (2, 151, 4)
    assert (labels["gt_classes"].numpy() >= 0).sum(axis=1).tolist() == [151, 1]
    train, _ = detection_task.build_dataset(config, "train", batch_size=2)
    ((_, labels),) = train.take(1)
    assert labels["gt_boxes"].shape == (2, 100, 4)
    err = capfd.readouterr().err
    assert f"WARNING: training uses the first 100 of the 151 boxes of {d}/a.png" in err
