"""Quantization-aware fine-tuning of an already trained test model, and its int8 export."""

from __future__ import annotations

import tensorflow as tf

from ondevice_vision import checkpoints, files, tasks
from ondevice_vision.export import tflite
from ondevice_vision.export.exported_model import load_exported_model
from ondevice_vision.quantization import qat
from ondevice_vision.train import trainer as trainer_lib
from ondevice_vision.train.strategy import create_strategy


def quantization_aware_export(config, float_model, labels, root, float_steps=5, qat_steps=25):
    """Fine-tunes `float_model`: `float_steps` more in float (train.quantization.delay), then
    `qat_steps` quantization-aware, at a hundredth of the learning rate: these models fit two
    images with Adam at a constant rate, and a fresh Adam moves every weight by about the rate
    per step whatever the gradient, so a few dozen more steps at the full rate moved AP / mIoU by
    0.1 to 0.4, and at a tenth still by up to 0.075 (seen: mIoU 0.973 -> 0.898), which would
    hide what quantization does. Exports int8 from the checkpoint the way `ondevice-export`
    does (a fresh model, the learned ranges, no calibration).

    Returns (config, the restored float model, the int8 export, the simulator).
    """
    config = config.copy_and_resolve_references()
    config.train.quantization.enabled = True
    config.train.quantization.delay = float_steps
    # The test runs are a few dozen steps: ranges must settle within them.
    config.train.quantization.ema_decay = 0.9
    config.train.total_steps = float_steps + qat_steps
    config.train.base_learning_rate *= 0.01
    config.train.warmup_steps = 0
    config.train.checkpoint_every_steps = config.train.total_steps
    config.train.log_every_steps = config.train.total_steps
    workdir = str(root / "qat_train")
    files.check_writable_dir(workdir)
    trainer = trainer_lib.Trainer(config, workdir, create_strategy("one_device"))
    trainer.model.set_weights(float_model.get_weights())
    trainer.train()
    path = checkpoints.latest_checkpoint(workdir)
    model = tasks.get_task(config).build_model(config)
    tf.train.Checkpoint(model=model).read(path).expect_partial()
    state = qat.restore_for_export(config, model, path)
    assert state is not None and state.range_values() == trainer.quantization.range_values()
    out = tflite.export_tflite(
        config,
        model,
        labels,
        str(root / "qat_int8"),
        tuple(config.model.input_size),
        quantization="int8",
        quantization_state=state,
    )
    return config, model, load_exported_model(out, num_threads=2), state
