"""`ondevice-export` then `ondevice-predict` as a user runs them: a checkpoint becomes a SavedModel,
which labels a folder holding good and corrupt files; corrupt ones are named and skipped."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from ondevice_vision import drawing
from ondevice_vision.configs import lraspp_mobilenet_v3_small_cityscapes
from ondevice_vision.data import cityscapes_labels
from ondevice_vision.data.label_map import LabelMap
from ondevice_vision.export import tflite
from ondevice_vision.export.export_info import ExportInfo, read_export_files
from ondevice_vision.export.exported_model import load_exported_model
from ondevice_vision.export.main import label_map_and_palette
from ondevice_vision.predict import checked_inputs, predict_files, read_image
from tests.helpers.export_fixtures import (
    detection_config,
    eval_images,
    label_map,
    png_bytes,
    segmentation_config,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DETECTION_CONFIG = "ondevice_vision/configs/ssdlite_mobilenet_v3_small_shapes.py:smoke"


def _run(module, *args):
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


def _cli(module, *args):
    result = _run(module, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Good images (PNG, JPEG, two whose old output names collided, a phone photo stored
    sideways with an EXIF orientation), a corrupt JPEG, a truncated PNG and a text file."""
    root = tmp_path_factory.mktemp("inputs")
    images = eval_images(detection_config(), 2)
    (root / "a_shapes.png").write_bytes(png_bytes(images[0]))
    Image.fromarray(images[1]).save(root / "b_shapes.jpg", quality=95)
    (root / "c_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a JPEG" * 10)
    (root / "d_truncated.png").write_bytes(png_bytes(images[0])[:500])
    (root / "e.x.png").write_bytes(png_bytes(images[1]))
    (root / "e_x.png").write_bytes(png_bytes(images[0]))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: viewers turn it 90 degrees clockwise
    Image.fromarray(images[1][:, 40:]).save(root / "f_phone.jpg", quality=95, exif=exif)
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def detection_export(tmp_path_factory, lively_detector):
    """A checkpoint of a lively detector, exported by the ondevice-export CLI."""
    root = tmp_path_factory.mktemp("cli_export")
    prefix = tf.train.Checkpoint(model=lively_detector).write(str(root / "checkpoints" / "ckpt-7"))
    out = str(root / "export")
    summary, _ = _cli(
        "ondevice_vision.export.main",
        f"--config={DETECTION_CONFIG}",
        f"--checkpoint={prefix}",
        f"--export_dir={out}",
    )
    assert summary == {"export_dir": out, "checkpoint": prefix, "format": "saved_model"}
    return out


def test_export_cli_writes_a_complete_export(detection_export):
    info, labels = read_export_files(detection_export)
    assert info.task == "detection" and info.extra["checkpoint"].endswith("ckpt-7")
    assert labels.names == ("circle", "square", "triangle", "star")
    assert os.path.isfile(os.path.join(detection_export, "saved_model.pb"))


def test_predict_cli_labels_good_images_and_skips_corrupt_ones(detection_export, folder, tmp_path):
    out = tmp_path / "predictions"
    summary, log = _cli(
        "ondevice_vision.predict",
        f"--model={detection_export}",
        f"--input={folder}",
        f"--output={out}",
        "--score_threshold=0.5",
    )
    skipped = [str(folder / "c_broken.jpg"), str(folder / "d_truncated.png")]
    assert summary == {
        "output": str(out / "predictions.json"),
        "processed": 5,
        "skipped": skipped,
    }
    for path in skipped:
        assert path in log  # reported by name
    payload = json.loads((out / "predictions.json").read_text())
    assert [s["file"] for s in payload["skipped"]] == skipped
    good = ["a_shapes.png", "b_shapes.jpg", "e.x.png", "e_x.png", "f_phone.jpg"]
    assert [r["file"] for r in payload["images"]] == [str(folder / n) for n in good]
    with Image.open(folder / "f_phone.jpg") as phone:
        stored_width, stored_height = phone.size
    assert (payload["images"][-1]["width"], payload["images"][-1]["height"]) == (
        stored_height,
        stored_width,
    )
    exported = load_exported_model(detection_export)
    for record in payload["images"]:
        image = read_image(record["file"])  # the CLI's decoder (JPEG decoders differ slightly)
        outputs = exported.predict(image[None])
        keep = outputs["detection_scores"][0] >= 0.5
        assert len(record["detections"]) == keep.sum()
        assert [d["score"] for d in record["detections"]] == pytest.approx(
            outputs["detection_scores"][0][keep], abs=1e-4
        )
        for detection, box in zip(
            record["detections"], outputs["detection_boxes"][0][keep], strict=True
        ):
            assert detection["box"] == pytest.approx(box, abs=1e-4)
            index = exported.label_map.index_of_dataset_id()[detection["class_id"]]
            assert detection["class_name"] == exported.label_map.names[index]
        picture = np.asarray(Image.open(out / record["picture"]))
        assert picture.shape == image.shape
        # Boxes were drawn where there were detections, nothing otherwise.
        assert (not np.array_equal(picture, image)) == bool(record["detections"])
    assert sum(len(r["detections"]) for r in payload["images"]) > 0
    assert sorted(os.listdir(out)) == sorted([f"{n}.png" for n in good] + ["predictions.json"])
    assert [r["picture"] for r in payload["images"]] == [f"{n}.png" for n in good]


