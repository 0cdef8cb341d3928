import logging
import os
import re

import numpy as np
import pytest
from PIL import Image, ImageOps

from ondevice_vision.configs import base_detection
from ondevice_vision.data import detection_sources, voc_folder


def _xml(filename, width, height, objects):
    parts = [f"<annotation><filename>{filename}</filename>"]
    if width:
        parts.append(
            f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
        )
    for name, (x0, y0, x1, y1), difficult in objects:
        parts.append(
            f"<object><name>{name}</name><difficult>{int(difficult)}</difficult>"
            f"<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax>"
            "</bndbox></object>"
        )
    parts.append("</annotation>")
    return "".join(parts)


def _add(d, stem, size, objects, mode="RGB", write_size=True, ext="jpg"):
    h, w = size
    os.makedirs(f"{d}/Annotations", exist_ok=True)
    os.makedirs(f"{d}/JPEGImages", exist_ok=True)
    pixels = np.random.default_rng(len(stem)).integers(0, 256, (h, w, 3)).astype(np.uint8)
    Image.fromarray(pixels).convert(mode).save(f"{d}/JPEGImages/{stem}.{ext}")
    with open(f"{d}/Annotations/{stem}.xml", "w") as f:
        f.write(_xml(f"{stem}.{ext}", w if write_size else 0, h, objects))


def _valid_folder(tmp_path):
    d = str(tmp_path / "voc")
    _add(
        d, "2008_000002", (40, 60), [("dog", (1, 1, 60, 40), False), ("cat", (11, 5, 20, 30), True)]
    )
    _add(d, "2008_000001", (30, 30), [("person", (3, 4, 10, 12), False)], mode="L")
    _add(d, "2008_000003", (20, 25), [], write_size=False, ext="png")
    return d


def test_valid_folder(tmp_path):
    d = _valid_folder(tmp_path)
    ds, label_map = voc_folder.load_voc_folder(d)
    assert label_map.names == ("cat", "dog", "person")
    examples = list(ds.as_numpy_iterator())
    # image_id = running index in sorted stem order
    assert [int(e["image_id"]) for e in examples] == [0, 1, 2]
    first, second, third = examples
    # 1-based inclusive pixels [xmin, xmax] cover the continuous span [xmin - 1, xmax]
    np.testing.assert_allclose(first["boxes"], [[3 / 30, 2 / 30, 12 / 30, 10 / 30]], atol=1e-6)
    np.testing.assert_array_equal(first["classes"], [2])
    assert first["image"].shape == (30, 30, 3)  # grayscale JPEG decoded to RGB
    np.testing.assert_allclose(
        second["boxes"], [[0, 0, 1, 1], [4 / 40, 10 / 60, 30 / 40, 20 / 60]], atol=1e-6
    )
    np.testing.assert_array_equal(second["classes"], [1, 0])
    np.testing.assert_array_equal(second["is_crowd"], [False, True])  # difficult -> ignored
    assert third["boxes"].shape == (0, 4) and third["image"].shape == (20, 25, 3)


def test_class_names_order_and_image_set(tmp_path):
    d = _valid_folder(tmp_path)
    os.makedirs(f"{d}/ImageSets/Main")
    with open(f"{d}/ImageSets/Main/val.txt", "w") as f:
        f.write("2008_000002\n2008_000003\n")
    ds, label_map = voc_folder.load_voc_folder(d, ["person", "dog", "cat", "bird"], "val")
    assert label_map.names == ("person", "dog", "cat", "bird")
    examples = list(ds.as_numpy_iterator())
    assert [int(e["image_id"]) for e in examples] == [0, 1]
    np.testing.assert_array_equal(examples[0]["classes"], [1, 2])


def test_boxes_clipped_and_empty_boxes_dropped(tmp_path):
    d = str(tmp_path / "voc")
    objects = [
        ("a", (5, 5, 50, 12), False),  # runs past the 20-wide image: clipped
        ("a", (9, 3, 4, 8), False),  # xmax < xmin: dropped
        ("a", (30, 3, 40, 8), False),  # entirely outside: dropped
    ]
    _add(d, "x", (10, 20), objects)
    records, _, counts = voc_folder.read_voc_folder(d)
    assert counts["dropped_boxes"] == 2
    np.testing.assert_allclose(records[0]["boxes"], [[0.4, 0.2, 1.0, 1.0]], atol=1e-6)


