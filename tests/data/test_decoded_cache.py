"""data.decoded_cache is keyed by the data it was made from: a changed annotation builds a new
cache (the stale one is removed), never trains on the previous run's labels."""

import json
import logging
import os

import numpy as np
from PIL import Image

from ondevice_vision.configs import base_detection
from ondevice_vision.data import decoded_cache
from ondevice_vision.tasks import detection as detection_task


def _folder(d, box, write_images=True):
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(0)
    images = []
    for i in (1, 2):
        if write_images:
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(d, f"{i}.png"))
        images.append({"id": i, "file_name": f"{i}.png", "width": 32, "height": 32})
    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": box, "iscrowd": 0}]
    with open(os.path.join(d, "annotations.json"), "w") as f:
        json.dump(
            {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "a"}]},
            f,
        )


def _first_boxes(config):
    ds, _ = detection_task.build_dataset(config, "train", batch_size=1)
    boxes = {}
    for _, labels in ds.take(3):  # past the end of the first epoch: the cache is complete
        boxes[int(labels["image_id"][0])] = labels["gt_boxes"][0, 0].numpy()
    return boxes


def test_a_changed_annotation_rebuilds_the_cache(tmp_path, caplog):
    data, cache = str(tmp_path / "data"), str(tmp_path / "cache")
    _folder(data, [0, 0, 16, 16])
    config = base_detection.detection_config("mobilenet_v3_small")
    config.model.input_size = (32, 32)
    config.data.update(
        source="coco_folder", train_dir=data, eval_dir=data, augment=False, decoded_cache=cache
    )
    config.train.shuffle_buffer = 1
    first = decoded_cache.source_fingerprint(config.data)
    np.testing.assert_allclose(_first_boxes(config)[1], [0, 0, 0.5, 0.5])
    assert any(name.startswith(f"train-decoded-{first}") for name in os.listdir(cache))

    _folder(data, [8, 8, 16, 16], write_images=False)  # one annotation changed
    second = decoded_cache.source_fingerprint(config.data)
    assert second != first
    with caplog.at_level(logging.WARNING):
        np.testing.assert_allclose(_first_boxes(config)[1], [0.25, 0.25, 0.75, 0.75])
    assert "a decoded cache of other data" in caplog.text
    assert not any(first in name for name in os.listdir(cache))
    # Unchanged data and settings: the same key, so the cache is reused.
    assert decoded_cache.source_fingerprint(config.data) == second
