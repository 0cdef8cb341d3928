import numpy as np
import pytest

from ondevice_vision.configs import base_detection
from ondevice_vision.data import detection_sources, shapes


def test_render_example_is_deterministic_and_seed_dependent():
    a, b = shapes.render_example(7, 64), shapes.render_example(7, 64)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    c = shapes.render_example(8, 64)
    assert not np.array_equal(a["image"], c["image"])


@pytest.mark.parametrize("seed", range(12))
def test_boxes_are_tight_around_the_drawn_shapes(seed):
    size = 96
    ex = shapes.render_example(seed, size)
    image, boxes, classes, colours = ex["image"], ex["boxes"], ex["classes"], ex["colours"]
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    assert 1 <= len(boxes) <= shapes.MAX_OBJECTS
    assert boxes.dtype == np.float32 and classes.dtype == np.int32
    assert np.all((classes >= 0) & (classes < len(shapes.CLASS_NAMES)))
    assert np.all(boxes >= 0) and np.all(boxes <= 1)
    for box, colour in zip(boxes, colours, strict=True):
        y0, x0, y1, x1 = np.round(box * size).astype(int)
        side = max(y1 - y0, x1 - x0) / size
        assert 0.08 <= side <= shapes.MAX_SIZE + 0.02
        is_colour = np.all(image == colour, axis=-1)
        inside = is_colour[y0:y1, x0:x1]
        # Every edge row and column of the box touches the shape ...
        assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        # ... and the shape does not leak past the box.
        if y0 > 0:
            assert not is_colour[y0 - 1, x0:x1].any()
        if y1 < size:
            assert not is_colour[y1, x0:x1].any()
        if x0 > 0:
            assert not is_colour[y0:y1, x0 - 1].any()
        if x1 < size:
            assert not is_colour[y0:y1, x1].any()
        # Shapes are solid: a good part of the box is the shape colour (a star fills least).
        assert inside.mean() > 0.2


def test_every_class_appears_and_sizes_span_the_range():
    classes, sides = [], []
    for seed in range(40):
        ex = shapes.render_example(seed, 64)
        classes.extend(ex["classes"])
        sides.extend(
            np.maximum(ex["boxes"][:, 2] - ex["boxes"][:, 0], ex["boxes"][:, 3] - ex["boxes"][:, 1])
        )
    assert set(classes) == set(range(len(shapes.CLASS_NAMES)))
    assert min(sides) < 0.2 and max(sides) > 0.4


def test_dataset_matches_render_example_and_splits_differ():
    train, label_map = shapes.load_shapes("train", 3, image_size=48, seed=5)
    evaluation, _ = shapes.load_shapes("eval", 3, image_size=48, seed=5)
    assert label_map.names == shapes.CLASS_NAMES
    assert label_map.num_classes == 4
    train_examples = list(train.as_numpy_iterator())
    eval_examples = list(evaluation.as_numpy_iterator())
    assert len(train_examples) == 3 and train.cardinality().numpy() == 3
    for i, ex in enumerate(train_examples):
        ref = shapes.render_example(shapes.example_seed(5, "train", i), 48)
        assert ex["image_id"] == i
        np.testing.assert_array_equal(ex["image"], ref["image"])
        np.testing.assert_array_equal(ex["boxes"], ref["boxes"])
        np.testing.assert_array_equal(ex["classes"], ref["classes"])
        assert ex["is_crowd"].dtype == bool and not ex["is_crowd"].any()
        assert not np.array_equal(ex["image"], eval_examples[i]["image"])


def test_detection_source_defaults_to_shapes():
    cfg = base_detection.detection_data_config()
    cfg.num_eval, cfg.image_size = 2, 40
    ds, label_map = detection_sources.load_detection_source(cfg, "eval")
    examples = list(ds.as_numpy_iterator())
    assert len(examples) == 2 and examples[0]["image"].shape == (40, 40, 3)
    assert label_map.names == shapes.CLASS_NAMES
    with pytest.raises(ValueError, match="split"):
        detection_sources.load_detection_source(cfg, "validation")
    cfg.source = "nope"
    with pytest.raises(ValueError, match="nope"):
        detection_sources.load_detection_source(cfg, "train")
