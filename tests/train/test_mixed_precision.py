import keras
import numpy as np
import pytest
import tensorflow as tf

from ondevice_vision.configs import ssdlite_mobilenet_v3_small_shapes
from ondevice_vision.tasks import detection as detection_task
from ondevice_vision.train import strategy
from ondevice_vision.train import trainer as trainer_lib
from tests.helpers import train_cli

# bfloat16 keeps 8 bits of mantissa: the losses of the same weights on the same batch agree
# to about 1% (measured: 0.1%).
BFLOAT16_LOSS_RTOL = 0.02


def _config():
    config = ssdlite_mobilenet_v3_small_shapes.get_config("smoke")
    config.model.input_size = (64, 64)
    config.data.augment = False
    return config


def _conv_dtypes(model):
    layer = next(
        layer
        for layer in model.get_layer("backbone").layers
        if isinstance(layer, keras.layers.Conv2D)
    )
    return layer.compute_dtype, layer.kernel.dtype


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_policy_dtypes_and_loss_scaling(tmp_path, precision):
    trainer = trainer_lib.Trainer(
        _config(), str(tmp_path), strategy.create_strategy("one_device"), precision
    )
    assert _conv_dtypes(trainer.model) == (precision, "float32")
    for name in ("box_outputs", "class_outputs"):  # the heads' outputs feed the loss in float32
        assert trainer.model.get_layer(name).compute_dtype == "float32"
    # Loss scaling only where float16's range needs it.
    assert trainer.loss_scaled == (precision == "float16")
    # The policy was only in force while the model was built.
    assert keras.mixed_precision.global_policy().name == "float32"


def test_bad_precision_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="mixed_precision"):
        trainer_lib.Trainer(
            _config(), str(tmp_path), strategy.create_strategy("one_device"), "int8"
        )


def test_bfloat16_loss_matches_float32_on_the_same_weights(tmp_path):
    config = _config()
    one = strategy.create_strategy("one_device")
    exact = trainer_lib.Trainer(config, str(tmp_path / "f32"), one)
    mixed = trainer_lib.Trainer(config, str(tmp_path / "bf16"), one, "bfloat16")
    mixed.model.set_weights(exact.model.get_weights())
    ds, _ = detection_task.build_dataset(config, "train", 2)
    images, labels = next(iter(ds))

    def loss(model):
        sums, normalizer = detection_task.compute_losses(
            config, model(images, training=False), labels
        )
        return float(
            tf.add_n([tf.reduce_sum(v) for v in sums.values()]) / tf.reduce_sum(normalizer)
        )

    reference = loss(exact.model)
    assert np.isfinite(reference) and reference > 0
    np.testing.assert_allclose(loss(mixed.model), reference, rtol=BFLOAT16_LOSS_RTOL)


def test_bfloat16_training_run_on_cpu(tmp_path):
    workdir = tmp_path / "bf16"
    code, output = train_cli.run(
        workdir,
        "--mixed_precision=bfloat16",
        "--config.train.total_steps=3",
        "--config.train.log_every_steps=1",
        "--config.train.checkpoint_every_steps=3",
        config=train_cli.SEGMENTATION_SMOKE,
    )
    assert code == 0, output[-3000:]
    assert "Mixed precision: layers compute in bfloat16" in output
    result = train_cli.result_json(output)
    assert result["step"] == 3 and np.isfinite(result["loss"]) and np.isfinite(result["grad_norm"])
    losses = train_cli.scalars(workdir, "loss/loss")
    assert sorted(losses) == [1, 2, 3] and all(np.isfinite(v) for v in losses.values())
    path = str(workdir / "checkpoints" / "ckpt-3")
    dtypes = tf.train.load_checkpoint(path).get_variable_to_dtype_map()
    model_dtypes = {d for k, d in dtypes.items() if k.startswith("model/")}
    assert model_dtypes == {tf.float32}  # master weights stay float32
    for name, value in train_cli.model_weights(path).items():
        assert np.isfinite(value).all(), name
