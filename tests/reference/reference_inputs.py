"""The inputs both sides of the reference comparison see: natural-looking images and ground truth.

Smooth random fields (a few octaves of upsampled noise over a gradient, plus pixel noise) have the
spatial correlation of photographs, so every layer sees realistic, non-constant statistics.
"""

from __future__ import annotations

import numpy as np

DETECTION_SIZE = 320
CLASSIFIER_SIZE = 224
MAX_BOXES = 4


def natural_images(rng, count, size):
    images = []
    for _ in range(count):
        yy, xx = np.mgrid[0:size, 0:size] / size
        angle = rng.uniform(0, 2 * np.pi)
        field = (
            60.0 * (np.cos(angle) * yy + np.sin(angle) * xx)[..., None] * rng.uniform(0.5, 1.5, 3)
        )
        for cells, amplitude in ((4, 70.0), (16, 35.0), (64, 15.0)):
            coarse = rng.normal(0.0, amplitude, (cells, cells, 3))
            field = (
                field
                + np.kron(coarse, np.ones((size // cells + 1, size // cells + 1, 1)))[:size, :size]
            )
        field += rng.normal(0.0, 4.0, field.shape)
        images.append(np.clip(field - field.mean() + 120.0, 0, 255))
    return np.round(np.stack(images)).astype(np.float32)


def detection_groundtruth():
    """Three images: ordinary boxes plus a crowd box, a box crossing the border, no boxes."""
    boxes = np.zeros((3, MAX_BOXES, 4), np.float32)
    classes = np.zeros((3, MAX_BOXES), np.int64)
    crowd = np.zeros((3, MAX_BOXES), bool)
    boxes[0, :3] = [[0.1, 0.1, 0.5, 0.4], [0.3, 0.5, 0.9, 0.95], [0.55, 0.05, 0.95, 0.6]]
    classes[0, :3] = [0, 17, 62]
    crowd[0, 2] = True
    boxes[1, :2] = [[-0.15, 0.6, 0.45, 1.2], [0.4, 0.2, 0.7, 0.45]]
    classes[1, :2] = [2, 89]
    counts = np.array([3, 2, 0], np.int64)
    return boxes, classes, crowd, counts


def make_inputs(seed=0) -> dict:
    rng = np.random.default_rng(seed)
    boxes, classes, crowd, counts = detection_groundtruth()
    return {
        "detection_images": natural_images(rng, 3, DETECTION_SIZE),
        "classifier_images": natural_images(rng, 2, CLASSIFIER_SIZE),
        "gt_boxes": boxes,
        "gt_classes": classes,
        "gt_is_crowd": crowd,
        "gt_counts": counts,
        # DeepLab's sizes are 8k + 1 (its resizes use align_corners).
        "segmentation_images": natural_images(rng, 2, 321)[:, :257],
    }
