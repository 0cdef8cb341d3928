import json
import logging
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

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


def _save_oriented(path, pixels, orientation):
    """A PNG (lossless, so decodes compare exactly) carrying an EXIF orientation tag."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    exif = Image.Exif()
    exif[0x0112] = orientation  # the EXIF Orientation tag
    Image.fromarray(pixels).save(path, exif=exif)


def test_exif_orientation_is_applied_as_pil_does(tmp_path):
    for orientation in range(1, 9):
        path = str(tmp_path / f"o{orientation}.png")
        _save_oriented(path, _pixels(6, 10), orientation)
        check = image_decode.check_image_file(path)
        assert check.orientation == orientation and (check.width, check.height) == (10, 6)
        decoded = image_decode.apply_orientation(
            image_decode.read_rgb(tf.constant(path)), orientation
        )
        with Image.open(path) as im:
            reference = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        np.testing.assert_array_equal(
            decoded.numpy(), reference, err_msg=f"orientation {orientation}"
        )
        assert check.displayed_size == reference.shape[1::-1]


def test_exif_orientation_follows_the_annotation_size(tmp_path, caplog):
    d = str(tmp_path / "coco")
    pixels = _pixels(6, 10)  # stored 10 wide, 6 high
    for name, orientation in [("rot", 6), ("raw", 8), ("nosize", 5), ("flip", 3), ("odd", 1)]:
        _save_oriented(f"{d}/{name}.png", pixels, orientation)
    box = {"category_id": 1, "bbox": [1, 2, 3, 4]}
    _write_json(
        d,
        {
            "images": [
                {"id": 1, "file_name": "rot.png", "width": 6, "height": 10},  # displayed size
                {"id": 2, "file_name": "raw.png", "width": 10, "height": 6},  # stored size
                {"id": 3, "file_name": "nosize.png"},
                {"id": 4, "file_name": "flip.png", "width": 10, "height": 6},
                {"id": 5, "file_name": "odd.png", "width": 11, "height": 7},
            ],
            "categories": [{"id": 1, "name": "thing"}],
            "annotations": [{"id": i, "image_id": i, **box} for i in range(1, 6)],
        },
    )
    with caplog.at_level(logging.WARNING):
        ds, _ = coco_folder.load_coco_folder(d)
    examples = {int(e["image_id"]): e for e in ds.as_numpy_iterator()}

    def displayed(name):
        with Image.open(f"{d}/{name}.png") as im:
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))

    np.testing.assert_array_equal(examples[1]["image"], displayed("rot"))
    np.testing.assert_allclose(examples[1]["boxes"], [[2 / 10, 1 / 6, 6 / 10, 4 / 6]], atol=1e-6)
    # Boxes drawn on the stored pixels: the pixels stay as stored, and the file is named.
    np.testing.assert_array_equal(examples[2]["image"], pixels)
    np.testing.assert_allclose(examples[2]["boxes"], [[2 / 6, 1 / 10, 1, 4 / 10]], atol=1e-6)
    assert re.search(r"raw\.png.*EXIF orientation 8", caplog.text)
    np.testing.assert_array_equal(examples[3]["image"], displayed("nosize"))
    np.testing.assert_allclose(examples[3]["boxes"], [[2 / 10, 1 / 6, 6 / 10, 4 / 6]], atol=1e-6)
    np.testing.assert_array_equal(examples[4]["image"], displayed("flip"))
    assert re.search(r"differ in size.*odd\.png", caplog.text)


def test_duplicate_image_ids_name_both_files_and_the_id(tmp_path):
    d = _valid_folder(tmp_path)
    data = json.load(open(os.path.join(d, "annotations.json")))
    data["images"].append({"id": 7, "file_name": "c.jpg", "width": 16, "height": 16})
    _write_json(d, data)
    with pytest.raises(ValueError, match=r"annotations\.json: image id 7 .*'a\.jpg'.*'c\.jpg'"):
        coco_folder.read_coco_folder(d)


def test_non_finite_boxes_are_errors_naming_the_annotation(tmp_path):
    for value in (float("inf"), float("nan")):
        d = _valid_folder(tmp_path / str(value))
        data = json.load(open(os.path.join(d, "annotations.json")))
        data["annotations"][0]["bbox"][2] = value
        _write_json(d, data)
        with pytest.raises(ValueError, match=r"annotations\.json: annotation 1 .*not finite"):
            coco_folder.read_coco_folder(d)


def test_free_text_in_iscrowd_names_the_annotation_and_the_field(tmp_path):
    d = _valid_folder(tmp_path)
    data = json.load(open(os.path.join(d, "annotations.json")))
    for value, crowd in ((True, True), ("0", False), ("false", False), (None, False)):
        data["annotations"][0]["iscrowd"] = value
        _write_json(d, data)
        records, _, _ = coco_folder.read_coco_folder(d)
        assert records[1]["is_crowd"][0] == crowd  # image 7 (records are sorted by id)
    for value in ("no", "yes", 2):
        data["annotations"][0]["iscrowd"] = value
        _write_json(d, data)
        with pytest.raises(
            ValueError,
            match=rf"annotations\.json: annotation 1: 'iscrowd' must be 0, 1, true or false, "
            rf"got {re.escape(repr(value))}",
        ):
            coco_folder.read_coco_folder(d)


def test_file_names_must_stay_inside_the_folder(tmp_path):
    d = _valid_folder(tmp_path)
    _save(str(tmp_path / "outside.jpg"), _pixels(16, 16))
    data = json.load(open(os.path.join(d, "annotations.json")))
    for name in ["../outside.jpg", str(tmp_path / "outside.jpg"), "images/../../outside.jpg"]:
        data["images"][2]["file_name"] = name
        _write_json(d, data)
        with pytest.raises(ValueError, match=rf"image 9: .*{re.escape(repr(name))}.*outside"):
            coco_folder.read_coco_folder(d)
    # A symbolic link the user made inside the folder is followed (datasets often link images/
    # to other storage); "inside" is a property of the name, not of where the link points.
    data["images"][2]["file_name"] = "sub/linked.jpg"
    _write_json(d, data)
    os.symlink(str(tmp_path / "outside.jpg"), f"{d}/images/sub/linked.jpg")
    records, _, _ = coco_folder.read_coco_folder(d)
    assert records[-1]["path"] == f"{d}/images/sub/linked.jpg"


def test_non_utf8_file_names_are_read(tmp_path):
    d = str(tmp_path / os.fsdecode(b"caf\xe9"))
    _save(f"{d}/a.png", _pixels(8, 12))
    _write_json(
        d,
        {
            "images": [{"id": 1, "file_name": "a.png", "width": 12, "height": 8}],
            "categories": [{"id": 1, "name": "thing"}],
        },
    )
    (example,) = list(coco_folder.load_coco_folder(d)[0].as_numpy_iterator())
    np.testing.assert_array_equal(example["image"], _pixels(8, 12))


def test_an_annotation_file_of_another_name_is_found_or_named(tmp_path):
    d = _valid_folder(tmp_path)
    os.rename(f"{d}/annotations.json", f"{d}/labelled.coco.json")
    records, _, _ = coco_folder.read_coco_folder(d)  # the only *.json of the folder
    assert sorted(r["image_id"] for r in records) == [3, 7, 9]
    with open(f"{d}/notes.json", "w") as f:
        f.write("{}")
    with pytest.raises(
        FileNotFoundError,
        match=r"annotations\.json not found; the folder holds 2 JSON files "
        r"\(labelled\.coco\.json, notes\.json\): name the annotation file with "
        r"data\.train_annotations",
    ):
        coco_folder.read_coco_folder(d)
    config = base_detection.detection_config("mobilenet_v3_small")
    config.data.update(
        source="coco_folder",
        train_dir=d,
        eval_dir=d,
        train_annotations="labelled.coco.json",
        eval_annotations="labelled.coco.json",
    )
    ds, label_map = detection_sources.load_detection_source(config.data, "eval")
    assert label_map.names == ("person", "car", "dog")
    assert len(list(ds.as_numpy_iterator())) == 3


def test_an_annotation_without_bbox_names_the_key(tmp_path):
    d = _valid_folder(tmp_path)
    data = json.load(open(os.path.join(d, "annotations.json")))
    data["annotations"].append({"id": 55, "image_id": 7, "category_id": 1})
    _write_json(d, data)
    with pytest.raises(ValueError, match=r"annotations\.json: annotation 55: missing key 'bbox'"):
        coco_folder.read_coco_folder(d)


def test_a_json_file_with_a_utf8_byte_order_mark_is_read(tmp_path):
    d = _valid_folder(tmp_path)
    path = os.path.join(d, "annotations.json")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(b"\xef\xbb\xbf" + data)
    records, label_map, _ = coco_folder.read_coco_folder(d)
    assert len(records) == 3 and label_map.names == ("person", "car", "dog")