def test_unknown_class_is_an_error(tmp_path):
    d = _valid_folder(tmp_path)
    with pytest.raises(ValueError, match=r"2008_000002\.xml.*'dog'"):
        voc_folder.read_voc_folder(d, ["person", "cat"])


def test_malformed_xml_is_an_error_naming_the_file(tmp_path):
    d = _valid_folder(tmp_path)
    with open(f"{d}/Annotations/2008_000001.xml", "w") as f:
        f.write("<annotation><object><name>dog</name>")
    with pytest.raises(ValueError, match=r"2008_000001\.xml.*malformed XML"):
        voc_folder.read_voc_folder(d)
    with open(f"{d}/Annotations/2008_000001.xml", "w") as f:
        f.write(
            "<annotation><object><name>dog</name><bndbox><xmin>1</xmin></bndbox></object></annotation>"
        )
    with pytest.raises(ValueError, match=r"2008_000001\.xml.*ymin"):
        voc_folder.read_voc_folder(d)


def test_missing_image_is_an_error(tmp_path):
    d = _valid_folder(tmp_path)
    os.remove(f"{d}/JPEGImages/2008_000003.png")
    with pytest.raises(FileNotFoundError, match="2008_000003.png"):
        voc_folder.read_voc_folder(d)


def test_corrupt_image_is_skipped_counted_and_logged(tmp_path, caplog):
    d = _valid_folder(tmp_path)
    with open(f"{d}/JPEGImages/2008_000002.jpg", "r+b") as f:
        f.truncate(200)
    with caplog.at_level(logging.WARNING):
        records, _, counts = voc_folder.read_voc_folder(d)
    assert counts["skipped_images"] == 1
    assert "2008_000002.jpg" in caplog.text
    # the other images keep their running index
    assert [r["image_id"] for r in records] == [0, 2]


def test_detection_source_collects_classes_from_both_splits(tmp_path):
    train = _valid_folder(tmp_path / "train")
    evaluation = str(tmp_path / "eval")
    _add(evaluation, "e", (10, 10), [("zebra", (1, 1, 5, 5), False)])
    cfg = base_detection.detection_data_config()
    cfg.source, cfg.train_dir, cfg.eval_dir = "voc_folder", train, evaluation
    _, train_map = detection_sources.load_detection_source(cfg, "train")
    ds, eval_map = detection_sources.load_detection_source(cfg, "eval")
    assert train_map == eval_map and train_map.names == ("cat", "dog", "person", "zebra")
    (ex,) = list(ds.as_numpy_iterator())
    np.testing.assert_array_equal(ex["classes"], [3])
    cfg.class_names = ("zebra", "cat", "dog", "person")
    _, given = detection_sources.load_detection_source(cfg, "eval")
    assert given.names == ("zebra", "cat", "dog", "person")


def test_clipped_boxes_are_counted_and_logged(tmp_path, caplog):
    d = str(tmp_path / "voc")
    objects = [
        ("a", (5, 5, 50, 12), False),  # runs past the right edge of the 20-wide image
        ("a", (0, 0, 10, 10), False),  # 1-based: column 0 is outside, so this one is clipped too
        ("a", (2, 2, 8, 8), False),  # inside
    ]
    _add(d, "x", (10, 20), objects)
    with caplog.at_level(logging.WARNING):
        records, _, counts = voc_folder.read_voc_folder(d)
    assert counts["clipped_boxes"] == 2 and counts["dropped_boxes"] == 0
    assert len(records[0]["boxes"]) == 3
    assert re.search(r"voc: .*clipped 2 boxes", caplog.text)


def test_non_finite_coordinates_are_errors_naming_the_file(tmp_path):
    for value in ("inf", "nan", "-Infinity"):
        d = str(tmp_path / value)
        _add(d, "x", (10, 20), [("a", (1, 1, value, 5), False)])
        with pytest.raises(ValueError, match=rf"x\.xml: <xmax> is not a finite number: '{value}'"):
            voc_folder.read_voc_folder(d)


def test_file_names_must_stay_inside_the_folder(tmp_path):
    d = _valid_folder(tmp_path)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "outside.jpg")
    xml = f"{d}/Annotations/2008_000001.xml"
    for name in ["../../outside.jpg", str(tmp_path / "outside.jpg")]:
        with open(xml, "w") as f:
            f.write(_xml(name, 8, 8, []))
        with pytest.raises(
            ValueError, match=rf"2008_000001\.xml: .*{re.escape(repr(name))}.*outside"
        ):
            voc_folder.read_voc_folder(d)
    _valid_folder(tmp_path / "listed")
    os.makedirs(f"{tmp_path}/listed/voc/ImageSets/Main")
    with open(f"{tmp_path}/listed/voc/ImageSets/Main/val.txt", "w") as f:
        f.write("2008_000001\n../../../voc/Annotations/2008_000002\n")
    with pytest.raises(
        ValueError, match=r"val\.txt: .*'\.\./\.\./\.\./voc/Annotations/2008_000002'"
    ):
        voc_folder.read_voc_folder(f"{tmp_path}/listed/voc", image_set="val")


