"""SavedModel export: reloaded in a fresh process with plain TensorFlow, every signature must agree
with the in-memory model (to 1e-4); its outputs are the Keras model's detections / class maps; the
export directory is written atomically and carries its labels."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from ondevice_vision import tasks
from ondevice_vision.data.label_map import LabelMap
from ondevice_vision.export.export_info import read_export_files
from ondevice_vision.export.saved_model import export_saved_model
from ondevice_vision.files import atomic_directory
from ondevice_vision.tasks import detection as detection_task
from tests.helpers.export_fixtures import (
    assert_same_detections,
    confident,
    detection_config,
    eval_images,
    label_map,
    png_bytes,
    segmentation_config,
    tf_example,
)

TOL = 1e-4

# Runs in a fresh interpreter: TensorFlow and NumPy only, never our package.
RELOAD_SCRIPT = r"""
import base64, json, sys
import numpy as np
import tensorflow as tf

requests = json.load(open(sys.argv[1]))
results = {}
for export_dir, inputs in requests.items():
    loaded = tf.saved_model.load(export_dir)
    feeds = {
        "serving_default": {"images": tf.constant(np.load(inputs["images"]))},
        "image_bytes": {"encoded_images": tf.constant(
            [base64.b64decode(s) for s in inputs["encoded"]])},
        "tf_example": {"serialized_examples": tf.constant(
            [base64.b64decode(s) for s in inputs["examples"]])},
    }
    for name, feed in feeds.items():
        for key, value in loaded.signatures[name](**feed).items():
            results[f"{export_dir}|{name}|{key}"] = value.numpy()
assert not any(m.startswith("ondevice_vision") for m in sys.modules), "package imported"
np.savez(sys.argv[2], **results)
"""


def _b64(values):
    return [base64.b64encode(v).decode() for v in values]


def _stored_sideways(upright):
    """PNG bytes of `upright` stored a quarter turn counter-clockwise with EXIF orientation 6,
    which viewers (PIL's exif_transpose) turn back into `upright`."""
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.rot90(upright))).save(
        buffer, "PNG", exif=exif.tobytes()
    )
    with Image.open(io.BytesIO(buffer.getvalue())) as im:
        assert np.array_equal(np.asarray(ImageOps.exif_transpose(im)), upright)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def exports(tmp_path_factory, lively_detector, lively_segmenter):
    """Detection and segmentation exports, their inputs, and the outputs of a fresh process."""
    root = tmp_path_factory.mktemp("saved_models")
    cases = {}
    for config, model in (
        (detection_config(), lively_detector),
        (segmentation_config(), lively_segmenter),
    ):
        labels = label_map(config)
        export_dir = str(root / config.task)
        export_saved_model(config, model, labels, export_dir, with_probabilities=True)
        images = eval_images(config, 2)
        # Encoded inputs of two different sizes: the second one cropped; and the second again,
        # stored turned a quarter and tagged EXIF orientation 6 (a phone photo held upright).
        pictures = [images[0], images[1][: images.shape[1] - 8, : images.shape[2] - 16]]
        encoded = [png_bytes(p) for p in pictures]
        pictures.append(pictures[1])
        encoded.append(_stored_sideways(pictures[1]))
        np.save(root / f"{config.task}_images.npy", images)
        cases[config.task] = {
            "encoded": encoded,
            "examples": [tf_example(e) for e in encoded],
            "config": config,
            "model": model,
            "labels": labels,
            "dir": export_dir,
            "images": images,
            "pictures": pictures,
            "request": {
                "images": str(root / f"{config.task}_images.npy"),
                "encoded": _b64(encoded),
                "examples": _b64([tf_example(e) for e in encoded]),
            },
        }
    request_file = root / "requests.json"
    request_file.write_text(json.dumps({c["dir"]: c["request"] for c in cases.values()}))
    out_file = root / "outputs.npz"
    subprocess.run(
        [sys.executable, "-c", RELOAD_SCRIPT, str(request_file), str(out_file)],
        check=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": ""},
    )
    with np.load(out_file) as data:
        outputs = {k: data[k] for k in data.files}
    for case in cases.values():
        case["reloaded"] = {
            tuple(k.split("|")[1:]): v
            for k, v in outputs.items()
            if k.startswith(case["dir"] + "|")
        }
    return cases


def _reloaded(case, signature):
    return {key: v for (name, key), v in case["reloaded"].items() if name == signature}


