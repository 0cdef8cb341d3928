"""SSD anchor boxes, as the TF Object Detection API's `create_ssd_anchors` generates them.

The OD API builds the anchor box specs per layer (`ssd_anchor_generator.create_ssd_anchors`) and
tiles them with `MultipleGridAnchorGenerator` / `grid_anchor_generator.tile_anchors`. The arithmetic
below runs in float32 in the same order as those TF ops, so the boxes match the OD API's bit for bit
(up to the platform's float32 rounding), not only to a tolerance.

Boxes are normalised [ymin, xmin, ymax, xmax]. Order: layer-major, then grid row (y), then grid
column (x), then the anchor within the location, which is the order a head output of shape
[B, H, W, anchors * 4] has after a reshape to [B, H * W * anchors, 4].
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_ASPECT_RATIOS = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)
SSDLITE_STRIDES = (16, 32, 64, 128, 256, 512)


def _layer_scales(num_layers: int, min_scale: float, max_scale: float) -> list[float]:
    if num_layers < 1:
        raise ValueError(f"ssd anchors: num_layers must be >= 1, got {num_layers}")
    if num_layers == 1:
        # The OD API formula divides by num_layers - 1; with one layer it would fail, use min_scale.
        return [min_scale, 1.0]
    # The trailing 1.0 is only the "next scale" of the last layer's interpolated box.
    return [
        min_scale + (max_scale - min_scale) * i / (num_layers - 1) for i in range(num_layers)
    ] + [1.0]


def _box_specs(
    num_layers: int,
    min_scale: float,
    max_scale: float,
    aspect_ratios,
    interpolated_scale_aspect_ratio: float,
    reduce_boxes_in_lowest_layer: bool,
) -> list[list[tuple[float, float]]]:
    """(scale, aspect ratio) pairs per layer, in the OD API's order."""
    scales = _layer_scales(num_layers, min_scale, max_scale)
    specs = []
    for layer, (scale, scale_next) in enumerate(zip(scales[:-1], scales[1:], strict=True)):
        if layer == 0 and reduce_boxes_in_lowest_layer:
            layer_specs = [(0.1, 1.0), (scale, 2.0), (scale, 0.5)]
        else:
            layer_specs = [(scale, float(ar)) for ar in aspect_ratios]
            if interpolated_scale_aspect_ratio > 0.0:
                layer_specs.append(
                    (float(np.sqrt(scale * scale_next)), float(interpolated_scale_aspect_ratio))
                )
        specs.append(layer_specs)
    return specs


def anchors_per_location(
    num_layers: int = 6,
    aspect_ratios=DEFAULT_ASPECT_RATIOS,
    interpolated_scale_aspect_ratio: float = 1.0,
    reduce_boxes_in_lowest_layer: bool = True,
) -> list[int]:
    """Number of anchors at every grid location of each layer ([3, 6, 6, 6, 6, 6] by default)."""
    specs = _box_specs(
        num_layers,
        min_scale=0.2,
        max_scale=0.95,
        aspect_ratios=aspect_ratios,
        interpolated_scale_aspect_ratio=interpolated_scale_aspect_ratio,
        reduce_boxes_in_lowest_layer=reduce_boxes_in_lowest_layer,
    )
    return [len(layer_specs) for layer_specs in specs]


def feature_map_sizes(
    input_size: tuple[int, int], strides=SSDLITE_STRIDES
) -> list[tuple[int, int]]:
    """Spatial sizes of the SSDLite pyramid maps for an input of (height, width).

    Every stride-2 layer with TF "SAME" padding maps n to ceil(n / 2); repeating that k times equals
    ceil(n / 2**k), so each map is ceil(input / stride). 320 -> 20, 10, 5, 3, 2, 1.
    """
    height, width = (int(v) for v in input_size)
    if height < 1 or width < 1:
        raise ValueError(f"feature_map_sizes: input size must be positive, got {input_size}")
    sizes = []
    for stride in strides:
        if stride < 1 or (stride & (stride - 1)) != 0:
            raise ValueError(f"feature_map_sizes: strides must be powers of two, got {strides}")
        sizes.append((math.ceil(height / stride), math.ceil(width / stride)))
    return sizes


