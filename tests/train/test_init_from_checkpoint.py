"""train.init_checkpoint: a 4-class shapes detector's checkpoint onto 3 classes, each mode, errors."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from ondevice_vision import checkpoints, tasks
from ondevice_vision.configs import (
    lraspp_mobilenet_v3_small_shapes,
    ssdlite_mobilenet_v3_small_shapes,
)
from ondevice_vision.train.init_from_checkpoint import initialise_from_checkpoint
from ondevice_vision.train.strategy import create_strategy
from ondevice_vision.train.trainer import Trainer

CLASS_CONVS = [f"class_predictor_{i}_conv" for i in range(6)]


def _detection_config(workdir, num_classes=4, **model):
    config = ssdlite_mobilenet_v3_small_shapes.get_config("smoke")
    config.model.num_classes = num_classes
    config.model.update(model)
    return config


def _by_layer(model):
    """{"layer/weight": numpy value} over the whole model, nested backbone included."""
    values = {}

    def visit(layer, prefix):
        for child in getattr(layer, "layers", []):
            if getattr(child, "layers", None):
                visit(child, f"{prefix}{child.name}/")
                continue
            for v in child.weights:
                values[f"{prefix}{child.name}/{v.name}"] = v.numpy()

    visit(model, "")
    return values


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A trainer checkpoint of a 4-class detector, with non-zero optimizer slots and step 123."""
    workdir = str(tmp_path_factory.mktemp("source"))
    trainer = Trainer(_detection_config(workdir), workdir, create_strategy("one_device"))
    rng = np.random.default_rng(0)
    for v in trainer.model.weights:  # away from any initialiser's values
        v.assign(rng.normal(size=v.shape).astype(np.float32))
    for v in trainer.optimizer.variables:
        v.assign(tf.ones_like(v) * 7)
    trainer.step.assign(123)
    manager = checkpoints.make_manager(trainer.make_checkpoint(), workdir, keep=1)
    path = checkpoints.save(manager, 123)
    keys = [k for k, _ in tf.train.list_variables(path)]
    # The layout that broke name-based restores: trainable weights live under the optimizer.
    assert any(k.startswith("optimizer/_trainable_variables/") for k in keys)
    return checkpoints.checkpoint_dir(workdir), _by_layer(trainer.model)


def _target(tmp_path, mode, num_classes=3, **model):
    config = _detection_config(str(tmp_path), num_classes, **model)
    config.train.init_checkpoint_mode = mode
    return Trainer(config, str(tmp_path), create_strategy("one_device"))


def test_detection_mode_restores_all_but_the_class_predictors(source, tmp_path, monkeypatch):
    directory, want = source
    trainer = _target(tmp_path, "detection")
    trainer.config.train.init_checkpoint = directory
    fresh = _by_layer(trainer.model)
    from ondevice_vision.train import init_from_checkpoint

    # absl's logger may have been reconfigured by an earlier test in this worker: record calls.
    records = []
    for level in ("info", "warning", "error"):
        monkeypatch.setattr(
            init_from_checkpoint.logging,
            level,
            lambda msg, *a, _level=level: records.append((_level, msg % a if a else msg)),
        )
    trainer._initialise_weights()  # what a run without a checkpoint of its own does first
    got = _by_layer(trainer.model)
    for name, value in got.items():
        layer = name.rsplit("/", 1)[0]
        if layer in CLASS_CONVS:
            assert value.shape != want[name].shape  # 3 classes (+ background) x anchors
            np.testing.assert_array_equal(value, fresh[name])
        else:
            np.testing.assert_array_equal(value, want[name], err_msg=name)
    # The run starts afresh: step 0, optimizer slots untouched (zeros), not the source's 7s.
    assert int(trainer.step.numpy()) == 0
    assert all(not np.any(v.numpy()) for v in trainer.optimizer.variables)
    summaries = [text for _, text in records if "re-initialised" in text]
    assert len(summaries) == 1
    assert "re-initialised 6 layers: class_predictor_0_conv" in summaries[0]
    assert "step not restored" in summaries[0]
    assert not [text for level, text in records if level != "info"]


