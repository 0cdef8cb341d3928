"""The images int8 post-training quantization calibrates on, and what they looked like.

The converter runs the float graph on these images and sets every activation's int8 range from
what it saw, the input's included, so they decide the accuracy of the int8 model. Three sources:

- `--calibration_dir=DIR`: the image files of a folder (not recursive, sorted by name), turned
  upright by their EXIF orientation and resized to the network input (bilinear, pixels 0..255):
  exactly what the exported model is fed at inference. Photos from the deployment camera belong
  here.
- `--calibration_split=train|eval`: the config's data split with the same inference
  preprocessing (no augmentation), so the ranges are those of real, unaltered images.
- neither: the training input pipeline, augmentation included (crops, flips), as before; those
  images are what the float network was fitted on.

Unreadable files of a folder are skipped, named and counted (docs/bad_input_policy.md). A set of
fewer images than `--num_calibration_images` is refused: ranges from a handful of images clip
everything the handful did not show (TensorFlow's post-training quantization guide suggests a
representative set of around 100 to 500 images). The count and the pixel statistics seen are
logged and kept in export.json ("calibration").
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import tensorflow as tf
from absl import logging

from ondevice_vision import tasks
from ondevice_vision.data.image_decode import (
    check_image_files,
    decode_upright,
    log_bad_images,
    resize_pixels,
)
from ondevice_vision.progress import Progress

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
SPLITS = ("train", "eval")
RECOMMENDED_IMAGES = 100


class PixelStatistics:
    """Running min / max / mean / std of the pixels the converter is fed, and the image count."""

    def __init__(self):
        self.images = 0
        self.pixels = 0
        self.low, self.high = np.inf, -np.inf
        self.total = 0.0
        self.total_sq = 0.0

    def add(self, batch: np.ndarray) -> None:
        values = np.asarray(batch, np.float64)
        self.images += len(values)
        self.pixels += values.size
        self.low = min(self.low, float(values.min()))
        self.high = max(self.high, float(values.max()))
        self.total += float(values.sum())
        self.total_sq += float(np.square(values).sum())

    def as_dict(self) -> dict:
        if not self.pixels:
            return {"images": 0}
        mean = self.total / self.pixels
        std = float(np.sqrt(max(self.total_sq / self.pixels - mean * mean, 0.0)))
        return {
            "images": self.images,
            "pixel_min": round(self.low, 3),
            "pixel_max": round(self.high, 3),
            "pixel_mean": round(mean, 3),
            "pixel_std": round(std, 3),
        }


def folder_files(directory: str) -> list[str]:
    """The readable image files of `directory`, sorted; unreadable ones are logged and counted."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory}: calibration folder not found")
    names = sorted(n for n in os.listdir(directory) if n.lower().endswith(IMAGE_EXTENSIONS))
    checks = check_image_files([os.path.join(directory, n) for n in names])
    log_bad_images(checks, directory)
    return [c.path for c in checks if c.problem is None]


class Calibration:
    """A representative dataset for the converter: `num_images` images of one source."""

    def __init__(
        self,
        config,
        input_size,
        num_images: int = RECOMMENDED_IMAGES,
        directory: str | None = None,
        split: str | None = None,
    ):
        if num_images < 1:
            raise ValueError(f"--num_calibration_images must be positive, got {num_images}")
        if directory and split:
            raise ValueError("pass at most one of --calibration_dir and --calibration_split")
        if split and split not in SPLITS:
            raise ValueError(f"--calibration_split must be one of {SPLITS}, got {split!r}")
        self.config = config
        self.input_size = tuple(int(s) for s in input_size)
        self.num_images = int(num_images)
        self.directory, self.split = directory, split
        self.statistics = PixelStatistics()
        self.files = None
        if directory:
            self.files = folder_files(directory)
            self._check_count(len(self.files), f"{directory}: {len(self.files)} readable images")
        if num_images < RECOMMENDED_IMAGES:
            logging.warning(
                "int8 calibration on %d images: ranges from few images clip what they did not "
                "show (TensorFlow suggests 100 to 500)",
                num_images,
            )

    @property
    def source(self) -> str:
        if self.directory:
            return f"folder {self.directory} (inference preprocessing)"
        if self.split:
            return f"data split {self.split} (inference preprocessing)"
        return "training input pipeline (augmented)"

    def _check_count(self, found: int, what: str) -> None:
        if found == 0 or found < self.num_images:
            raise ValueError(
                f"{what}, fewer than the {self.num_images} calibration images asked for; add "
                "images or pass a smaller --num_calibration_images"
            )

    def _images(self):
        """float32 [1, H, W, 3] pixels 0..255 at the input size, `num_images` of them at most."""
        size = self.input_size
        if self.files is not None:
            for path in self.files[: self.num_images]:
                image = decode_upright(tf.io.read_file(path))
                yield resize_pixels(image[tf.newaxis], size)
            return
        task = tasks.get_task(self.config)
        if self.split:
            for image in task.source_images(self.config, self.split):
                yield resize_pixels(image[tf.newaxis], size)
            return
        dataset, _ = task.build_dataset(self.config, "train", 1)
        for images, _ in dataset:
            yield resize_pixels(images, size)

    def __call__(self):
        """The converter's generator: one [image] list per step; counts and statistics anew."""
        self.statistics = PixelStatistics()
        progress = Progress(self.num_images, 1, 0)
        for done, images in enumerate(itertools.islice(self._images(), self.num_images), start=1):
            pixels = images.numpy()
            self.statistics.add(pixels)
            yield [pixels]
            if done % 25 == 0 or done == self.num_images:
                logging.info(
                    "int8 calibration: %d/%d images (%.1f img/s)",
                    done,
                    self.num_images,
                    progress.update(done)["images_per_sec"],
                )
        if self.split:
            self._check_count(
                self.statistics.images, f"data split {self.split}: {self.statistics.images} images"
            )

    def report(self) -> dict:
        """What export.json keeps and the log says about the calibration set."""
        result = {"source": self.source, "requested": self.num_images}
        result.update(self.statistics.as_dict())
        logging.info(
            "int8 calibration on %d images of the %s: pixels %s..%s, mean %s, std %s",
            result["images"],
            self.source,
            result.get("pixel_min"),
            result.get("pixel_max"),
            result.get("pixel_mean"),
            result.get("pixel_std"),
        )
        return result
