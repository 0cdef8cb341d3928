"""A built-in synthetic segmentation dataset for the demo and tests: shapes on textured backgrounds.

Each image shows 1-3 filled shapes (circle, rectangle, triangle; later ones occlude earlier ones) on
a low-saturation background made of random stripes and noise. Each shape class has its own hue
family, jittered per object, so a small model learns the task within minutes on a CPU while still
having to find exact boundaries. The one-pixel inner rim of every shape is labelled ignore (255):
that is where nearest-pixel rasterisation makes the class of a pixel ambiguous.

Generation is NumPy, deterministic per (seed, split, index): the same config always yields the
same examples, train and eval never share one, and examples are built lazily inside tf.data.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ondevice_vision.data.label_map import IGNORE_LABEL

CLASS_NAMES = ("background", "circle", "rectangle", "triangle")
_SPLIT_STREAMS = {"train": 0, "eval": 1}
# Mean RGB of each shape class; per-object jitter stays well inside each colour family.
_CLASS_COLOURS = np.array([[0, 0, 0], [205, 60, 55], [60, 185, 70], [55, 85, 210]], np.float32)


def _stripes(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(6, 30)
    phase = rng.uniform(0, 2 * np.pi)
    return np.sin((np.cos(angle) * xx + np.sin(angle) * yy) * 2 * np.pi / period + phase)


def _background(rng, yy, xx) -> np.ndarray:
    grey = rng.uniform(70, 190)
    base = grey + rng.uniform(-20, 20, size=3)
    texture = sum(rng.uniform(8, 28) * _stripes(rng, yy, xx) for _ in range(3))
    return base + texture[..., None]


def _shape_mask(rng, class_id: int, yy, xx, h: int, w: int) -> np.ndarray:
    size = min(h, w)
    cy, cx = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w
    if class_id == 1:
        radius = rng.uniform(0.12, 0.25) * size
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    if class_id == 2:
        half_h, half_w = rng.uniform(0.1, 0.24, size=2) * size
        return (np.abs(yy - cy) <= half_h) & (np.abs(xx - cx) <= half_w)
    # Triangle: vertices on a circle at roughly 120 degree spacing, tested by half-plane signs.
    radius = rng.uniform(0.18, 0.32) * size
    angles = rng.uniform(0, 2 * np.pi) + np.arange(3) * 2 * np.pi / 3 + rng.uniform(-0.3, 0.3, 3)
    vy, vx = cy + radius * np.sin(angles), cx + radius * np.cos(angles)
    signs = [
        (vx[(i + 1) % 3] - vx[i]) * (yy - vy[i]) - (vy[(i + 1) % 3] - vy[i]) * (xx - vx[i])
        for i in range(3)
    ]
    return ((signs[0] >= 0) & (signs[1] >= 0) & (signs[2] >= 0)) | (
        (signs[0] <= 0) & (signs[1] <= 0) & (signs[2] <= 0)
    )


def _inner_rim(labels: np.ndarray) -> np.ndarray:
    """Shape pixels with a 4-neighbour of another class."""
    padded = np.pad(labels, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    differs = (
        (padded[:-2, 1:-1] != centre)
        | (padded[2:, 1:-1] != centre)
        | (padded[1:-1, :-2] != centre)
        | (padded[1:-1, 2:] != centre)
    )
    return differs & (labels > 0)


def make_example(
    index: int, *, seed: int = 0, split: str = "train", image_size=(128, 128)
) -> tuple[np.ndarray, np.ndarray]:
    """Returns (image uint8 [h, w, 3], mask uint8 [h, w, 1]) for one example."""
    if split not in _SPLIT_STREAMS:
        raise ValueError(f"split must be one of {sorted(_SPLIT_STREAMS)}, got {split!r}")
    h, w = (int(s) for s in image_size)
    rng = np.random.default_rng([int(seed), _SPLIT_STREAMS[split], int(index)])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    image = _background(rng, yy, xx)
    labels = np.zeros((h, w), np.uint8)
    for _ in range(rng.integers(1, 4)):
        class_id = int(rng.integers(1, len(CLASS_NAMES)))
        inside = _shape_mask(rng, class_id, yy, xx, h, w)
        colour = _CLASS_COLOURS[class_id] + rng.uniform(-30, 30, size=3)
        texture = rng.uniform(5, 15) * _stripes(rng, yy, xx)
        image[inside] = colour + texture[inside][:, None]
        labels[inside] = class_id

    image += rng.normal(0, 6, size=image.shape)
    mask = np.where(_inner_rim(labels), IGNORE_LABEL, labels).astype(np.uint8)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), mask[..., None]


def load(*, split: str, num_examples: int, seed: int = 0, image_size=(128, 128)) -> tf.data.Dataset:
    """Decoded segmentation examples; `split` is "train" or "eval"."""
    h, w = (int(s) for s in image_size)
    if split not in _SPLIT_STREAMS:
        raise ValueError(f"split must be one of {sorted(_SPLIT_STREAMS)}, got {split!r}")

    def generate(index):
        return make_example(int(index), seed=seed, split=split, image_size=(h, w))

    def to_example(index):
        image, mask = tf.numpy_function(generate, [index], (tf.uint8, tf.uint8), stateful=False)
        image_id = tf.strings.join(
            [f"synthetic_{split}_", tf.strings.as_string(index, width=6, fill="0")]
        )
        return {
            "image": tf.ensure_shape(image, [h, w, 3]),
            "mask": tf.ensure_shape(mask, [h, w, 1]),
            "image_id": image_id,
        }

    ds = tf.data.Dataset.range(num_examples)
    return ds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE)