def test_predict_fails_when_nothing_was_processed(detection_export, folder, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ["c_broken.jpg", "d_truncated.png", "notes.txt"]:
        (bad / name).write_bytes((folder / name).read_bytes())
    result = _run(
        "ondevice_vision.predict",
        f"--model={detection_export}",
        f"--input={bad}",
        f"--output={tmp_path / 'out'}",
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"ERROR: {bad}: nothing was processed"), result.stderr[-3000:]
    assert str(bad / "c_broken.jpg") in result.stderr and result.stdout == ""
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        ValueError, match=rf"^{tmp_path / 'empty'}: nothing was processed: no image"
    ):
        checked_inputs(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match=r"c_broken\.jpg: nothing was processed"):
        checked_inputs(str(bad / "c_broken.jpg"))


def test_read_image_applies_the_exif_orientation(folder):
    with Image.open(folder / "f_phone.jpg") as im:
        reference = np.asarray(ImageOps.exif_transpose(im).convert("RGB"), np.int32)
    decoded = read_image(str(folder / "f_phone.jpg")).astype(np.int32)
    assert decoded.shape == reference.shape
    assert np.abs(decoded - reference).mean() < 1.5  # JPEG decoders differ slightly


def test_segmentation_predictions_write_masks_and_blends(folder, tmp_path, lively_segmenter):
    config = segmentation_config()
    labels = label_map(config)
    palette = drawing.default_palette(labels.num_classes)[::-1].copy()  # not the default
    path = tflite.export_tflite(
        config,
        lively_segmenter,
        labels,
        str(tmp_path / "lite"),
        tuple(config.model.input_size),
        palette=palette,
    )
    exported = load_exported_model(path, num_threads=2)
    payload = predict_files(exported, [str(folder / "a_shapes.png")], str(tmp_path / "out"))
    (record,) = payload["images"]
    image = np.asarray(Image.open(folder / "a_shapes.png"))
    mask = np.asarray(Image.open(tmp_path / "out" / record["mask"]))
    np.testing.assert_array_equal(mask, exported.predict(image[None])["semantic_map"][0])
    blended = np.asarray(Image.open(tmp_path / "out" / record["picture"]))
    np.testing.assert_array_equal(blended, drawing.blend_mask(image, mask, palette, alpha=0.5))
    fractions = record["class_fractions"]
    assert sum(fractions.values()) == pytest.approx(1.0, abs=1e-3)
    assert set(fractions) <= set(labels.names)


def test_cityscapes_exports_carry_the_cityscapes_palette(tmp_path):
    config = lraspp_mobilenet_v3_small_cityscapes.get_config()
    labels_file = str(tmp_path / "labels.json")
    cityscapes_labels.label_map().save(labels_file)
    labels, palette = label_map_and_palette(config, labels_file)
    assert labels.num_classes == 19
    np.testing.assert_array_equal(palette, cityscapes_labels.PALETTE)


class _NoDetections:
    """Stands in for an exported detector: what is under test is predict's file handling."""

    task = "detection"
    path = "stub"
    label_map = LabelMap(("thing",), (1,))
    info = ExportInfo(task="detection", format="saved_model")

    def predict(self, images):
        return {
            "num_detections": np.zeros([1]),
            "detection_boxes": np.zeros([1, 0, 4], np.float32),
            "detection_classes": np.zeros([1, 0], np.float32),
            "detection_scores": np.zeros([1, 0], np.float32),
        }


def test_non_utf8_file_names_are_predicted(tmp_path):
    name = os.fsdecode(b"caf\xe9.png")
    inputs = tmp_path / os.fsdecode(b"in\xff")
    inputs.mkdir()
    Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(inputs / name)
    out = tmp_path / "out"
    payload = predict_files(_NoDetections(), checked_inputs(str(inputs)), str(out))
    assert sorted(os.listdir(out)) == [f"{name}.png", "predictions.json"]
    with open(out / "predictions.json") as f:  # Python's JSON keeps the undecodable bytes
        assert json.load(f)["images"] == payload["images"]
    assert os.fsencode(payload["images"][0]["file"]) == os.fsencode(str(inputs / name))
