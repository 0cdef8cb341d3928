"""The built-in synthetic detection dataset: solid shapes on textured backgrounds.

Every image is a pure function of its seed (NumPy's default_rng), so the data needs no download
and a run is reproducible anywhere. Each image has 1-4 shapes (circle, square, triangle, star) of
random colour, size (box side 0.12-0.5 of the image side) and position over a background of noise,
a colour gradient and stripes. Shapes never overlap each other (their boxes may), so every
shape is fully visible and its box is exact: the tight pixel bounds of the drawn mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from ondevice_vision.data.label_map import LabelMap

CLASS_NAMES = ("circle", "square", "triangle", "star")
MIN_SIZE, MAX_SIZE = 0.12, 0.5
MAX_OBJECTS = 4
_PLACEMENT_TRIES = 20
# Shapes keep at least this L1 RGB distance from the background under them, so they stay visible.
_MIN_CONTRAST = 120

_TRAIN, _EVAL = 0, 1


def label_map() -> LabelMap:
    return LabelMap.contiguous(CLASS_NAMES)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    coords = np.arange(size, dtype=np.float32) / size
    yy, xx = coords[:, None], coords[None, :]
    c0, c1 = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.float32(np.cos(angle)) * xx + np.float32(np.sin(angle)) * yy + 1.0) / 2.0
    stripe_angle = rng.uniform(0, np.pi)
    period = rng.uniform(0.05, 0.25)
    phase = (np.float32(np.cos(stripe_angle)) * xx + np.float32(np.sin(stripe_angle)) * yy) / period
    stripes = np.float32(rng.uniform(10, 40)) * np.sign(np.sin(np.float32(2 * np.pi) * phase))
    image = c0 + (c1 - c0) * t[..., None] + stripes[..., None]
    noise = rng.standard_normal((size, size, 3), dtype=np.float32)
    image += np.float32(rng.uniform(3, 15)) * noise
    return np.clip(image, 0, 255).astype(np.uint8)


def _polygon_mask(yy, xx, vertices: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test of pixel centres; vertices [K, 2] as (y, x)."""
    inside = np.zeros(yy.shape, bool)
    vy, vx = vertices[:, 0], vertices[:, 1]
    for i in range(len(vertices)):
        y0, x0, y1, x1 = vy[i - 1], vx[i - 1], vy[i], vx[i]
        crosses = (y0 > yy) != (y1 > yy)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x0 + (yy - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (xx < x_at)
    return inside


def _shape_mask(rng, cls: int, size: int, extent: float, cy: float, cx: float) -> np.ndarray:
    """Full-image mask of one shape, computed only on the window around it (for speed)."""
    r = extent / 2.0
    y0, x0 = max(int(cy - r) - 1, 0), max(int(cx - r) - 1, 0)
    y1, x1 = min(int(cy + r) + 2, size), min(int(cx + r) + 2, size)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
    name = CLASS_NAMES[cls]
    if name == "circle":
        window = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    elif name == "square":
        window = (np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r)
    else:
        rotation = rng.uniform(0, 2 * np.pi)
        if name == "triangle":
            angles = rotation + np.arange(3) * 2 * np.pi / 3
            radii = np.full(3, r)
        else:  # five-pointed star, inner radius 0.45 of the outer one
            angles = rotation + np.arange(10) * np.pi / 5
            radii = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        vertices = np.stack([cy + radii * np.sin(angles), cx + radii * np.cos(angles)], axis=1)
        window = _polygon_mask(yy, xx, vertices)
    mask = np.zeros((size, size), bool)
    mask[y0:y1, x0:x1] = window
    return mask


def _contrasting_colour(rng, under: np.ndarray) -> np.ndarray:
    mean = under.reshape(-1, 3).mean(axis=0)
    for _ in range(50):
        colour = rng.integers(0, 256, 3)
        if np.abs(colour - mean).sum() >= _MIN_CONTRAST:
            return colour.astype(np.uint8)
    return (255 - mean).astype(np.uint8)  # the complement is always far enough


def render_example(seed: int | Sequence[int], image_size: int = 256) -> dict[str, np.ndarray]:
    """One synthetic image and its exact annotations.

    Returns {"image": uint8 [S, S, 3], "boxes": float32 [N, 4] normalised yxyx, "classes": int32
    [N], "colours": uint8 [N, 3] (the solid colour of each shape, for tests and debugging)}.
    """
    rng = np.random.default_rng(seed)
    image = _background(rng, image_size)
    occupied = np.zeros((image_size, image_size), bool)
    boxes, classes, colours = [], [], []
    for _ in range(rng.integers(1, MAX_OBJECTS + 1)):
        for _ in range(_PLACEMENT_TRIES):
            cls = int(rng.integers(len(CLASS_NAMES)))
            extent = rng.uniform(MIN_SIZE, MAX_SIZE) * image_size
            cy, cx = rng.uniform(extent / 2, image_size - extent / 2, 2)
            mask = _shape_mask(rng, cls, image_size, extent, cy, cx)
            if mask.any() and not (mask & occupied).any():
                break
        else:
            continue  # this image gets fewer shapes
        occupied |= mask
        colour = _contrasting_colour(rng, image[mask])
        image[mask] = colour
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        boxes.append([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1])
        classes.append(cls)
        colours.append(colour)
    return {
        "image": image,
        "boxes": np.array(boxes, np.float32).reshape(-1, 4) / image_size,
        "classes": np.array(classes, np.int32),
        "colours": np.array(colours, np.uint8).reshape(-1, 3),
    }


def example_seed(seed: int, split: str, index: int) -> tuple[int, int, int]:
    """The render seed of example `index` of a split; train and eval never share one."""
    if split not in ("train", "eval"):
        raise ValueError(f"shapes split must be 'train' or 'eval', got {split!r}")
    return (seed, _TRAIN if split == "train" else _EVAL, index)


def load_shapes(
    split: str, num_examples: int, image_size: int = 256, seed: int = 0
) -> tuple[tf.data.Dataset, LabelMap]:
    """Decoded detection examples, rendered lazily in index order (image_id = index).

    The pipeline is `range` + `map`, not `from_generator`, so a training iterator over it can be
    saved in a checkpoint and restored at the same position.
    """
    if num_examples <= 0:
        raise ValueError(f"shapes: num_examples must be positive, got {num_examples}")
    if image_size < 32:
        raise ValueError(f"shapes: image_size must be at least 32, got {image_size}")

    def render(index):
        ex = render_example(example_seed(seed, split, int(index)), image_size)
        return ex["image"], ex["boxes"], ex["classes"]

    def to_example(index):
        image, boxes, classes = tf.numpy_function(
            render, [index], (tf.uint8, tf.float32, tf.int32), stateful=False
        )
        classes = tf.ensure_shape(classes, [None])
        return {
            "image": tf.ensure_shape(image, [image_size, image_size, 3]),
            "image_id": index,
            "boxes": tf.ensure_shape(boxes, [None, 4]),
            "classes": classes,
            "is_crowd": tf.zeros_like(classes, tf.bool),
        }

    ds = tf.data.Dataset.range(num_examples).map(to_example, num_parallel_calls=tf.data.AUTOTUNE)
    return ds, label_map()
