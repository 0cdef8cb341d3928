"""The label map a run records in its workdir (tasks/recorded_labels.py), and the config's own
label map, which reads no data: COCO's and Cityscapes' ship with the package."""

from __future__ import annotations

import pytest

from ondevice_vision import checkpoints, tasks
from ondevice_vision.configs import (
    lraspp_mobilenet_v3_large_cityscapes,
    lraspp_mobilenet_v3_small_cityscapes,
    lraspp_mobilenet_v3_small_shapes,
    ssdlite_mobilenet_edgetpu_320_coco,
    ssdlite_mobilenet_v3_large_320_coco,
    ssdlite_mobilenet_v3_small_320_coco,
    ssdlite_mobilenet_v3_small_shapes,
)
from ondevice_vision.data import cityscapes_labels
from ondevice_vision.data.label_map import LabelMap
from ondevice_vision.export.main import label_map_and_palette
from ondevice_vision.tasks import recorded_labels

KANGAROO = LabelMap.contiguous(["kangaroo"])


@pytest.fixture
def no_datasets(tmp_path, monkeypatch):
    """An empty TFDS data dir: any read of COCO or Cityscapes data fails."""
    empty = tmp_path / "tensorflow_datasets"
    empty.mkdir()
    monkeypatch.setenv("TFDS_DATA_DIR", str(empty))
    return str(empty)


@pytest.mark.parametrize(
    "module",
    [
        ssdlite_mobilenet_v3_large_320_coco,
        ssdlite_mobilenet_v3_small_320_coco,
        ssdlite_mobilenet_edgetpu_320_coco,
    ],
)
@pytest.mark.parametrize("arg", [None, "coco14"])
def test_coco_configs_know_their_90_slots_without_coco(no_datasets, module, arg):
    config = module.get_config(arg) if arg else module.get_config()
    config.data.data_dir = no_datasets
    label_map = tasks.get_task(config).label_map(config)
    assert label_map.num_classes == 90 and label_map.dataset_ids == tuple(range(1, 91))
    assert label_map.names[0] == "person" and label_map.names[89] == "toothbrush"
    # The ten ids COCO left unused keep their slots, named as such.
    unused = [i + 1 for i, n in enumerate(label_map.names) if n.startswith("unused_")]
    assert unused == [12, 26, 29, 30, 45, 66, 68, 69, 71, 83]


@pytest.mark.parametrize(
    "module", [lraspp_mobilenet_v3_large_cityscapes, lraspp_mobilenet_v3_small_cityscapes]
)
def test_cityscapes_configs_know_their_19_train_ids_without_cityscapes(no_datasets, module):
    config = module.get_config()
    config.data.data_dir = no_datasets
    label_map = tasks.get_task(config).label_map(config)
    assert label_map == cityscapes_labels.label_map()
    assert label_map.names[:3] == ("road", "sidewalk", "building")
    assert label_map.dataset_ids[:3] == (7, 8, 11)  # cityscapesscripts' labelIds


def test_record_then_check(tmp_path):
    workdir = str(tmp_path / "run")
    assert recorded_labels.recorded(workdir) is None
    recorded_labels.record(workdir, KANGAROO)
    recorded_labels.record(workdir, KANGAROO)  # a resumed run: same classes
    assert recorded_labels.recorded(workdir) == KANGAROO
    other = LabelMap.contiguous(["wallaby"])
    with pytest.raises(ValueError, match=r"class 0 is 'kangaroo' \(id 0\) vs 'wallaby'"):
        recorded_labels.record(workdir, other)
    with pytest.raises(ValueError, match="--allow_other_label_map"):
        recorded_labels.check(workdir, other, "the eval data")
    recorded_labels.check(workdir, other, "the eval data", allow=True)  # told: goes on
    recorded_labels.check(str(tmp_path / "never_trained"), other, "the eval data")


def test_a_coco_subset_does_not_contradict_the_full_map(tmp_path, no_datasets):
    """An eval folder with a few COCO categories leaves the others' slots unused: no mismatch."""
    config = ssdlite_mobilenet_v3_small_320_coco.get_config()
    full = tasks.get_task(config).label_map(config)
    subset = LabelMap(
        names=tuple(n if i in (0, 89) else f"unused_{i + 1}" for i, n in enumerate(full.names)),
        dataset_ids=full.dataset_ids,
    )
    recorded_labels.record(str(tmp_path), full)
    recorded_labels.check(str(tmp_path), subset, "the eval data")
    wrong = LabelMap(names=("dog", *full.names[1:]), dataset_ids=full.dataset_ids)
    with pytest.raises(ValueError, match="class 0 is 'person' \\(id 1\\) vs 'dog'"):
        recorded_labels.check(str(tmp_path), wrong, "the eval data")


def test_export_takes_the_recorded_map_not_the_datas(tmp_path):
    """Exporting with another data folder once wrote that folder's class names for a trained
    model; the recorded map wins, and another one is refused unless told."""
    config = ssdlite_mobilenet_v3_small_shapes.get_config("smoke")
    workdir = str(tmp_path / "run")
    animals = LabelMap.contiguous(["kangaroo", "wallaby", "emu", "koala"])
    recorded_labels.record(workdir, animals)
    label_map, _ = label_map_and_palette(config, workdir=workdir)
    assert label_map == animals  # the shapes data would say circle, square, ...
    # A workdir without a record: the config's map.
    assert label_map_and_palette(config)[0].names == ("circle", "square", "triangle", "star")
    other = tmp_path / "other.json"
    other.write_text(LabelMap.contiguous(["a", "b", "c", "d"]).to_json())
    with pytest.raises(ValueError, match="--allow_other_label_map"):
        label_map_and_palette(config, str(other), workdir)
    given = label_map_and_palette(config, str(other), workdir, allow_other=True)[0]
    assert given.names == ("a", "b", "c", "d")


def test_trainer_records_and_refuses_other_classes(tmp_path):
    import os

    from ondevice_vision.train import strategy, trainer

    config = lraspp_mobilenet_v3_small_shapes.get_config("smoke")
    config.train.total_steps = 1
    config.train.warmup_steps = 0
    workdir = str(tmp_path / "run")
    names = tasks.get_task(config).label_map(config).names
    recorded_labels.record(workdir, LabelMap.contiguous(["sky", *names[1:]]))
    run = trainer.Trainer(config, workdir, strategy.create_strategy("one_device"))
    run.step.assign(1)  # nothing left to train: the run only records
    with pytest.raises(ValueError, match="train into a new workdir"):
        run.train()
    os.remove(recorded_labels.labels_path(workdir))
    assert run.train()["step"] == 1
    assert recorded_labels.recorded(workdir) == tasks.get_task(config).label_map(config)


def test_eval_refuses_data_with_other_classes(tmp_path):
    import tensorflow as tf

    from ondevice_vision.eval.evaluate import evaluate_checkpoint

    config = lraspp_mobilenet_v3_small_shapes.get_config("smoke")
    workdir = str(tmp_path / "run")
    model = tasks.get_task(config).build_model(config)
    step = tf.Variable(0, dtype=tf.int64)
    manager = checkpoints.make_manager(tf.train.Checkpoint(model=model, step=step), workdir, 1)
    checkpoints.save(manager, 0)
    names = tasks.get_task(config).label_map(config).names
    recorded_labels.record(workdir, LabelMap.contiguous(["sky", *names[1:]]))
    with pytest.raises(ValueError, match="--allow_other_label_map"):
        evaluate_checkpoint(config, workdir)
