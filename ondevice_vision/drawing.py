"""Pictures of predictions: boxes with labels, coloured masks, blends, contact sheets.

NumPy + PIL only, so the predict CLI and TensorBoard previews can use it without a model loaded.
Images are uint8 [H, W, 3]; functions return new arrays and never modify their inputs.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ondevice_vision import files


def default_palette(num_classes: int) -> np.ndarray:
    """Deterministic, pairwise distinct, never-black colours: uint8 [num_classes, 3].

    The PASCAL VOC bit-interleaving scheme applied to index + 1 (index 0 would be black, which
    `colorize_mask` reserves for ignored pixels). The map index -> colour is injective for
    indices < 2**24 - 1, so colours never repeat.
    """
    if not 0 <= num_classes < 2**24 - 1:
        raise ValueError(f"num_classes must be in [0, 2**24 - 1), got {num_classes}")
    codes = np.arange(1, num_classes + 1, dtype=np.int64)
    palette = np.zeros((num_classes, 3), dtype=np.int64)
    for bit in range(8):
        for channel in range(3):
            palette[:, channel] |= ((codes >> (3 * bit + channel)) & 1) << (7 - bit)
    return palette.astype(np.uint8)


def draw_detections(
    image: np.ndarray,
    boxes_norm_yxyx,
    classes,
    scores,
    class_names=None,
    score_threshold: float = 0.3,
    palette: np.ndarray | None = None,
    line_width: int | None = None,
    show_scores: bool = True,
) -> np.ndarray:
    """Draws boxes with score >= score_threshold as coloured outlines labelled "name 0.87"
    (just "name" without `show_scores`, e.g. for ground truth).

    The outline lies on the outermost pixels inside each box (a box [0, 0, 1, 1] outlines the
    image border). `class_names` may be None (labels then show the class index).
    """
    image = _check_rgb(image)
    boxes = np.asarray(boxes_norm_yxyx, dtype=np.float64).reshape(-1, 4)
    classes = np.asarray(classes).reshape(-1).astype(np.int64)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not len(boxes) == len(classes) == len(scores):
        raise ValueError(
            f"draw_detections: {len(boxes)} boxes, {len(classes)} classes, {len(scores)} scores"
        )
    num_names = None if class_names is None else len(class_names)
    if len(classes) and (
        classes.min() < 0 or (num_names is not None and classes.max() >= num_names)
    ):
        raise ValueError(
            f"draw_detections: class indices must be in [0, {num_names}), got {classes.tolist()}"
        )
    if palette is None:
        palette = default_palette(max(num_names or 0, int(classes.max(initial=-1)) + 1))
    palette = np.asarray(palette, dtype=np.uint8)

    height, width = image.shape[:2]
    if line_width is None:
        line_width = max(1, round(min(height, width) / 200))
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    # Lowest scores first so the most confident boxes and labels end up on top.
    for i in np.argsort(scores, kind="stable"):
        if scores[i] < score_threshold:
            continue
        ymin, xmin, ymax, xmax = boxes[i]
        left = int(np.clip(round(xmin * width), 0, width - 1))
        top = int(np.clip(round(ymin * height), 0, height - 1))
        right = int(np.clip(round(xmax * width) - 1, left, width - 1))
        bottom = int(np.clip(round(ymax * height) - 1, top, height - 1))
        colour = tuple(int(c) for c in palette[classes[i]])
        draw.rectangle((left, top, right, bottom), outline=colour, width=line_width)

        name = str(classes[i]) if class_names is None else class_names[classes[i]]
        text = f"{name} {scores[i]:.2f}" if show_scores else str(name)
        text_left, text_top, text_right, text_bottom = draw.textbbox((0, 0), text, font=font)
        text_w, text_h = text_right - text_left + 2, text_bottom - text_top + 2
        # Label above the box when there is room, otherwise just inside its top edge.
        label_top = top - text_h if top - text_h >= 0 else top
        draw.rectangle((left, label_top, left + text_w - 1, label_top + text_h - 1), fill=colour)
        draw.text(
            (left + 1 - text_left, label_top + 1 - text_top),
            text,
            fill=_contrasting_text_colour(colour),
            font=font,
        )
    return np.asarray(canvas, dtype=np.uint8).copy()


def colorize_mask(mask, palette: np.ndarray, ignore_label: int = 255) -> np.ndarray:
    """Class-index mask [H, W] (or [H, W, 1]) -> uint8 [H, W, 3]; ignored pixels are black."""
    mask = _squeeze_mask(mask)
    palette = np.asarray(palette, dtype=np.uint8)
    if palette.ndim != 2 or palette.shape[1] != 3:
        raise ValueError(f"colorize_mask: palette must be [K, 3], got shape {palette.shape}")
    ignored = mask == ignore_label
    valid_values = mask[~ignored]
    if valid_values.size and (valid_values.min() < 0 or valid_values.max() >= len(palette)):
        raise ValueError(
            f"colorize_mask: mask values must be in [0, {len(palette)}) or {ignore_label}, "
            f"found range [{valid_values.min()}, {valid_values.max()}]"
        )
    colours = palette[np.where(ignored, 0, mask)]
    colours[ignored] = 0
    return colours


def blend_mask(
    image: np.ndarray, mask, palette: np.ndarray, alpha: float = 0.5, ignore_label: int = 255
) -> np.ndarray:
    """(1 - alpha) * image + alpha * colour, rounded; ignored pixels keep the original image."""
    image = _check_rgb(image)
    mask = _squeeze_mask(mask)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"blend_mask: mask {mask.shape} does not match image {image.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"blend_mask: alpha must be in [0, 1], got {alpha}")
    colours = colorize_mask(mask, palette, ignore_label).astype(np.float64)
    blended = np.rint((1.0 - alpha) * image + alpha * colours)
    blended = np.where((mask == ignore_label)[..., None], image, blended)
    return np.clip(blended, 0, 255).astype(np.uint8)


def image_grid(images, cols: int, pad: int = 0, pad_value: int = 0) -> np.ndarray:
    """Tiles images row-major into a sheet; cells are the size of the largest image.

    Grey images ([H, W] or [H, W, 1]) are repeated to RGB; smaller images sit in the top-left
    corner of their cell; empty space is `pad_value`.
    """
    images = [_to_rgb(np.asarray(img)) for img in images]
    if not images:
        raise ValueError("image_grid: no images")
    if cols < 1:
        raise ValueError(f"image_grid: cols must be >= 1, got {cols}")
    cols = min(cols, len(images))
    rows = -(-len(images) // cols)
    cell_h = max(img.shape[0] for img in images)
    cell_w = max(img.shape[1] for img in images)
    sheet = np.full(
        (rows * cell_h + (rows - 1) * pad, cols * cell_w + (cols - 1) * pad, 3),
        pad_value,
        dtype=np.uint8,
    )
    for index, img in enumerate(images):
        row, col = divmod(index, cols)
        top, left = row * (cell_h + pad), col * (cell_w + pad)
        sheet[top : top + img.shape[0], left : left + img.shape[1]] = img
    return sheet


def save_png(image: np.ndarray, path: str) -> str:
    """Writes a uint8 [H, W], [H, W, 1] or [H, W, 3] array as PNG atomically; returns path."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"save_png {path}: image must be uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"save_png {path}: expected [H, W] or [H, W, 3], got {image.shape}")
    # A reader never sees a half-written file.
    files.write_png(image, path)
    return path


def _contrasting_text_colour(colour) -> tuple[int, int, int]:
    luma = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    return (0, 0, 0) if luma > 128 else (255, 255, 255)


def _check_rgb(image) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 [H, W, 3] image, got {image.dtype} {image.shape}")
    return image


def _squeeze_mask(mask) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"expected an integer [H, W] mask, got {mask.dtype} {mask.shape}")
    return mask.astype(np.int64)


def _to_rgb(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        raise ValueError(f"image_grid: images must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"image_grid: expected [H, W], [H, W, 1] or [H, W, 3], got {image.shape}")
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
