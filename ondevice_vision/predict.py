"""`ondevice-predict`: run an exported model on an image or a folder of images.

    ondevice-predict --model=exports/shapes_det --input=photos/ --output=predictions/
    ondevice-predict --model=exports/city_int8/model.tflite --input=frame.png --output=out/

Writes OUTPUT/predictions.json and, per input file NAME (its whole file name, so `a.b.jpg` and
`a_b.jpg` get different pictures), a picture OUTPUT/NAME.png: detection boxes labelled with class
names and scores, or the colour-coded class mask blended over the image (the Cityscapes palette for
Cityscapes models); segmentation also writes the class-index mask OUTPUT/NAME.mask.png. Images are
turned upright by their EXIF orientation first, as viewers show them. Corrupt or unreadable files
are reported by name (log and the "skipped" list of predictions.json) and skipped; the run goes on.
When nothing can be processed (no image files, or every one unreadable) the tool prints
`ERROR: INPUT: nothing was processed: ...` and exits with status 1.

A TFLite export carries TFLite Model Metadata, so MediaPipe Tasks run it unchanged (the run logs
these lines with the model's path; docs/export.md):

    import mediapipe as mp
    detector = mp.tasks.vision.ObjectDetector.create_from_model_path("OUT/model.tflite")
    detections = detector.detect(mp.Image.create_from_file("photo.jpg")).detections

    import mediapipe as mp
    segmenter = mp.tasks.vision.ImageSegmenter.create_from_options(mp.tasks.vision.ImageSegmenterOptions(base_options=mp.tasks.BaseOptions(model_asset_path="OUT/model.tflite"), output_category_mask=True))
    mask = segmenter.segment(mp.Image.create_from_file("photo.jpg")).category_mask

`mask.numpy_view()` is the class map [H, W, 1]; it reads the memory of `mask`, so keep `mask`
alive while using it (or copy it).
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import flags, logging

from ondevice_vision import cli, drawing, files, tasks
from ondevice_vision.data.image_decode import check_image_file

FLAGS = flags.FLAGS


def define_flags():
    """Called by run(): importing this module (tests, other tools) defines no flags."""
    flags.DEFINE_string(
        "model", None, "SavedModel export directory, or a .tflite file / its directory."
    )
    flags.DEFINE_string("input", None, "An image file or a folder of images (not recursive).")
    flags.DEFINE_string("output", None, "Directory for predictions.json and the pictures.")
    flags.DEFINE_float("score_threshold", 0.3, "Detection: lowest score reported and drawn.")
    flags.DEFINE_float("alpha", 0.5, "Segmentation: opacity of the class colours.")
    flags.DEFINE_integer("num_threads", None, "TFLite interpreter threads.")
    flags.mark_flags_as_required(["model", "input", "output"])


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
RESULTS_FILE = "predictions.json"


def mediapipe_usage(task: str, model_path: str, image_path: str = "photo.jpg") -> str:
    """The lines of MediaPipe Tasks (mediapipe >= 1.2) that run a TFLite export of `task`;
    tests/export/test_tflite_int8_*.py run them as written."""
    return tasks.get_task(task).mediapipe_lines(model_path, image_path)


def list_inputs(path: str) -> list[str]:
    """The image file, or the image files of a folder (by extension, sorted)."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"input not found: {path}")
    names = sorted(os.listdir(path))
    images = [os.path.join(path, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
    ignored = len([n for n in names if os.path.isfile(os.path.join(path, n))]) - len(images)
    if ignored:
        logging.info("%s: ignoring %d files without an image extension", path, ignored)
    return images


def checked_inputs(path: str) -> list[str]:
    """`list_inputs`, or ValueError naming `path` when none of them is a readable image (the
    unreadable ones are logged by name); cheap, so it runs before the model is loaded."""
    inputs = list_inputs(path)
    if not inputs:
        raise ValueError(
            f"{path}: nothing was processed: no image files "
            f"({', '.join(IMAGE_EXTENSIONS)}) found there"
        )
    problems = [c for c in map(check_image_file, inputs) if c.problem is not None]
    for check in problems:
        logging.warning("Skipping %s: %s", check.path, check.problem)
    if len(problems) == len(inputs):
        what = "it is" if len(inputs) == 1 else f"all {len(inputs)} image files are"
        raise ValueError(f"{path}: nothing was processed: {what} unreadable (each named above)")
    return inputs


def read_image(path: str) -> np.ndarray:
    """uint8 [H, W, 3], turned upright by the file's EXIF orientation; ValueError naming the file
    when it cannot be read or decoded."""
    import tensorflow as tf

    from ondevice_vision.data.image_decode import apply_orientation, decode_rgb

    check = check_image_file(path)
    if check.problem is not None:
        raise ValueError(f"{path}: {check.problem}")
    try:
        with open(path, "rb") as f:
            image = decode_rgb(tf.constant(f.read()))
        return apply_orientation(image, check.orientation).numpy()
    except (OSError, tf.errors.OpError) as e:
        raise ValueError(f"{path}: cannot decode ({type(e).__name__}: {e})") from e


def output_name(path: str) -> str:
    """The input's whole file name: inputs come from one folder, so their outputs NAME.png and
    NAME.mask.png cannot collide (an image file name never ends in `.mask`)."""
    return os.path.basename(path)


def predict_files(
    exported,
    paths: list[str],
    output_dir: str,
    score_threshold: float = 0.3,
    alpha: float = 0.5,
) -> dict:
    """Runs `exported` on every file; returns (and writes) the predictions.json payload."""
    os.makedirs(output_dir, exist_ok=True)
    task = tasks.get_task(exported.task)
    results, skipped = [], []
    for path in paths:
        try:
            image = read_image(path)
        except ValueError as e:
            logging.warning("Skipping %s", e)
            skipped.append({"file": path, "problem": str(e)})
            continue
        outputs = exported.predict(image[np.newaxis])
        name = output_name(path)
        record, picture = task.write_prediction(
            exported, outputs, image, output_dir, name, score_threshold=score_threshold, alpha=alpha
        )
        picture_path = drawing.save_png(picture, os.path.join(output_dir, f"{name}.png"))
        results.append(
            {
                "file": path,
                "height": int(image.shape[0]),
                "width": int(image.shape[1]),
                "picture": os.path.basename(picture_path),
                **record,
            }
        )
    if skipped:
        logging.warning(
            "Skipped %d of %d inputs: %s",
            len(skipped),
            len(paths),
            ", ".join(s["file"] for s in skipped),
        )
    payload = {
        "model": exported.path,
        "task": exported.task,
        "format": exported.info.format,
        "quantization": exported.info.quantization,
        "images": results,
        "skipped": skipped,
    }
    files.write_json(payload, os.path.join(output_dir, RESULTS_FILE))
    return payload


def main(argv):
    del argv
    from ondevice_vision.export.exported_model import load_exported_model

    inputs = checked_inputs(FLAGS.input)  # before the model is loaded: it fails fast
    exported = load_exported_model(FLAGS.model, num_threads=FLAGS.num_threads)
    payload = predict_files(exported, inputs, FLAGS.output, FLAGS.score_threshold, FLAGS.alpha)
    if not payload["images"]:
        raise ValueError(
            f"{FLAGS.input}: nothing was processed: all {len(inputs)} inputs were skipped "
            f"(listed in {os.path.join(FLAGS.output, RESULTS_FILE)})"
        )
    summary = {
        "output": os.path.join(FLAGS.output, RESULTS_FILE),
        "processed": len(payload["images"]),
        "skipped": [s["file"] for s in payload["skipped"]],
    }
    if exported.info.format == "tflite":
        logging.info(
            "The same model in MediaPipe Tasks (pip install mediapipe):\n%s",
            mediapipe_usage(exported.task, exported.path),
        )
    print(json.dumps(summary))


def run():
    define_flags()
    cli.run(main)


if __name__ == "__main__":
    run()