def _add_oriented(d, stem, orientation, size_in_xml):
    pixels = np.random.default_rng(orientation).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    os.makedirs(f"{d}/Annotations", exist_ok=True)
    os.makedirs(f"{d}/JPEGImages", exist_ok=True)
    Image.fromarray(pixels).save(f"{d}/JPEGImages/{stem}.png", exif=exif)
    w, h = size_in_xml
    with open(f"{d}/Annotations/{stem}.xml", "w") as f:
        f.write(_xml(f"{stem}.png", w, h, [("a", (1, 1, 3, 4), False)]))
    return pixels


def test_exif_orientation_follows_the_annotation_size(tmp_path, caplog):
    d = str(tmp_path / "voc")
    _add_oriented(d, "a_rot", 6, (6, 10))  # the XML has the displayed size
    stored = _add_oriented(d, "b_raw", 6, (10, 6))  # the XML has the stored size
    _add_oriented(d, "c_nosize", 8, (0, 0))
    with caplog.at_level(logging.WARNING):
        ds, _ = voc_folder.load_voc_folder(d)
    rot, raw, nosize = ds.as_numpy_iterator()
    for example, stem in [(rot, "a_rot"), (nosize, "c_nosize")]:
        with Image.open(f"{d}/JPEGImages/{stem}.png") as im:
            np.testing.assert_array_equal(
                example["image"], np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
            )
        np.testing.assert_allclose(example["boxes"], [[0, 0, 4 / 10, 3 / 6]], atol=1e-6)
    np.testing.assert_array_equal(raw["image"], stored)
    np.testing.assert_allclose(raw["boxes"], [[0, 0, 4 / 6, 3 / 10]], atol=1e-6)
    assert re.search(r"b_raw\.png.*EXIF orientation 6", caplog.text)


def test_non_utf8_file_names_are_read(tmp_path):
    d = str(tmp_path / os.fsdecode(b"voc\xff"))
    _add(d, "x", (10, 20), [("a", (1, 1, 5, 5), False)], ext="png")
    (example,) = list(voc_folder.load_voc_folder(d)[0].as_numpy_iterator())
    assert example["image"].shape == (10, 20, 3)


@pytest.mark.parametrize("text", ["maybe", "2", "yes"])
def test_free_text_in_a_flag_field_names_the_file_and_the_field(tmp_path, text):
    d = _valid_folder(tmp_path)
    xml = f"{d}/Annotations/2008_000001.xml"
    with open(xml) as f:
        content = f.read()
    with open(xml, "w") as f:
        f.write(content.replace("<difficult>0</difficult>", f"<difficult>{text}</difficult>"))
    with pytest.raises(ValueError, match=rf"{re.escape(xml)}: <difficult> must be 0, 1, true or"):
        voc_folder.read_voc_folder(d)


def test_free_text_in_the_size_names_the_file_and_the_field(tmp_path):
    d = _valid_folder(tmp_path)
    xml = f"{d}/Annotations/2008_000001.xml"
    with open(xml) as f:
        content = f.read()
    with open(xml, "w") as f:
        f.write(content.replace("<width>30</width>", "<width>thirty</width>"))
    with pytest.raises(ValueError, match=rf"{re.escape(xml)}: <width> is not a number"):
        voc_folder.read_voc_folder(d)


def test_image_set_and_xml_with_a_utf8_byte_order_mark_are_read(tmp_path):
    d = _valid_folder(tmp_path)
    os.makedirs(f"{d}/ImageSets/Main")
    with open(f"{d}/ImageSets/Main/train.txt", "wb") as f:
        f.write(b"\xef\xbb\xbf2008_000001\n2008_000002\n")
    xml = f"{d}/Annotations/2008_000001.xml"
    with open(xml, "rb") as f:
        content = f.read()
    with open(xml, "wb") as f:
        f.write(b"\xef\xbb\xbf" + content)
    records, label_map, _ = voc_folder.read_voc_folder(d, image_set="train")
    assert len(records) == 2 and "person" in label_map.names
