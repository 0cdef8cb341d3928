import json
import logging
import math
import os
import zipfile

import numpy as np
import pytest
from cityscapesscripts.helpers.labels import id2label, labels
from PIL import Image

from ondevice_vision.eval import cityscapes_official
from ondevice_vision.eval.cityscapes_official import (
    EVAL_CLASS_NAMES,
    run_official_evaluation,
    write_prediction_png,
    write_submission,
)
from ondevice_vision.eval.miou import StreamingConfusionMatrix

HEIGHT, WIDTH = 32, 64
IMAGES = ("aachen_000000_000019", "aachen_000001_000019", "bremen_000003_000019")
TRAIN_CLASS = 16  # "train" (labelId 31): absent from ground truth and predictions -> NaN
# Label ids used in the fake ground truth: evaluated classes except "train", plus ignored ones
# (unlabeled, static, parking, caravan).
GT_LABEL_IDS = [i for i in range(7, 34) if i != 31 and not id2label[i].ignoreInEval] + [0, 4, 9, 29]


def label_ids_to_train_ids(label_ids):
    """Reference conversion straight from cityscapesscripts (-1 and 255 -> 255)."""
    table = np.full(256, 255, np.uint8)
    for label in labels:
        if label.id >= 0 and 0 <= label.trainId < 255:
            table[label.id] = label.trainId
    return table[label_ids]