def _in_memory_export(case):
    """The serving functions on the in-memory model, traced as the SavedModel traces them."""
    functions = tasks.get_task(case["config"]).make_export(
        case["config"], case["model"], case["labels"], None, with_probabilities=True
    )
    feeds = {
        "serving_default": (
            tf.TensorSpec([None, None, None, 3], tf.uint8),
            tf.constant(case["images"]),
        ),
        "image_bytes": (tf.TensorSpec([None], tf.string), tf.constant(case["encoded"])),
        "tf_example": (tf.TensorSpec([None], tf.string), tf.constant(case["examples"])),
    }
    outputs = {}
    for name, (spec, value) in feeds.items():
        fn = tf.function(getattr(functions, name), input_signature=[spec], autograph=False)
        outputs[name] = {k: v.numpy() for k, v in fn(value).items()}
    return outputs


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_every_signature_matches_the_in_memory_model(exports, task):
    case = exports[task]
    in_memory = _in_memory_export(case)
    assert set(in_memory) == {"serving_default", "image_bytes", "tf_example"}
    for signature, want in in_memory.items():
        got = _reloaded(case, signature)
        assert set(got) == set(want), signature
        for key, value in want.items():
            assert got[key].shape == value.shape, (signature, key)
            if np.issubdtype(value.dtype, np.floating):
                assert np.abs(got[key] - value).max() <= TOL, (signature, key)
            else:
                np.testing.assert_array_equal(got[key], value, err_msg=f"{signature} {key}")


def _eager_detections(case, image):
    """The Keras model + post-processing, eagerly, on one uint8 image; classes as dataset ids."""
    config = case["config"]
    resized = tf.image.resize(tf.constant(image[None], tf.float32), config.model.input_size)
    det = detection_task.predict(config, case["model"], tf.clip_by_value(resized, 0.0, 255.0))
    det = {k: v.numpy() for k, v in det.items()}
    det["detection_classes"] = np.asarray(case["labels"].dataset_ids)[det["detection_classes"]]
    return det


def test_detection_outputs_are_the_models_detections_with_dataset_ids(exports):
    """Semantics, against the eager model: resize, NMS, id mapping (graph and eager TensorFlow
    round differently, hence assert_same_detections' tolerance)."""
    case = exports["detection"]
    served = _reloaded(case, "serving_default")
    assert set(served) == {
        "detection_boxes",
        "detection_classes",
        "detection_scores",
        "num_detections",
    }
    total = 0
    for i, image in enumerate(case["images"]):
        want = _eager_detections(case, image)
        assert_same_detections(confident(served, i, 0.2), confident(want, 0, 0.2))
        n = served["num_detections"][i]
        assert set(served["detection_classes"][i][:n]) <= set(case["labels"].dataset_ids)
        assert (served["detection_classes"][i][n:] == 0).all()
        total += len(confident(want, 0, 0.2)["scores"])
    assert total >= 4
    got = _reloaded(case, "image_bytes")
    cropped = case["pictures"][1]
    assert_same_detections(
        confident(got, 1, 0.2), confident(_eager_detections(case, cropped), 0, 0.2)
    )
    # The sideways-stored copy gives the upright picture's detections (boxes as displayed).
    assert_same_detections(
        confident(got, 2, 0.2), confident(_eager_detections(case, cropped), 0, 0.2)
    )


def test_segmentation_outputs_are_the_models_maps(exports):
    case = exports["segmentation"]
    logits = case["model"](case["images"].astype("float32")).numpy()
    served = _reloaded(case, "serving_default")
    np.testing.assert_allclose(served["probabilities"], tf.nn.softmax(logits).numpy(), atol=1e-3)
    assert (served["semantic_map"] == logits.argmax(-1)).mean() > 0.999
    assert served["semantic_map"].shape == case["images"].shape[:3]
    for signature in ("image_bytes", "tf_example"):
        got = _reloaded(case, signature)
        np.testing.assert_array_equal(got["image_size"], [p.shape[:2] for p in case["pictures"]])
        for i, picture in enumerate(case["pictures"]):
            h, w = picture.shape[:2]
            want = case["model"](picture[None].astype("float32")).numpy()[0]
            np.testing.assert_allclose(
                got["probabilities"][i, :h, :w], tf.nn.softmax(want).numpy(), atol=1e-3
            )
            assert (got["semantic_map"][i, :h, :w] == want.argmax(-1)).mean() > 0.999
            # Padding past the image: class -1, probability 0.
            assert (got["semantic_map"][i, h:] == -1).all()
            assert (got["semantic_map"][i, :, w:] == -1).all()
            assert (got["probabilities"][i, h:] == 0).all()


