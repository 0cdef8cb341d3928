import logging
import os
import re

import numpy as np
import pytest
from PIL import Image, ImageOps

from ondevice_vision import drawing
from ondevice_vision.configs import base_segmentation, lraspp_mobilenet_v3_small_shapes
from ondevice_vision.data import mask_folder, segmentation_sources
from ondevice_vision.tasks import segmentation as segmentation_task

CLASSES = ["background", "cat", "dog"]


def _write_folder(directory, masks, classes=CLASSES, image_format="png", palette=False, seed=0):
    """Writes images/ + masks/ (+ classes.txt); returns {stem: image} of what was written."""
    rng = np.random.default_rng(seed)
    (directory / "images").mkdir(parents=True)
    (directory / "masks").mkdir()
    if classes is not None:
        (directory / "classes.txt").write_text("\n".join(classes) + "\n\n")
    images = {}
    for i, mask in enumerate(masks):
        stem = f"img{i:02d}"
        image = rng.integers(0, 256, mask.shape + (3,), dtype=np.uint8)
        Image.fromarray(image).save(directory / "images" / f"{stem}.{image_format}")
        m = Image.fromarray(mask)
        if palette:
            m = m.convert("P")
            m.putpalette([0, 0, 0, 200, 10, 10, 10, 200, 10] + [255, 255, 255] * 253)
        m.save(directory / "masks" / f"{stem}.png")
        images[stem] = image
    return images


def _masks(seed=0, values=(0, 1, 2, 255), shapes=((16, 24), (20, 12))):
    rng = np.random.default_rng(seed)
    return [rng.choice(np.array(values, np.uint8), size=shape) for shape in shapes]


@pytest.mark.parametrize("palette", [False, True])
def test_reads_pairs_with_masks_unchanged(tmp_path, palette):
    masks = _masks()
    images = _write_folder(tmp_path, masks, palette=palette)
    ds, label_map = mask_folder.load(str(tmp_path))
    assert label_map.names == tuple(CLASSES) and label_map.dataset_ids == (0, 1, 2)
    examples = list(ds.as_numpy_iterator())
    assert [e["image_id"] for e in examples] == [b"img00", b"img01"]
    for example, mask in zip(examples, masks, strict=True):
        np.testing.assert_array_equal(example["image"], images[example["image_id"].decode()])
        assert example["mask"].dtype == np.uint8
        # Palette masks carry indices, not colours: they must come back as the written values.
        np.testing.assert_array_equal(example["mask"], mask[..., None])


def test_custom_ignore_value_becomes_255(tmp_path):
    masks = _masks(values=(0, 1, 2, 9))
    _write_folder(tmp_path, masks, image_format="jpg")
    ds, _ = mask_folder.load(str(tmp_path), ignore_label=9)
    for example, mask in zip(ds.as_numpy_iterator(), masks, strict=True):
        assert example["image"].shape == mask.shape + (3,)
        np.testing.assert_array_equal(example["mask"][..., 0], np.where(mask == 9, 255, mask))


def test_values_outside_class_list_name_file_and_values(tmp_path):
    masks = _masks()
    masks[1][0, :3] = [3, 7, 3]
    _write_folder(tmp_path, masks)
    with pytest.raises(ValueError) as err:
        mask_folder.load(str(tmp_path))
    message = str(err.value)
    assert str(tmp_path / "masks" / "img01.png") in message
    assert "[3, 7]" in message


def test_mask_size_mismatch_names_file(tmp_path):
    _write_folder(tmp_path, _masks())
    bad = tmp_path / "masks" / "img00.png"
    Image.fromarray(np.zeros((16, 23), np.uint8)).save(bad)
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        mask_folder.load(str(tmp_path))


def test_images_without_masks_are_loud_and_a_folder_without_any_is_an_error(tmp_path, caplog):
    a = tmp_path / "a"
    _write_folder(a, _masks())
    (a / "masks" / "img01.png").unlink()
    with caplog.at_level(logging.WARNING):
        ds, _ = mask_folder.load(str(a))
    assert [e["image_id"] for e in ds.as_numpy_iterator()] == [b"img00"]
    assert (
        f"{a}/masks: NO MASK for 1 of the 2 images in {a}/images: skipped (an image without a "
        f"mask neither trains nor is scored): {a}/images/img01.png"
    ) in caplog.text
    (a / "masks" / "img00.png").unlink()
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"{a}/masks: NO MASKS: none of the 2 images in {a}/")
    ):
        mask_folder.load(str(a))


def test_masks_without_a_labelled_pixel_are_loud(tmp_path, caplog):
    _write_folder(tmp_path, _masks(values=(255,)))
    with caplog.at_level(logging.WARNING):
        mask_folder.load(str(tmp_path))
    assert f"{tmp_path}/masks: NO LABELLED PIXELS AT ALL in 2 masks" in caplog.text
    caplog.clear()
    _write_folder(tmp_path / "labelled", _masks(values=(0, 255)))
    with caplog.at_level(logging.WARNING):
        mask_folder.load(str(tmp_path / "labelled"))
    assert "NO LABELLED PIXELS" not in caplog.text


