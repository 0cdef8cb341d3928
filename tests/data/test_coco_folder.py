import json
import logging
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from ondevice_vision.configs import base_detection
from ondevice_vision.data import coco_folder, detection_sources, image_decode

_RNG = np.random.default_rng(0)


def _pixels(h, w):
    # Smooth content so JPEG round trips stay close to the source.
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([yy * 255 // h, xx * 255 // w, (yy + xx) * 127 // (h + w)], -1).astype(np.uint8)


def _save(path, pixels, mode="RGB", fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    options = {"quality": 95, "subsampling": 0} if path.endswith(".jpg") else {}
    Image.fromarray(pixels).convert(mode).save(path, format=fmt, **options)


def _assert_close_to_pil(decoded, path):
    reference = np.asarray(Image.open(path).convert("RGB"), np.int32)
    diff = np.abs(decoded.astype(np.int32) - reference)
    if path.endswith(".png"):
        assert diff.max() == 0
    else:  # TF decodes JPEG with libjpeg's fast integer IDCT, PIL with the accurate one
        assert diff.max() <= 8 and diff.mean() < 1.5


def _write_json(directory, data):
    with open(os.path.join(directory, "annotations.json"), "w") as f:
        json.dump(data, f)


def _valid_folder(tmp_path):
    d = str(tmp_path / "coco")
    _save(f"{d}/a.jpg", _pixels(40, 50))
    _save(f"{d}/images/sub/b.png", _pixels(30, 20), "RGBA")
    _save(f"{d}/c.jpg", _pixels(16, 16), "L")
    data = {
        "images": [
            {"id": 7, "file_name": "a.jpg", "width": 50, "height": 40},
            {"id": 3, "file_name": "sub/b.png", "width": 20, "height": 30},
            {"id": 9, "file_name": "c.jpg", "width": 16, "height": 16},
        ],
        "categories": [
            {"id": 18, "name": "dog"},
            {"id": 1, "name": "person"},
            {"id": 3, "name": "car"},
        ],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 18, "bbox": [5, 4, 20, 10], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [40, 30, 30, 20], "iscrowd": 1},
            {"id": 3, "image_id": 7, "category_id": 3, "bbox": [10, 10, 0, 5], "iscrowd": 0},
            {"id": 4, "image_id": 3, "category_id": 3, "bbox": [0, 0, 20, 30], "iscrowd": 0},
            {"id": 5, "image_id": 3, "category_id": 1, "bbox": [25, 5, 4, 4], "iscrowd": 0},
        ],
    }
    _write_json(d, data)
    return d


def test_valid_folder(tmp_path):
    d = _valid_folder(tmp_path)
    records, label_map, stats = coco_folder.read_coco_folder(d)
    assert label_map.dataset_ids == (1, 3, 18) and label_map.names == ("person", "car", "dog")
    assert stats.dropped_empty_boxes == 1  # zero width
    assert stats.dropped_outside_boxes == 1  # entirely right of its 20-wide image
    assert stats.clipped_boxes == 1  # [40, 30, 30, 20] runs past the 50x40 image

    ds, ds_label_map = coco_folder.load_coco_folder(d)
    assert ds_label_map == label_map
    examples = list(ds.as_numpy_iterator())
    assert [int(e["image_id"]) for e in examples] == [3, 7, 9]
    b, a, c = examples

    np.testing.assert_allclose(
        a["boxes"], [[4 / 40, 5 / 50, 14 / 40, 25 / 50], [30 / 40, 40 / 50, 1, 1]]
    )
    np.testing.assert_array_equal(a["classes"], [2, 0])
    np.testing.assert_array_equal(a["is_crowd"], [False, True])
    assert a["image"].shape == (40, 50, 3) and a["image"].dtype == np.uint8
    _assert_close_to_pil(a["image"], f"{d}/a.jpg")

    np.testing.assert_allclose(b["boxes"], [[0, 0, 1, 1]])
    np.testing.assert_array_equal(b["classes"], [1])
    np.testing.assert_array_equal(
        b["image"], np.asarray(Image.open(f"{d}/images/sub/b.png").convert("RGB"))
    )

    assert c["boxes"].shape == (0, 4) and c["classes"].shape == (0,) and c["is_crowd"].shape == (0,)
    assert c["image"].shape == (16, 16, 3)
    np.testing.assert_array_equal(c["image"][..., 0], c["image"][..., 2])  # gray -> RGB


def test_corrupt_images_are_skipped_counted_and_logged(tmp_path, caplog):
    d = _valid_folder(tmp_path)
    data = json.load(open(os.path.join(d, "annotations.json")))
    with open(f"{d}/a.jpg", "rb") as f:
        jpeg = f.read()
    with open(f"{d}/truncated.jpg", "wb") as f:
        f.write(jpeg[: len(jpeg) // 2])
    with open(f"{d}/text.jpg", "w") as f:
        f.write("not an image")
    _save(f"{d}/tiff.tif", _pixels(8, 8))
    for i, name in enumerate(["truncated.jpg", "text.jpg", "tiff.tif"]):
        data["images"].append({"id": 100 + i, "file_name": name, "width": 50, "height": 40})
    data["annotations"].append({"id": 9, "image_id": 100, "category_id": 1, "bbox": [1, 1, 5, 5]})
    _write_json(d, data)

    with caplog.at_level(logging.WARNING):
        records, _, stats = coco_folder.read_coco_folder(d)
    assert stats.skipped_images == 3 and stats.images == 3
    assert sorted(r["image_id"] for r in records) == [3, 7, 9]
    for name in ["truncated.jpg", "text.jpg", "tiff.tif"]:
        assert name in caplog.text
    ds, _ = coco_folder.load_coco_folder(d)
    assert len(list(ds.as_numpy_iterator())) == 3  # and the pipeline does not fail


def test_missing_image_files_are_named(tmp_path):
    d = _valid_folder(tmp_path)
    os.remove(f"{d}/c.jpg")
    with pytest.raises(FileNotFoundError, match="c.jpg"):
        coco_folder.read_coco_folder(d)


def test_unknown_category_is_an_error_naming_file_and_id(tmp_path):
    d = _valid_folder(tmp_path)
    data = json.load(open(os.path.join(d, "annotations.json")))
    data["annotations"].append({"id": 77, "image_id": 7, "category_id": 42, "bbox": [1, 1, 2, 2]})
    _write_json(d, data)
    with pytest.raises(ValueError, match=r"annotations\.json.*category id 42"):
        coco_folder.read_coco_folder(d)


def test_malformed_json_is_an_error_naming_the_file(tmp_path):
    d = _valid_folder(tmp_path)
    with open(os.path.join(d, "annotations.json"), "w") as f:
        f.write('{"images": [')
    with pytest.raises(ValueError, match=r"annotations\.json.*malformed JSON"):
        coco_folder.read_coco_folder(d)
    _write_json(d, {"images": []})
    with pytest.raises(ValueError, match="categories"):
        coco_folder.read_coco_folder(d)
    os.remove(os.path.join(d, "annotations.json"))
    with pytest.raises(FileNotFoundError, match="annotations.json"):
        coco_folder.read_coco_folder(d)


@pytest.mark.parametrize(
    "name,mode",
    [
        ("gray.jpg", "L"),
        ("cmyk.jpg", "CMYK"),
        ("rgb.jpg", "RGB"),
        ("gray.png", "L"),
        ("rgba.png", "RGBA"),
        ("palette.png", "P"),
        ("gray_alpha.png", "LA"),
    ],
)
def test_decode_rgb_handles_every_channel_layout(tmp_path, name, mode):
    path = str(tmp_path / name)
    _save(path, _pixels(24, 32), mode)
    check = image_decode.check_image_file(path)
    assert check.problem is None and (check.width, check.height) == (32, 24)
    decoded = image_decode.read_rgb(tf.constant(path)).numpy()
    assert decoded.shape == (24, 32, 3) and decoded.dtype == np.uint8
    _assert_close_to_pil(decoded, path)


def test_detection_source_shares_label_map_between_splits(tmp_path):
    train = _valid_folder(tmp_path / "train")
    evaluation = str(tmp_path / "eval")
    _save(f"{evaluation}/x.jpg", _pixels(10, 10))
    _write_json(
        evaluation,
        {
            "images": [{"id": 1, "file_name": "x.jpg", "width": 10, "height": 10}],
            "categories": [{"id": 3, "name": "car"}, {"id": 5, "name": "airplane"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [1, 2, 3, 4]}],
        },
    )
    cfg = base_detection.detection_data_config()
    cfg.source, cfg.train_dir, cfg.eval_dir = "coco_folder", train, evaluation
    _, train_map = detection_sources.load_detection_source(cfg, "train")
    ds, eval_map = detection_sources.load_detection_source(cfg, "eval")
    assert train_map == eval_map and train_map.dataset_ids == (1, 3, 5, 18)
    (ex,) = list(ds.as_numpy_iterator())
    np.testing.assert_array_equal(ex["classes"], [2])
    np.testing.assert_allclose(ex["boxes"], [[0.2, 0.1, 0.6, 0.4]], atol=1e-6)
