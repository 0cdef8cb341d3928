"""`ondevice-predict`: run an exported model on an image or a folder of images.

    ondevice-predict --model=exports/shapes_det --input=photos/ --output=predictions/
    ondevice-predict --model=exports/city_int8/model.tflite --input=frame.png --output=out/

Writes OUTPUT/predictions.json and, per input file NAME (its whole file name, so `a.b.jpg` and
`a_b.jpg` get different pictures), a picture OUTPUT/NAME.png: detection boxes labelled with class
names and scores, or the colour-coded class mask blended over the image (the Cityscapes palette for
Cityscapes models); segmentation also writes the class-index mask OUTPUT/NAME.mask.png. Images are
turned upright by their EXIF orientation first, as viewers show them. Corrupt or unreadable files
are reported by name (log and the "skipped" list of predictions.json) and skipped; the run goes on.
So are files that are not regular files (a FIFO or device named like an image would block the
read forever) and images above --max_image_pixels (read from the header, before decoding).
OUTPUT may not be the input folder or inside it (a second run would read its own pictures), and
a file there that an earlier ondevice-predict run did not write (listed in its predictions.json)
is never overwritten: the run stops before the model is loaded, naming it.
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
import stat

import numpy as np
from absl import flags, logging

from ondevice_vision import cli, drawing, files, tasks
from ondevice_vision.configs.common import MAX_IMAGE_PIXELS
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
    flags.DEFINE_integer(
        "max_image_pixels",
        MAX_IMAGE_PIXELS,
        "Skip (and name) images with more pixels than this, read from the file's header before "
        "decoding; 0: no limit.",
    )
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
    # Only regular files are read: a FIFO or device named like an image would block forever.
    special = [p for p in images if not _is_regular(p)]
    for p in special:
        logging.warning("Skipping %s: not a regular file (a FIFO, device or folder)", p)
    images = [p for p in images if p not in special]
    ignored = len([n for n in names if os.path.isfile(os.path.join(path, n))]) - len(images)
    if ignored:
        logging.info("%s: ignoring %d files without an image extension", path, ignored)
    return images


def _is_regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return True  # a broken link: check_image_file names the problem


def _our_outputs(output_dir: str) -> set[str]:
    """The files an earlier run wrote into `output_dir` (its predictions.json lists them); an
    existing predictions.json that is not ours is an error."""
    results = os.path.join(output_dir, RESULTS_FILE)
    if not os.path.lexists(results):
        return set()
    try:
        payload = files.read_json(results)
        images = payload["images"] if {"model", "task"} <= set(payload) else None
        ours = (
            {RESULTS_FILE}
            | {i["picture"] for i in images}
            | {i["mask"] for i in images if "mask" in i}
        )
    except (ValueError, KeyError, TypeError):
        ours = None
    if ours is None:
        raise FileExistsError(
            f"{results}: exists and was not written by ondevice-predict; not overwritten "
            "(choose another --output)"
        )
    return ours


def check_output_dir(output_dir: str, input_path: str, inputs: list[str]) -> None:
    """Refuses an output folder that is the input folder or inside it, and one holding a file
    of the name an output would take that no earlier run of this tool wrote."""
    out = os.path.realpath(output_dir)
    if os.path.isdir(input_path):
        source = os.path.realpath(input_path)
        if out == source or out.startswith(source.rstrip(os.sep) + os.sep):
            raise ValueError(
                f"--output={output_dir}: is the input folder {input_path} or inside it (a second "
                "run would read the pictures as inputs); choose a folder outside it"
            )
    if not os.path.isdir(out):
        return
    ours = _our_outputs(out)
    for path in inputs:
        for name in (f"{output_name(path)}.png", f"{output_name(path)}.mask.png"):
            target = os.path.join(out, name)
            if name not in ours and os.path.lexists(target):
                raise FileExistsError(
                    f"{target}: exists and was not written by ondevice-predict; not overwritten "
                    "(choose another --output)"
                )


def checked_inputs(path: str, max_pixels: int = MAX_IMAGE_PIXELS) -> list[str]:
    """`list_inputs`, or ValueError naming `path` when none of them is a readable image (the
    unreadable ones are logged by name); cheap, so it runs before the model is loaded."""
    inputs = list_inputs(path)
    if not inputs:
        raise ValueError(
            f"{path}: nothing was processed: no image files "
            f"({', '.join(IMAGE_EXTENSIONS)}) found there"
        )
    checks = [check_image_file(p, max_pixels) for p in inputs]
    problems = [c for c in checks if c.problem is not None]
    for check in problems:
        logging.warning("Skipping %s: %s", check.path, check.problem)
    if len(problems) == len(inputs):
        what = "it is" if len(inputs) == 1 else f"all {len(inputs)} image files are"
        raise ValueError(f"{path}: nothing was processed: {what} unreadable (each named above)")
    return inputs


def read_image(path: str, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """uint8 [H, W, 3], turned upright by the file's EXIF orientation; ValueError naming the file
    when it cannot be read or decoded."""
    import tensorflow as tf

    from ondevice_vision.data.image_decode import apply_orientation, decode_rgb

    check = check_image_file(path, max_pixels)
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
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> dict:
    """Runs `exported` on every file; returns (and writes) the predictions.json payload."""
    os.makedirs(output_dir, exist_ok=True)
    task = tasks.get_task(exported.task)
    results, skipped = [], []
    for path in paths:
        try:
            image = read_image(path, max_pixels)
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

    # Before the model is loaded: these fail fast.
    inputs = checked_inputs(FLAGS.input, FLAGS.max_image_pixels)
    check_output_dir(FLAGS.output, FLAGS.input, inputs)
    exported = load_exported_model(FLAGS.model, num_threads=FLAGS.num_threads)
    payload = predict_files(
        exported,
        inputs,
        FLAGS.output,
        FLAGS.score_threshold,
        FLAGS.alpha,
        FLAGS.max_image_pixels,
    )
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