def _tile_layer(grid_size, scales, aspect_ratios, base_anchor_size) -> np.ndarray:
    """float32 port of the OD API's `grid_anchor_generator.tile_anchors` with default stride/offset."""
    f32 = np.float32
    grid_h, grid_w = grid_size
    scales = np.asarray(scales, f32)
    ratio_sqrts = np.sqrt(np.asarray(aspect_ratios, f32))
    heights = scales / ratio_sqrts * base_anchor_size[0]
    widths = scales * ratio_sqrts * base_anchor_size[1]
    # MultipleGridAnchorGenerator defaults: stride 1 / map size, offset half a stride.
    stride_y, stride_x = f32(1.0) / f32(grid_h), f32(1.0) / f32(grid_w)
    y_centers = np.arange(grid_h, dtype=f32) * stride_y + f32(0.5) * stride_y
    x_centers = np.arange(grid_w, dtype=f32) * stride_x + f32(0.5) * stride_x
    num = len(scales)
    shape = (grid_h, grid_w, num)
    y = np.broadcast_to(y_centers[:, None, None], shape)
    x = np.broadcast_to(x_centers[None, :, None], shape)
    h = np.broadcast_to(heights[None, None, :], shape)
    w = np.broadcast_to(widths[None, None, :], shape)
    half = f32(0.5)
    boxes = np.stack([y - half * h, x - half * w, y + half * h, x + half * w], axis=-1)
    return boxes.reshape(-1, 4).astype(f32)


def ssd_anchors(
    feature_map_sizes: list[tuple[int, int]],
    min_scale: float = 0.2,
    max_scale: float = 0.95,
    aspect_ratios=DEFAULT_ASPECT_RATIOS,
    interpolated_scale_aspect_ratio: float = 1.0,
    reduce_boxes_in_lowest_layer: bool = True,
    image_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """All anchors for the given pyramid map sizes, float32 [A, 4] normalised yxyx, not clipped.

    `image_size` (height, width) reproduces the OD API's correction for non-square inputs: the base
    anchor size is scaled by min(h, w) / h and min(h, w) / w so anchors stay square in pixels. With
    None (or a square image) the base anchor size is 1.0 in both directions.
    """
    sizes = [tuple(int(v) for v in s) for s in feature_map_sizes]
    if not sizes or any(len(s) != 2 or s[0] < 1 or s[1] < 1 for s in sizes):
        raise ValueError(f"ssd_anchors: bad feature map sizes {feature_map_sizes}")
    specs = _box_specs(
        len(sizes),
        min_scale=min_scale,
        max_scale=max_scale,
        aspect_ratios=aspect_ratios,
        interpolated_scale_aspect_ratio=interpolated_scale_aspect_ratio,
        reduce_boxes_in_lowest_layer=reduce_boxes_in_lowest_layer,
    )
    base_anchor_size = (np.float32(1.0), np.float32(1.0))
    if image_size is not None:
        im_h, im_w = (np.float32(v) for v in image_size)
        min_side = min(im_h, im_w)
        base_anchor_size = (min_side / im_h, min_side / im_w)
    layers = []
    for grid_size, layer_specs in zip(sizes, specs, strict=True):
        scales, ratios = zip(*layer_specs, strict=True)
        layers.append(_tile_layer(grid_size, scales, ratios, base_anchor_size))
    return np.concatenate(layers, axis=0)


def anchor_boxes(options, num_layers: int, input_size) -> np.ndarray:
    """The SSD detector's anchors [A, 4] for `num_layers` feature maps at `input_size` (height,
    width): the one way to get them (the detector's NMS, its export and the input pipeline's
    matching all call this). `options` is a detection config's `model.anchors` (or a detector's
    `anchor_options`). The image size makes non-square inputs' anchors square in pixels, as the
    OD API does.
    """
    sizes = feature_map_sizes(tuple(input_size))[:num_layers]
    return ssd_anchors(
        sizes,
        min_scale=options["min_scale"],
        max_scale=options["max_scale"],
        aspect_ratios=tuple(options["aspect_ratios"]),
        interpolated_scale_aspect_ratio=options["interpolated_scale_aspect_ratio"],
        reduce_boxes_in_lowest_layer=options["reduce_boxes_in_lowest_layer"],
        image_size=tuple(input_size),
    )