def test_export_directory_carries_labels_and_info(exports):
    for task, case in exports.items():
        info, labels = read_export_files(case["dir"])
        assert info.task == task and info.format == "saved_model"
        assert labels == case["labels"]
        assert set(info.signatures) == {"serving_default", "image_bytes", "tf_example"}
        assert not [n for n in os.listdir(os.path.dirname(case["dir"])) if n.startswith(".")]
    assert exports["detection"]["labels"].names == ("circle", "square", "triangle", "star")
    assert read_export_files(exports["detection"]["dir"])[0].input_size == (128, 128)
    # A segmentation SavedModel runs at each image's own size.
    assert read_export_files(exports["segmentation"]["dir"])[0].input_size is None


def test_existing_export_is_not_overwritten_by_default(exports):
    case = exports["detection"]
    before = sorted(os.listdir(case["dir"]))
    with pytest.raises(FileExistsError, match=case["dir"]):
        export_saved_model(case["config"], case["model"], case["labels"], case["dir"])
    assert sorted(os.listdir(case["dir"])) == before


def test_label_map_must_match_the_model(exports, tmp_path):
    case = exports["detection"]
    wrong = LabelMap.contiguous(["a", "b"])
    with pytest.raises(ValueError, match="2 classes"):
        export_saved_model(case["config"], case["model"], wrong, str(tmp_path / "out"))
    assert os.listdir(tmp_path) == []


def test_atomic_directory_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "export"
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_directory(str(target)) as tmp:
            (tmp_path / "export_probe").write_text("x")
            with open(os.path.join(tmp, "saved_model.pb"), "w") as f:
                f.write("half")
            raise RuntimeError("crash while writing")
    assert sorted(os.listdir(tmp_path)) == ["export_probe"]


def test_atomic_directory_replaces_only_when_asked(tmp_path):
    target = tmp_path / "export"
    with atomic_directory(str(target)) as tmp:
        with open(os.path.join(tmp, "old.txt"), "w") as f:
            f.write("old")
    with pytest.raises(FileExistsError):
        with atomic_directory(str(target)):
            raise AssertionError("must not be reached")
    with pytest.raises(RuntimeError):
        with atomic_directory(str(target), overwrite=True) as tmp:
            raise RuntimeError("crash")
    assert os.listdir(target) == ["old.txt"]
    with atomic_directory(str(target), overwrite=True) as tmp:
        with open(os.path.join(tmp, "new.txt"), "w") as f:
            f.write("new")
    assert os.listdir(target) == ["new.txt"]
    assert sorted(os.listdir(tmp_path)) == ["export"]


def test_multi_scale_and_flip_are_an_export_option(tmp_path):
    """--config.eval.scales / eval.flip at export: the SavedModel averages the probabilities of
    the scaled and mirrored runs, as ondevice-eval does (tasks/segmentation_inference.py)."""
    import keras

    from ondevice_vision.configs import base_segmentation
    from ondevice_vision.tasks import segmentation_inference

    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(3, 3, padding="same", kernel_initializer="glorot_normal")(inputs / 128)
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(x))
    config = base_segmentation.segmentation_config("mobilenet_v3_small")
    config.eval.scales = (0.75, 1.0)
    config.eval.flip = True
    config.model.num_classes = 3
    labels = LabelMap.contiguous(["a", "b", "c"])
    export_dir = str(tmp_path / "ms_flip")
    export_saved_model(config, model, labels, export_dir, with_probabilities=True)
    info = json.load(open(os.path.join(export_dir, "export.json")))
    assert info["extra"]["inference"]["scales"] == [0.75, 1.0]
    assert info["extra"]["inference"]["flip"] is True
    images = np.random.default_rng(0).integers(0, 256, (1, 17, 23, 3)).astype(np.uint8)
    served = tf.saved_model.load(export_dir).signatures["serving_default"](images=images)
    want = segmentation_inference.class_probabilities(model, images, (0.75, 1.0), flip=True)
    images = images.astype(np.float32)
    np.testing.assert_allclose(served["probabilities"].numpy(), want.numpy(), atol=1e-5)
    plain = tf.nn.softmax(model(images)).numpy()
    assert np.abs(served["probabilities"].numpy() - plain).max() > 1e-3