def make_cityscapes_tree(root, rng):
    """gtFine/val/<city>/ labelIds + instanceIds PNGs built from 8x8 blocks of random classes."""
    gt_files = []
    for stem in IMAGES:
        city = stem.split("_")[0]
        blocks = rng.choice(GT_LABEL_IDS, size=(HEIGHT // 8, WIDTH // 8))
        label_ids = np.kron(blocks, np.ones((8, 8), np.int64)).astype(np.uint8)
        # Each block of an instance class is its own instance: id = labelId * 1000 + k.
        block_index = np.kron(
            np.arange(blocks.size).reshape(blocks.shape), np.ones((8, 8), np.int64)
        )
        has_instances = np.vectorize(lambda i: id2label[int(i)].hasInstances)(label_ids)
        instance_ids = np.where(
            has_instances, label_ids.astype(np.int32) * 1000 + block_index, label_ids
        )
        directory = root / "gtFine" / "val" / city
        directory.mkdir(parents=True, exist_ok=True)
        label_path = directory / f"{stem}_gtFine_labelIds.png"
        Image.fromarray(label_ids).save(label_path)
        Image.fromarray(instance_ids.astype(np.uint16)).save(  # 16-bit, like Cityscapes
            directory / f"{stem}_gtFine_instanceIds.png"
        )
        gt_files.append(str(label_path))
    return gt_files


def noisy_predictions(gt_train_ids, rng):
    classes = [c for c in range(19) if c != TRAIN_CLASS]
    random_ids = rng.choice(classes, size=gt_train_ids.shape)
    keep = (gt_train_ids != 255) & (rng.random(gt_train_ids.shape) < 0.7)
    return np.where(keep, gt_train_ids, random_ids).astype(np.uint8)


@pytest.fixture
def tree(tmp_path):
    rng = np.random.default_rng(0)
    gt_files = make_cityscapes_tree(tmp_path, rng)
    return tmp_path, gt_files, rng


def test_streaming_miou_equals_official_class_iou(tree):
    root, gt_files, rng = tree
    pred_dir = root / "results"
    ours = StreamingConfusionMatrix(19)
    for stem, gt_path in zip(IMAGES, gt_files, strict=True):
        gt_train_ids = label_ids_to_train_ids(np.asarray(Image.open(gt_path)))
        prediction = noisy_predictions(gt_train_ids, rng)
        write_prediction_png(prediction, stem + "_leftImg8bit", str(pred_dir))
        ours.update(gt_train_ids, prediction)

    result = run_official_evaluation(str(pred_dir), gt_files)
    mine = ours.result()
    assert result["classIoU"] == pytest.approx(mine["mIoU"], abs=1e-4)
    official_per_class = [result["per_class"][name]["IoU"] for name in EVAL_CLASS_NAMES]
    np.testing.assert_allclose(official_per_class, mine["per_class_iou"], atol=1e-4, equal_nan=True)
    assert math.isnan(result["per_class"]["train"]["IoU"])
    assert 0.2 < result["classIoU"] < 0.95
    assert result["instance_level"] and 0.0 <= result["classiIoU"] <= 1.0
    assert 0.0 < result["categoryIoU"] <= 1.0 and 0.0 <= result["categoryiIoU"] <= 1.0
    assert result["num_images"] == 3
    assert set(result["per_category"]) == {
        "flat",
        "construction",
        "object",
        "nature",
        "sky",
        "human",
        "vehicle",
    }
    # The module-level defaults of cityscapesscripts are left as they were.
    module = cityscapes_official._official_module()
    assert module.args.quiet is False and module.args.evalLabels == []


def test_perfect_predictions_give_one_for_every_score(tree, tmp_path):
    root, gt_files, _ = tree
    pred_dir = root / "perfect"
    for stem, gt_path in zip(IMAGES, gt_files, strict=True):
        gt_train_ids = label_ids_to_train_ids(np.asarray(Image.open(gt_path)))
        # Wherever the ground truth is ignored any prediction is fine; use "road".
        write_prediction_png(np.where(gt_train_ids == 255, 0, gt_train_ids), stem, str(pred_dir))
    out_json = tmp_path / "out" / "cityscapes.json"
    result = run_official_evaluation(str(pred_dir), gt_files, out_json=str(out_json))
    for key in ("classIoU", "categoryIoU", "classiIoU", "categoryiIoU"):
        assert result[key] == pytest.approx(1.0), key

    def no_nan(token):
        raise AssertionError(f"non-standard JSON constant {token}")

    written = json.loads(out_json.read_text(), parse_constant=no_nan)
    assert written["classIoU"] == pytest.approx(1.0)
    assert written["per_class"]["train"]["IoU"] is None
    assert written["official"]["averageScoreClasses"] == pytest.approx(1.0)


def test_missing_instance_files_disable_iiou_only(tree, caplog):
    root, gt_files, rng = tree
    pred_dir = root / "results"
    ours = StreamingConfusionMatrix(19)
    for stem, gt_path in zip(IMAGES, gt_files, strict=True):
        gt_train_ids = label_ids_to_train_ids(np.asarray(Image.open(gt_path)))
        prediction = noisy_predictions(gt_train_ids, rng)
        write_prediction_png(prediction, stem, str(pred_dir))
        ours.update(gt_train_ids, prediction)
    os.remove(gt_files[1].replace("labelIds", "instanceIds"))
    with caplog.at_level(logging.WARNING):
        result = run_official_evaluation(str(pred_dir), gt_files)
    assert "iIoU disabled" in caplog.text and "1 of 3" in caplog.text
    assert not result["instance_level"]
    assert math.isnan(result["classiIoU"]) and math.isnan(result["categoryiIoU"])
    assert math.isnan(result["per_class"]["car"]["iIoU"])
    assert result["classIoU"] == pytest.approx(ours.result()["mIoU"], abs=1e-4)


def test_evaluation_errors_name_the_files(tree):
    root, gt_files, _ = tree
    pred_dir = root / "results"
    write_prediction_png(np.zeros((HEIGHT, WIDTH), np.uint8), IMAGES[0], str(pred_dir))
    with pytest.raises(FileNotFoundError, match=IMAGES[1]):
        run_official_evaluation(str(pred_dir), gt_files)
    write_prediction_png(np.zeros((HEIGHT, WIDTH // 2), np.uint8), IMAGES[0], str(pred_dir))
    with pytest.raises(ValueError, match=f"widths of .*{IMAGES[0]}_pred.png"):
        run_official_evaluation(str(pred_dir), gt_files[:1])
    with pytest.raises(FileNotFoundError, match="nothere"):
        run_official_evaluation(str(pred_dir), [str(root / "nothere_gtFine_labelIds.png")])
    with pytest.raises(FileNotFoundError, match="prediction directory"):
        run_official_evaluation(str(root / "nopreds"), gt_files)


def test_prediction_png_holds_label_ids(tmp_path):
    train_ids = np.array([[0, 1, 2, 18], [13, 11, 255, 5]], np.uint8)
    path = write_prediction_png(
        train_ids[..., None], "frankfurt_000000_000294_leftImg8bit", str(tmp_path)
    )
    assert os.path.basename(path) == "frankfurt_000000_000294_pred.png"
    image = Image.open(path)
    assert image.mode == "L"
    np.testing.assert_array_equal(np.asarray(image), [[7, 8, 11, 33], [26, 24, 0, 17]])
    # Round trip with the reference conversion.
    back = label_ids_to_train_ids(np.asarray(image))
    np.testing.assert_array_equal(back[train_ids != 255], train_ids[train_ids != 255])
    with pytest.raises(ValueError, match="train ids"):
        write_prediction_png(np.array([[19]], np.uint8), "a_000000_000001", str(tmp_path))
    with pytest.raises(ValueError, match="not a Cityscapes image name"):
        write_prediction_png(train_ids, "image7", str(tmp_path))


def test_write_submission(tmp_path):
    maps = [
        ("berlin_000000_000019", np.ones((4, 6), np.uint8)),
        ("bonn_000001_000019", np.zeros((4, 6), np.uint8)),
    ]
    zip_path = tmp_path / "submission.zip"
    paths = write_submission(
        maps, str(tmp_path / "pngs"), expected_shape=(4, 6), zip_path=str(zip_path)
    )
    assert [os.path.basename(p) for p in paths] == [
        "berlin_000000_000019_pred.png",
        "bonn_000001_000019_pred.png",
    ]
    with zipfile.ZipFile(zip_path) as archive:
        assert sorted(archive.namelist()) == sorted(os.path.basename(p) for p in paths)
    with pytest.raises(ValueError, match="full size"):
        write_submission(maps, str(tmp_path / "pngs"))
