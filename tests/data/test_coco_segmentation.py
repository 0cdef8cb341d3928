"""COCO polygon / RLE annotations -> semantic masks, against pycocotools' own rasterisation."""

import json
import logging
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from ondevice_vision.configs import base_segmentation
from ondevice_vision.data import coco_segmentation, segmentation_sources

H, W = 24, 32
BIG = [[2, 2, 30, 2, 30, 22, 2, 22]]  # a facade: 28 x 20
SMALL = [[10, 6, 18, 6, 18, 14, 10, 14]]  # a window on it: 8 x 8


def _folder(tmp_path, annotations, name="_annotations.coco.json", images=None):
    d = tmp_path / "coco"
    d.mkdir(exist_ok=True)
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(d / "a.png")
    Image.fromarray(np.full((H, W, 3), 160, np.uint8)).save(d / "b.png")
    data = {
        "images": images
        or [
            {"id": 0, "file_name": "a.png", "width": W, "height": H},
            {"id": 1, "file_name": "b.png", "width": W, "height": H},
        ],
        # Ids from 0 as labelling tools export them, with an unused placeholder category.
        "categories": [
            {"id": 0, "name": "facade"},
            {"id": 1, "name": "facade"},
            {"id": 2, "name": "window"},
        ],
        "annotations": annotations,
    }
    (d / name).write_text(json.dumps(data))
    return str(d)


def _ann(ann_id, image_id, category_id, segmentation, **extra):
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [0, 0, 1, 1],
        "segmentation": segmentation,
        "iscrowd": 0,
        **extra,
    }


def _pycoco(segmentation):
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(segmentation, H, W))) > 0


def _masks(directory, unlabeled="background"):
    ds, label_map = coco_segmentation.load(directory, unlabeled=unlabeled)
    return [ex["mask"][..., 0] for ex in ds.as_numpy_iterator()], label_map


def test_larger_objects_are_painted_first_and_unlabelled_pixels_are_background(tmp_path):
    # The window is listed first; it must still end up on top of the facade.
    rle = mask_utils.encode(np.asfortranarray(_pycoco(SMALL).astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    directory = _folder(
        tmp_path,
        [
            _ann(1, 0, 2, SMALL),
            _ann(2, 0, 1, BIG),
            _ann(3, 1, 2, rle, iscrowd=1),  # compressed RLE (crowd): painted like any region
        ],
    )
    (a, b), label_map = _masks(directory)
    # The placeholder shares the name "facade": both get their id appended.
    assert label_map.names == ("background", "facade (id 0)", "facade (id 1)", "window")
    assert label_map.dataset_ids == (-1, 0, 1, 2)
    want = np.zeros((H, W), np.uint8)
    want[_pycoco(BIG)] = 2
    want[_pycoco(SMALL)] = 3
    np.testing.assert_array_equal(a, want)
    assert (a == 3).sum() > 0 and (a == 2).sum() > (a == 3).sum()
    np.testing.assert_array_equal(b, np.where(_pycoco(SMALL), 3, 0))


def test_unlabelled_pixels_can_be_ignored_and_uncompressed_rle_is_read(tmp_path):
    binary = _pycoco(BIG).astype(np.uint8)
    counts = mask_utils.encode(np.asfortranarray(binary))
    # Uncompressed RLE: run lengths as a list, column-major as COCO stores them.
    flat = binary.flatten(order="F")
    runs, value, length = [], 0, 0
    for v in flat:
        if v == value:
            length += 1
        else:
            runs.append(length)
            value, length = v, 1
    runs.append(length)
    assert mask_utils.decode(counts).sum() == binary.sum()
    directory = _folder(tmp_path, [_ann(1, 0, 1, {"size": [H, W], "counts": runs})])
    (a, b), label_map = _masks(directory, unlabeled="ignore")
    assert label_map.names == ("facade (id 0)", "facade (id 1)", "window")
    np.testing.assert_array_equal(a, np.where(binary > 0, 1, 255))
    assert (b == 255).all()


def test_bad_polygons_and_rles_are_errors_naming_the_annotation(tmp_path):
    for segmentation, message in (
        ([[1, 2, 3, 4]], "annotation 5: a polygon must be"),
        ([[1, 2, 3, 4, 5, float("nan")]], "annotation 5: a polygon must be"),
        ({"size": [H + 1, W], "counts": "abc"}, "annotation 5: RLE size"),
        ({"counts": "abc"}, "annotation 5: an RLE needs"),
    ):
        directory = _folder(tmp_path, [_ann(5, 0, 1, segmentation)])
        with pytest.raises(ValueError, match=message) as error:
            coco_segmentation.load(directory)
        assert "_annotations.coco.json" in str(error.value)


def test_image_of_another_size_than_its_json_is_an_error(tmp_path):
    images = [{"id": 0, "file_name": "a.png", "width": W + 2, "height": H}]
    directory = _folder(tmp_path, [_ann(1, 0, 1, BIG)], images=images)
    with pytest.raises(ValueError, match=r"polygons do not fit: .*a\.png"):
        coco_segmentation.load(directory)


def test_annotations_without_segmentation_are_counted(tmp_path, caplog):
    directory = _folder(tmp_path, [_ann(1, 0, 1, []), _ann(2, 0, 2, SMALL)])
    with caplog.at_level(logging.WARNING):
        (a, _), _ = _masks(directory)
    assert "1 annotations without a segmentation" in caplog.text
    np.testing.assert_array_equal(a, np.where(_pycoco(SMALL), 3, 0))


def test_a_folder_without_any_segmentation_is_loud(tmp_path, caplog):
    directory = _folder(tmp_path, [_ann(1, 0, 1, []), _ann(2, 1, 2, [])])
    with caplog.at_level(logging.WARNING):
        coco_segmentation.read(directory, coco_segmentation.label_map_for([directory]))
    assert "NO SEGMENTATIONS AT ALL in 2 images: every pixel is background" in caplog.text


def test_corrupt_images_are_skipped_counted_and_logged(tmp_path, caplog):
    directory = _folder(tmp_path, [_ann(1, 1, 1, BIG)])
    with open(os.path.join(directory, "a.png"), "wb") as f:
        f.write(b"not a png")
    with caplog.at_level(logging.WARNING):
        masks, _ = _masks(directory)
    assert len(masks) == 1 and "a.png" in caplog.text


def test_data_source_coco_folder_shares_one_label_map(tmp_path):
    directory = _folder(tmp_path, [_ann(1, 0, 2, SMALL)])
    cfg = base_segmentation.segmentation_data_config()
    cfg.source = "coco_folder"
    cfg.train_dir = directory
    cfg.eval_dir = directory
    ds, label_map = segmentation_sources.load_segmentation_source(cfg, "eval")
    assert label_map.num_classes == 4
    example = next(ds.as_numpy_iterator())
    assert example["image"].shape == (H, W, 3) and example["mask"].shape == (H, W, 1)
    assert example["image_id"] == b"a"
