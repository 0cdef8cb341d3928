import os
import re

import numpy as np
import pytest
from PIL import Image

from ondevice_vision.configs import base_segmentation
from ondevice_vision.data import cityscapes_folder, cityscapes_labels, segmentation_sources

H, W = 32, 64
CITIES = {"aachen": 2, "bonn": 1}


def _write_tree(root, split="train", with_train_ids=False, seed=0):
    """A Cityscapes-layout tree; returns {stem: (image, labelIds)} of what was written."""
    rng = np.random.default_rng(seed)
    written = {}
    for city, count in CITIES.items():
        image_dir = root / "leftImg8bit" / split / city
        label_dir = root / "gtFine" / split / city
        image_dir.mkdir(parents=True)
        label_dir.mkdir(parents=True)
        for frame in range(count):
            stem = f"{city}_{frame:06d}_000019"
            image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
            label_ids = rng.integers(0, 34, (H, W), dtype=np.uint8)
            Image.fromarray(image).save(image_dir / f"{stem}_leftImg8bit.png")
            Image.fromarray(label_ids).save(label_dir / f"{stem}_gtFine_labelIds.png")
            if with_train_ids:
                train_ids = cityscapes_labels.LABEL_ID_TO_TRAIN_ID[label_ids]
                Image.fromarray(train_ids).save(label_dir / f"{stem}_gtFine_labelTrainIds.png")
            written[stem] = (image, label_ids)
    return written


@pytest.mark.parametrize("with_train_ids", [False, True])
def test_reads_images_and_train_id_masks(tmp_path, with_train_ids):
    written = _write_tree(tmp_path, with_train_ids=with_train_ids)
    ds, files = cityscapes_folder.load(str(tmp_path), "train")
    examples = list(ds.as_numpy_iterator())
    assert [e["image_id"].decode() for e in examples] == sorted(written)
    assert files.mask_is_label_ids == [not with_train_ids] * 3
    for example in examples:
        image, label_ids = written[example["image_id"].decode()]
        np.testing.assert_array_equal(example["image"], image)
        assert example["mask"].dtype == np.uint8 and example["mask"].shape == (H, W, 1)
        expected = cityscapes_labels.LABEL_ID_TO_TRAIN_ID[label_ids]
        np.testing.assert_array_equal(example["mask"][..., 0], expected)
    # A known pair survives whichever file the mask came from: labelId 26 (car) -> trainId 13.
    car = written["aachen_000000_000019"][1] == 26
    assert car.any() and (examples[0]["mask"][..., 0][car] == 13).all()


def test_dispatcher_fills_file_paths_for_official_evaluator(tmp_path):
    written = _write_tree(tmp_path, split="val", with_train_ids=True)
    cfg = base_segmentation.segmentation_data_config()
    cfg.source = "cityscapes_folder"
    cfg.root = str(tmp_path)
    ds, label_map = segmentation_sources.load_segmentation_source(cfg, "eval")
    assert len(list(ds)) == len(written)
    assert label_map.dataset_ids[0] == 7
    pairs = cityscapes_folder.list_files(str(tmp_path), "val").eval_pairs
    assert len(pairs) == 3
    for image_path, label_path in pairs:
        assert image_path.endswith("_leftImg8bit.png") and os.path.isfile(image_path)
        # The evaluator compares labelIds, never the trainIds files.
        assert label_path.endswith("_gtFine_labelIds.png") and os.path.isfile(label_path)
        stem = os.path.basename(image_path)[: -len("_leftImg8bit.png")]
        assert os.path.basename(label_path).startswith(stem)


def test_mask_size_mismatch_names_both_files(tmp_path):
    _write_tree(tmp_path)
    bad = tmp_path / "gtFine/train/bonn/bonn_000000_000019_gtFine_labelIds.png"
    Image.fromarray(np.zeros((H, W + 2), np.uint8)).save(bad)
    with pytest.raises(ValueError) as err:
        cityscapes_folder.load(str(tmp_path), "train")
    assert str(bad) in str(err.value)
    assert "bonn_000000_000019_leftImg8bit.png" in str(err.value)


def test_missing_label_file_names_it(tmp_path):
    _write_tree(tmp_path)
    missing = tmp_path / "gtFine/train/aachen/aachen_000001_000019_gtFine_labelIds.png"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        cityscapes_folder.load(str(tmp_path), "train")


def test_colour_mask_rejected(tmp_path):
    _write_tree(tmp_path)
    bad = tmp_path / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(bad)
    with pytest.raises(ValueError, match=re.escape(str(bad)) + ".*RGB"):
        cityscapes_folder.load(str(tmp_path), "train")


def test_empty_split_names_directory(tmp_path):
    (tmp_path / "leftImg8bit" / "val" / "aachen").mkdir(parents=True)
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "leftImg8bit" / "val"))):
        cityscapes_folder.load(str(tmp_path), "val")
    with pytest.raises(FileNotFoundError, match="test"):
        cityscapes_folder.load(str(tmp_path), "test")


def test_dispatcher_requires_root():
    cfg = base_segmentation.segmentation_data_config()
    cfg.source = "cityscapes_folder"
    with pytest.raises(ValueError, match="data.root"):
        segmentation_sources.load_segmentation_source(cfg, "train")


def test_non_utf8_file_names_are_read(tmp_path):
    root = tmp_path / os.fsdecode(b"city\xe9scapes")
    written = _write_tree(root)
    ds, files = cityscapes_folder.load(str(root), "train")
    examples = list(ds.as_numpy_iterator())
    assert len(examples) == len(written) and files.image_paths[0].startswith(str(root))