def test_backbone_mode_restores_only_the_backbone(source, tmp_path):
    directory, want = source
    model = _target(tmp_path, "backbone").model
    fresh = _by_layer(model)
    report = initialise_from_checkpoint(
        model, directory, "classification", tasks.get_task("detection").class_layers
    )
    got = _by_layer(model)
    backbone = [n for n in got if n.startswith("backbone/")]
    assert len(backbone) == len(report.restored) > 100
    for name, value in got.items():
        expected = want[name] if name.startswith("backbone/") else fresh[name]
        np.testing.assert_array_equal(value, expected, err_msg=name)
    assert "extra_2_1x1_reduce" in report.reinitialised_layers
    assert set(CLASS_CONVS) <= set(report.reinitialised_layers)


def test_strict_mode_restores_everything_and_rejects_another_class_count(source, tmp_path):
    directory, want = source
    model = _target(tmp_path / "a", "strict", num_classes=4).model
    report = initialise_from_checkpoint(
        model, directory, "strict", tasks.get_task("detection").class_layers
    )
    assert report.reinitialised_layers == [] and report.unused_in_checkpoint == 0
    for name, value in _by_layer(model).items():
        np.testing.assert_array_equal(value, want[name], err_msg=name)
    model = _target(tmp_path / "b", "strict").model
    with pytest.raises(
        ValueError,
        match=r"6 layers differ, first: class_predictor_0_conv \(kernel: model \[1, 1, 288, 12\], "
        r"checkpoint \[1, 1, 288, 15\]\).*only the class-dependent layers differ.*"
        r"all_but_class_layers",
    ):
        initialise_from_checkpoint(
            model, directory, "strict", tasks.get_task("detection").class_layers
        )


@pytest.mark.parametrize(
    "model, first",
    [
        # Another backbone: its first layer with another shape is named.
        ({"backbone": "mobilenet_v3_large"}, r"backbone/expanded_conv_project \(kernel: model "),
        (
            {"depth_multiplier": 0.75},
            r"backbone/expanded_conv_3_project \(kernel: model \[1, 1, 96, 32\], checkpoint "
            r"\[1, 1, 96, 40\]\)",
        ),
    ],
)
def test_another_backbone_or_width_is_an_error_naming_the_first_layers(
    source, tmp_path, model, first
):
    directory, _ = source
    target = _target(tmp_path, "detection", **model).model
    before = _by_layer(target)
    with pytest.raises(ValueError, match=rf"does not match the model.*first: {first}"):
        initialise_from_checkpoint(
            target, directory, "detection", tasks.get_task("detection").class_layers
        )
    for name, value in _by_layer(target).items():  # nothing half-restored
        np.testing.assert_array_equal(value, before[name])


def test_bad_mode_and_missing_checkpoint_are_named(source, tmp_path):
    directory, _ = source
    model = _target(tmp_path, "detection").model
    with pytest.raises(ValueError, match="init_checkpoint_mode must be one of.*'everything'"):
        initialise_from_checkpoint(
            model, directory, "everything", tasks.get_task("detection").class_layers
        )
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        initialise_from_checkpoint(
            model, str(tmp_path), "detection", tasks.get_task("detection").class_layers
        )
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*ckpt-9"):
        initialise_from_checkpoint(
            model, f"{directory}/ckpt-9", "detection", tasks.get_task("detection").class_layers
        )


def test_segmentation_imported_layout_onto_other_classes(tmp_path):
    """A checkpoint of `model` and `step` only, as `ondevice-import` writes one (the same two
    calls as ondevice_vision/importers/main.py): LR-ASPP 4 -> 3 classes."""
    config = lraspp_mobilenet_v3_small_shapes.get_config("smoke")
    config.model.num_classes = 4
    task = tasks.get_task(config)
    source = task.build_model(config)
    for v in source.weights:
        v.assign(tf.random.normal(v.shape))
    step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    manager = checkpoints.make_manager(
        tf.train.Checkpoint(model=source, step=step), str(tmp_path), 1
    )
    path = checkpoints.save(manager, 0)
    config.model.num_classes = 3
    target = task.build_model(config)
    fresh = _by_layer(target)
    report = initialise_from_checkpoint(
        target, path, "all_but_class_layers", tasks.get_task("segmentation").class_layers
    )
    want = _by_layer(source)
    logits = {
        n.rsplit("/", 1)[0] for n in want if n.endswith(("high_logits/kernel", "low_logits/kernel"))
    }
    assert sorted(report.reinitialised_layers) == sorted(logits) and len(logits) == 2
    for name, value in _by_layer(target).items():
        expected = fresh[name] if name.rsplit("/", 1)[0] in logits else want[name]
        np.testing.assert_array_equal(value, expected, err_msg=name)
