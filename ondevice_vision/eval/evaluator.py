"""The evaluation loop, owned by the evaluator (big_vision style): predict, accumulate, report.

    evaluator = DetectionEvaluator(config, label_map)        # or SegmentationEvaluator
    metrics = evaluator.run(dataset, predict_fn)             # predict_fn(images) -> dict

A subclass says what to accumulate (`update`), what it amounts to (`result`) and what files it
leaves (`write`); the loop, the progress line and the prediction pictures are shared.
"""

from __future__ import annotations

import time

import numpy as np
from absl import logging

from ondevice_vision.data.label_map import LabelMap
from ondevice_vision.progress import format_duration

LOG_EVERY_SECONDS = 30.0


class Evaluator:
    # `ondevice-eval --cityscapes_submission`: write_submission(config, model, out_dir, zip_path,
    # expected_shape) -> written paths, for the tasks that have a test-server format.
    write_submission = None

    def __init__(self, config, label_map: LabelMap):
        self.config = config
        self.label_map = label_map
        self.num_images = 0
        self.seconds = 0.0
        self.pictures = None

    def update(self, predictions: dict, labels: dict) -> None:
        raise NotImplementedError

    def result(self) -> dict:
        raise NotImplementedError

    def observe(self, images: np.ndarray, predictions: dict, labels: dict) -> None:
        """Per batch, after `update`: what needs the images too (the worst images)."""
        del images, predictions, labels

    def write(self, directory: str) -> None:
        """Files beside the metrics (detections.json, ...); none by default."""
        del directory

    def figures(self) -> dict:
        """{name: uint8 picture} of the last `result()`: charts and the worst images, written as
        eval/NAME_STEP.png and TensorBoard images."""
        return {}

    def scalars(self, metrics: dict) -> dict:
        """{TensorBoard tag: number} beyond the flat metrics (per-class scores)."""
        del metrics
        return {}

    def run(self, dataset, predict_fn, visualize=None, total_images: int | None = None) -> dict:
        """Runs `predict_fn` over `dataset` ((images, labels) batches); returns the metrics.

        `visualize(images, predictions, labels)` -> picture, called on the first batch when
        eval.num_visualizations > 0; the picture is kept in `self.pictures`.
        """
        count = self.config.eval.num_visualizations
        start = last_log = time.perf_counter()
        for images, labels in dataset:
            predictions = {k: np.asarray(v) for k, v in predict_fn(images).items()}
            labels_np = {k: np.asarray(v) for k, v in labels.items()}
            self.update(predictions, labels_np)
            self.observe(np.asarray(images), predictions, labels_np)
            if self.pictures is None and count and visualize is not None:
                first = {k: v[:count] for k, v in predictions.items()}
                self.pictures = visualize(np.asarray(images)[:count], first, labels_np)
            self.num_images += int(images.shape[0])
            now = time.perf_counter()
            if now - last_log >= LOG_EVERY_SECONDS:
                logging.info(_progress_line(self.num_images, now - start, total_images))
                last_log = now
        self.seconds = time.perf_counter() - start
        if self.num_images == 0:
            raise ValueError("The eval split yielded no images: nothing to evaluate")
        logging.info(
            "Evaluated %d images in %.1fs (%.1f img/s)",
            self.num_images,
            self.seconds,
            self.num_images / max(self.seconds, 1e-9),
        )
        return self.result()


def format_table(header: list[str], rows: list[list]) -> str:
    """A plain-text table, numbers to 3 decimals, columns aligned (for the console)."""

    def cell(value):
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    cells = [header, *[[cell(v) for v in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in cells
    ]
    return "\n".join(lines)


def _progress_line(done: int, seconds: float, total: int | None) -> str:
    rate = done / max(seconds, 1e-9)
    line = f"eval: {done} images, {rate:.1f} img/s"
    if total:
        eta = format_duration(max(total - done, 0) / max(rate, 1e-9))
        line += f" ({done}/{total}, ETA {eta})"
    return line
