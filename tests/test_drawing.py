import numpy as np
import pytest
from PIL import Image

from ondevice_vision.drawing import (
    blend_mask,
    colorize_mask,
    default_palette,
    draw_detections,
    image_grid,
    save_png,
)


def test_default_palette_is_deterministic_distinct_and_never_black():
    palette = default_palette(300)
    assert palette.shape == (300, 3) and palette.dtype == np.uint8
    np.testing.assert_array_equal(palette, default_palette(300))
    np.testing.assert_array_equal(palette[:19], default_palette(19))
    assert len({tuple(c) for c in palette}) == 300
    assert not np.any(np.all(palette == 0, axis=1))


def test_box_edges_take_the_class_colour():
    image = np.full((100, 120, 3), 50, np.uint8)
    palette = default_palette(3)
    # Pixel box rows 40..79, columns 30..89 (exact multiples, so no rounding ambiguity).
    out = draw_detections(
        image, [[0.4, 0.25, 0.8, 0.75]], [2], [0.9], ["a", "b", "c"], palette=palette, line_width=1
    )
    colour = palette[2]
    for row in (40, 79):
        np.testing.assert_array_equal(out[row, 30:90], np.broadcast_to(colour, (60, 3)))
    for col in (30, 89):
        np.testing.assert_array_equal(out[40:80, col], np.broadcast_to(colour, (40, 3)))
    # Inside and outside the outline (away from the label above the box) stay untouched.
    np.testing.assert_array_equal(out[45:79, 31:89], image[45:79, 31:89])
    np.testing.assert_array_equal(out[80:], image[80:])
    np.testing.assert_array_equal(out[:, 90:], image[:, 90:])
    # The label sits above the box: something differs from the background there.
    assert np.any(out[25:40, 30:90] != 50)
    np.testing.assert_array_equal(image, 50)  # input not modified


def test_label_text_is_rendered():
    image = np.zeros((60, 80, 3), np.uint8)
    palette = default_palette(2)
    short = draw_detections(image, [[0.5, 0.1, 0.9, 0.9]], [0], [0.5], ["a", "b"], palette=palette)
    long = draw_detections(
        image, [[0.5, 0.1, 0.9, 0.9]], [0], [0.5], ["a_long_name", "b"], palette=palette
    )
    assert np.count_nonzero(long[:30].any(axis=2)) > np.count_nonzero(short[:30].any(axis=2))


def test_score_threshold_filters_boxes():
    image = np.zeros((50, 50, 3), np.uint8)
    boxes = [[0.0, 0.0, 0.4, 0.4], [0.6, 0.6, 1.0, 1.0]]
    out = draw_detections(image, boxes, [0, 1], [0.29, 0.3], ["x", "y"], score_threshold=0.3)
    assert not out[:25, :25].any()  # score 0.29 < 0.3: not drawn
    np.testing.assert_array_equal(out[49, 30:50], np.broadcast_to(default_palette(2)[1], (20, 3)))
    none_drawn = draw_detections(image, boxes, [0, 1], [0.1, 0.2], ["x", "y"])
    np.testing.assert_array_equal(none_drawn, image)


def test_draw_detections_rejects_bad_input():
    image = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ValueError, match="class indices"):
        draw_detections(image, [[0, 0, 1, 1]], [3], [1.0], ["a", "b"])
    with pytest.raises(ValueError, match="boxes"):
        draw_detections(image, [[0, 0, 1, 1]], [0, 1], [1.0], ["a", "b"])
    with pytest.raises(ValueError, match="uint8"):
        draw_detections(image.astype(np.float32), [], [], [], ["a"])


def test_colorize_maps_classes_to_palette_and_ignore_to_black():
    palette = np.array([[10, 20, 30], [40, 50, 60], [70, 80, 90]], np.uint8)
    mask = np.array([[0, 1, 2], [255, 2, 0]], np.uint8)
    out = colorize_mask(mask[..., None], palette)
    expected = np.array(
        [[[10, 20, 30], [40, 50, 60], [70, 80, 90]], [[0, 0, 0], [70, 80, 90], [10, 20, 30]]],
        np.uint8,
    )
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(ValueError, match="mask values"):
        colorize_mask(np.array([[3]]), palette)


def test_blend_math():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    mask = rng.integers(0, 4, (6, 7)).astype(np.int32)
    mask[0, :3] = 255
    palette = default_palette(4)
    alpha = 0.3
    out = blend_mask(image, mask, palette, alpha=alpha)
    for y in range(6):
        for x in range(7):
            if mask[y, x] == 255:
                expected = image[y, x]
            else:
                expected = np.rint(0.7 * image[y, x].astype(float) + 0.3 * palette[mask[y, x]])
            np.testing.assert_array_equal(out[y, x], expected)
    np.testing.assert_array_equal(blend_mask(image, mask, palette, alpha=0.0), image)
    with pytest.raises(ValueError, match="does not match"):
        blend_mask(image, mask[:5], palette)


def test_image_grid_places_images_row_major():
    a = np.full((4, 5, 3), 1, np.uint8)
    b = np.full((2, 3), 2, np.uint8)
    c = np.full((4, 5, 3), 3, np.uint8)
    sheet = image_grid([a, b, c], cols=2, pad=1, pad_value=9)
    assert sheet.shape == (4 + 1 + 4, 5 + 1 + 5, 3)
    np.testing.assert_array_equal(sheet[:4, :5], a)
    np.testing.assert_array_equal(sheet[:2, 6:9], 2)
    np.testing.assert_array_equal(sheet[2:4, 6:11], 9)  # rest of b's cell
    np.testing.assert_array_equal(sheet[4], 9)  # padding row
    np.testing.assert_array_equal(sheet[5:9, :5], c)
    np.testing.assert_array_equal(sheet[5:9, 6:], 9)  # empty cell
    assert image_grid([a], cols=4).shape == (4, 5, 3)


def test_save_png_round_trip_and_atomic(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    path = save_png(rgb, str(tmp_path / "sub" / "x.png"))
    np.testing.assert_array_equal(np.asarray(Image.open(path)), rgb)
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4, 1)
    save_png(grey, path)  # overwrite in place
    np.testing.assert_array_equal(np.asarray(Image.open(path)), grey[..., 0])
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["x.png"]
    with pytest.raises(ValueError, match="uint8"):
        save_png(rgb.astype(np.int32), str(tmp_path / "bad.png"))
