"""MediaPipe Tasks (the `mediapipe` package, a dev dependency) run on our TFLite exports, compared
with `ondevice-predict` (its `predict_files`, which writes predictions.json) on the same images.

Images are written at the model's input size: MediaPipe resizes with its own interpolation, so only
then do both runtimes see the same pixels. MediaPipe's pixel boxes follow its
DetectionTransformationCalculator: origin_x = int(xmin * W) and width = int((xmax - xmin) * W),
each clamped to 0..W on its own, so a box running past a border keeps its full width while ours
is clipped to the image. Compared within 1 pixel (the truncation) plus FLOAT_PIXELS for the two
runtimes' float differences (a box edge at 55.0003 px here was just under 55 there, so int() gave
54): the origin always, the width / height where our box lies inside the image on that axis.
"""

from __future__ import annotations

import json
import os

import numpy as np

from ondevice_vision.predict import mediapipe_usage, predict_files
from tests.helpers.export_fixtures import png_bytes

BOX_PIXELS = 1.0
FLOAT_PIXELS = 0.01
SCORE_ATOL = 1e-3


def write_images(images, directory) -> list[str]:
    os.makedirs(directory, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        path = os.path.join(directory, f"image_{i}.png")
        with open(path, "wb") as f:
            f.write(png_bytes(image))
        paths.append(path)
    return paths


def run_usage(task: str, model_path: str, image_path: str) -> dict:
    """Runs the three documented lines as written; returns their variables."""
    scope: dict = {}
    exec(mediapipe_usage(task, model_path, image_path), scope)
    return scope


def mediapipe_detections(model_path, image_path):
    """[(class name, score, (origin_x, origin_y, width, height) pixels)] of the documented lines."""
    scope = run_usage("detection", model_path, image_path)
    detections = scope["detections"]
    scope["detector"].close()
    out = []
    for d in detections:
        (category,) = d.categories
        box = d.bounding_box
        edges = (box.origin_x, box.origin_y, box.width, box.height)
        out.append((category.category_name, float(category.score), edges))
    return out


def predicted(exported, paths, output_dir, threshold) -> list[dict]:
    predict_files(exported, paths, output_dir, score_threshold=threshold)
    with open(os.path.join(output_dir, "predictions.json")) as f:
        return json.load(f)["images"]


def assert_detections_match(model_path, exported, paths, output_dir, threshold=0.5) -> int:
    """MediaPipe's detections = ondevice-predict's above `threshold`; returns how many matched.

    Detections within SCORE_ATOL of the threshold may fall on either side in one runtime.
    """
    records = predicted(exported, paths, output_dir, threshold - SCORE_ATOL)
    matched = 0
    for path, record in zip(paths, records, strict=True):
        height, width = record["height"], record["width"]
        ours = [d for d in record["detections"] if d["score"] > threshold + SCORE_ATOL]
        theirs = [
            d for d in mediapipe_detections(model_path, path) if d[1] > threshold - SCORE_ATOL
        ]
        unmatched = list(range(len(theirs)))
        for d in ours:
            ymin, xmin, ymax, xmax = d["box"]
            want = (xmin * width, ymin * height, (xmax - xmin) * width, (ymax - ymin) * height)
            # Width / height are comparable where our box was not clipped on that axis.
            inside_x, inside_y = 0.0 < xmin and xmax < 1.0, 0.0 < ymin and ymax < 1.0
            checked = (True, True, inside_x, inside_y)

            def same(t, d=d, want=want, checked=checked):
                name, score, edges = t
                return (
                    name == d["class_name"]
                    and abs(score - d["score"]) <= SCORE_ATOL
                    and all(
                        abs(e - w) <= BOX_PIXELS + FLOAT_PIXELS
                        for e, w, c in zip(edges, want, checked, strict=True)
                        if c
                    )
                )

            match = [j for j in unmatched if same(theirs[j])]
            assert match, f"{path}: {d} not among MediaPipe's {theirs}"
            unmatched.remove(match[0])
            matched += 1
        extra = [theirs[j] for j in unmatched if theirs[j][1] > threshold + SCORE_ATOL]
        assert not extra, f"{path}: MediaPipe found more: {extra}"
    return matched


def assert_class_maps_match(model_path, exported, paths, output_dir) -> np.ndarray:
    """MediaPipe's category mask = ondevice-predict's class map, pixel for pixel; returns them."""
    from PIL import Image

    records = predicted(exported, paths, output_dir, 0.5)
    maps = []
    for path, record in zip(paths, records, strict=True):
        ours = np.asarray(Image.open(os.path.join(output_dir, record["mask"])))
        scope = run_usage("segmentation", model_path, path)
        theirs = scope["mask"].numpy_view().copy()  # the view lives only as long as the mask
        del scope["mask"]
        scope["segmenter"].close()
        assert theirs.shape[:2] == ours.shape, (theirs.shape, ours.shape)
        np.testing.assert_array_equal(theirs.reshape(ours.shape), ours)
        maps.append(ours)
    return np.stack(maps)