def test_missing_classes_file(tmp_path):
    _write_folder(tmp_path / "b", _masks(), classes=None)
    with pytest.raises(FileNotFoundError, match="classes.txt"):
        mask_folder.load(str(tmp_path / "b"))


def test_empty_images_dir(tmp_path):
    _write_folder(tmp_path, [])
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "images"))):
        mask_folder.load(str(tmp_path))


def test_ignore_label_colliding_with_class_rejected(tmp_path):
    _write_folder(tmp_path, _masks(values=(0, 1, 2)))
    with pytest.raises(ValueError, match="ignore_label 2"):
        mask_folder.load(str(tmp_path), ignore_label=2)


def test_dispatcher_shared_classes_file_and_palette(tmp_path):
    # classes.txt in the parent serves both split dirs.
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES))
    _write_folder(tmp_path / "train", _masks(seed=1), classes=None)
    _write_folder(tmp_path / "val", _masks(seed=2), classes=None)
    cfg = base_segmentation.segmentation_data_config()
    cfg.source = "mask_folder"
    cfg.train_dir = str(tmp_path / "train")
    cfg.eval_dir = str(tmp_path / "val")
    ds, label_map = segmentation_sources.load_segmentation_source(cfg, "train")
    assert len(list(ds)) == 2
    assert label_map.names == tuple(CLASSES)
    # Mask-folder classes are drawn in the package's palette: distinct, never black.
    config = lraspp_mobilenet_v3_small_shapes.get_config()
    config.data = cfg
    palette = segmentation_task.palette(config, label_map.num_classes)
    np.testing.assert_array_equal(palette, drawing.default_palette(3))


def test_dispatcher_rejects_differing_class_lists(tmp_path):
    _write_folder(tmp_path / "train", _masks())
    _write_folder(tmp_path / "val", _masks(), classes=["background", "cat", "bird"])
    cfg = base_segmentation.segmentation_data_config()
    cfg.source = "mask_folder"
    cfg.train_dir = str(tmp_path / "train")
    cfg.eval_dir = str(tmp_path / "val")
    with pytest.raises(ValueError, match="Class lists differ"):
        segmentation_sources.load_segmentation_source(cfg, "eval")


def test_images_with_the_same_stem_are_an_error(tmp_path):
    _write_folder(tmp_path, _masks())
    Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(tmp_path / "images" / "img00.jpg")
    with pytest.raises(ValueError) as err:
        mask_folder.load(str(tmp_path))
    message = str(err.value)
    assert str(tmp_path / "images" / "img00.jpg") in message
    assert str(tmp_path / "images" / "img00.png") in message
    assert str(tmp_path / "masks" / "img00.png") in message


def _oriented(directory, stem, orientation, mask_shape):
    pixels = np.random.default_rng(orientation).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(directory / "images" / f"{stem}.png", exif=exif)
    Image.fromarray(np.ones(mask_shape, np.uint8)).save(directory / "masks" / f"{stem}.png")
    return pixels


def test_exif_orientation_follows_the_mask_size(tmp_path, caplog):
    _write_folder(tmp_path, [])
    _oriented(tmp_path, "a_rot", 6, (10, 6))  # the mask has the displayed size
    stored = _oriented(tmp_path, "b_raw", 8, (6, 10))  # the mask has the stored size
    with caplog.at_level("WARNING"):
        ds, _ = mask_folder.load(str(tmp_path))
    rot, raw = ds.as_numpy_iterator()
    with Image.open(tmp_path / "images" / "a_rot.png") as im:
        np.testing.assert_array_equal(
            rot["image"], np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        )
    assert rot["mask"].shape == (10, 6, 1)
    np.testing.assert_array_equal(raw["image"], stored)
    assert re.search(r"b_raw\.png.*EXIF orientation 8", caplog.text)

    _oriented(tmp_path, "c_bad", 6, (7, 7))
    with pytest.raises(ValueError, match=r"c_bad\.png.*EXIF orientation 6"):
        mask_folder.load(str(tmp_path))


def test_non_utf8_file_names_are_read(tmp_path):
    directory = tmp_path / os.fsdecode(b"masks\xff")
    _write_folder(directory, _masks(shapes=((8, 8),)))
    stem = os.fsdecode(b"caf\xe9")
    os.rename(directory / "images" / "img00.png", directory / "images" / f"{stem}.png")
    os.rename(directory / "masks" / "img00.png", directory / "masks" / f"{stem}.png")
    (example,) = list(mask_folder.load(str(directory))[0].as_numpy_iterator())
    assert example["image_id"] == b"caf\xe9" and example["mask"].shape == (8, 8, 1)


def test_classes_txt_with_a_utf8_byte_order_mark(tmp_path):
    _write_folder(tmp_path, _masks())
    (tmp_path / "classes.txt").write_bytes(b"\xef\xbb\xbf" + "\n".join(CLASSES).encode())
    assert mask_folder.read_class_names(str(tmp_path))[0] == tuple(CLASSES)
