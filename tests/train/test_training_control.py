"""Training control in one tiny run each: moving averages (evaluated, re-estimated under, kept in
checkpoints/best), a frozen backbone, the best checkpoint and early stopping; and moving averages
with quantization-aware training."""

import json

import numpy as np
import pytest

from ondevice_vision import checkpoints, tasks
from ondevice_vision.configs import (
    lraspp_mobilenet_v3_small_shapes,
    ssdlite_mobilenet_v3_small_shapes,
)
from ondevice_vision.quantization import qat
from ondevice_vision.train import bn_recalibration
from ondevice_vision.train.strategy import create_strategy
from ondevice_vision.train.trainer import Trainer

SCRIPTED_MIOU = [0.1, 0.3, 0.2, 0.25, 0.9, 0.9]  # best at step 2, then two without improvement


def small_config():
    config = lraspp_mobilenet_v3_small_shapes.get_config("smoke")
    config.train.total_steps = 6
    config.train.checkpoint_every_steps = 3
    config.train.log_every_steps = 1
    config.train.base_learning_rate = 0.01
    config.train.ema_decay = 0.5
    return config


def test_ema_qat_frozen_backbone_best_checkpoint_and_early_stopping(tmp_path, monkeypatch):
    """One run: quantization-aware from step 2, moving averages, the backbone frozen, an
    evaluation every step (scripted scores), patience 2."""
    config = small_config()
    config.train.trainable = "head"
    config.train.bn_recalibration_steps = 1
    config.train.early_stopping_patience = 2
    config.train.quantization.enabled = True
    config.train.quantization.delay = 2
    config.eval.every_steps = 1
    trainer = Trainer(config, str(tmp_path), create_strategy("one_device"))
    model = trainer.model
    head_kernel = model.trainable_variables[-2]
    key = checkpoints.average_key(head_kernel)
    backbone_before = [v.numpy() for v in model.backbone.weights]
    assert not any(v.trainable for v in model.backbone.weights)

    recalibrated = {}
    run = bn_recalibration.BatchNormRecalibration.run

    def recording_run(self, iterator, steps):
        recalibrated[int(trainer.step.numpy())] = head_kernel.numpy()
        return run(self, iterator, steps)

    monkeypatch.setattr(bn_recalibration.BatchNormRecalibration, "run", recording_run)
    seen = {}

    def eval_fn(model_, step):
        # What evaluation sees: the moving averages, not the weights being trained.
        np.testing.assert_array_equal(head_kernel.numpy(), trainer.ema.averages[key].numpy())
        seen[step] = head_kernel.numpy()
        return {"mIoU": SCRIPTED_MIOU[step - 1], "pixel_accuracy": 0.5}

    result = trainer.train(eval_fn)
    # Evaluations at 1..4: no improvement at 3 and 4 -> stop at step 4, saved, reported.
    assert result["early_stopped"] and result["step"] == 4 and sorted(seen) == [1, 2, 3, 4]
    latest = checkpoints.latest_checkpoint(str(tmp_path))
    assert checkpoints.step_of(latest) == 4
    assert not np.array_equal(head_kernel.numpy(), trainer.ema.averages[key].numpy())
    # Batch-norm re-estimation ran under the averages, and only before quantization-aware
    # training froze the statistics (step 2 on).
    assert sorted(recalibrated) == [1]
    np.testing.assert_array_equal(recalibrated[1], seen[1])
    best = checkpoints.latest_or_given(str(tmp_path), "best")
    assert checkpoints.step_of(best) == 2
    info = json.loads((tmp_path / "checkpoints" / "best" / "best.json").read_text())
    assert info == {"metric": "mIoU", "mode": "max", "value": 0.3, "step": 2}
    # The best checkpoint holds the averaged weights evaluated at step 2.
    restored, _ = tasks.load_trained_model(config, str(tmp_path), "best")
    by_path = {v.path: v for v in restored.trainable_variables}
    np.testing.assert_array_equal(by_path[head_kernel.path].numpy(), seen[2])
    # Export of the last checkpoint: the averaged weights, with the quantization ranges learned
    # beside the trained ones.
    exported, path = tasks.load_trained_model(config, str(tmp_path))
    assert path == latest
    by_path = {v.path: v for v in exported.trainable_variables}
    assert len(trainer.ema.averages) < len(by_path)  # the frozen backbone has none
    for name, average in trainer.ema.averages.items():
        np.testing.assert_array_equal(by_path[name].numpy(), average.numpy(), err_msg=name)
    simulator = qat.restore_for_export(config, exported, latest, tuple(config.model.input_size))
    assert simulator is not None and simulator.range_values()
    # The frozen backbone did not move, moving statistics included (inference-mode batch norm).
    for before, v in zip(backbone_before, model.backbone.weights, strict=True):
        np.testing.assert_array_equal(before, v.numpy(), err_msg=v.path)


@pytest.mark.parametrize("setting", ["class_predictor", "nothing_matches_this"])
def test_trainable_regex(setting):
    from ondevice_vision.train.freezing import apply_trainable

    config = ssdlite_mobilenet_v3_small_shapes.get_config("smoke")
    model = tasks.get_task(config).build_model(config)
    if setting == "nothing_matches_this":
        with pytest.raises(ValueError, match="matches no weight path"):
            apply_trainable(model, setting)
        return
    counts = apply_trainable(model, setting)
    names = [v.path for v in model.trainable_variables]
    assert names and all("class_predictor" in n for n in names)
    assert counts["trainable"] == len(names)
    # Batch norm with no trained weight runs on its moving statistics (a frozen layer).
    batch_norms = [lay for lay in model.backbone.layers if "bn" in lay.name]
    assert batch_norms and not any(lay.trainable for lay in batch_norms)
