"""Models and images shared by the export tests, and a check that they are fit for the purpose.

A freshly built detector or segmenter barely depends on its input (its small initial weights
shrink the signal: every image gets nearly the same scores), so comparing two runtimes on it
proves little. `lively_model` re-draws every conv kernel He-normal and measures the BatchNorm
statistics on a batch of eval images (a forward pass in training mode, no weight updates): the outputs
then vary strongly from image to image and scores spread over (0, 1), without training. The
detector's class bias is raised so that a few percent of the anchors score above 0.5.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from PIL import Image

from ondevice_vision import files, tasks
from ondevice_vision.configs import (
    lraspp_mobilenet_v3_small_shapes,
    ssdlite_mobilenet_v3_small_shapes,
)
from ondevice_vision.export import tflite
from ondevice_vision.train import trainer as trainer_lib
from ondevice_vision.train.strategy import create_strategy


def detection_config():
    """SSDLite V3-Small at 128x128, 4 synthetic shape classes."""
    return ssdlite_mobilenet_v3_small_shapes.get_config("smoke")


def segmentation_config():
    """LR-ASPP V3-Small on 64x96 synthetic images, 4 classes."""
    return lraspp_mobilenet_v3_small_shapes.get_config("smoke")


def overfit_detection_config():
    """Two 128x128 shape images, no augmentation: 120 steps fit them (tests/tasks/test_detection.py
    asserts it)."""
    config = ssdlite_mobilenet_v3_small_shapes.get_config()
    config.model.input_size = (128, 128)
    config.data.image_size = 128
    config.data.num_train = 2
    config.data.augment = False
    config.train.total_steps = 120
    config.train.warmup_steps = 10
    _overfit_schedule(config)
    return config


def overfit_segmentation_config():
    """Two 64x64 synthetic images, no scale jitter: 120 steps fit them (tests/tasks/
    test_segmentation.py asserts it)."""
    config = lraspp_mobilenet_v3_small_shapes.get_config()
    config.model.input_size = (64, 64)
    config.data.image_size = (64, 64)
    config.data.crop_size = (64, 64)
    config.data.num_train = 2
    config.data.min_scale = config.data.max_scale = 1.0
    # No flips: the batch-norm statistics then come from exactly the images the tests score
    # (with flips, eval-mode mIoU fell to 0.86 in one of three fits whose training-mode mIoU was
    # 0.97: a net fitted to two images is that sensitive to the statistics of their mirrors).
    config.data.random_flip = False
    # 80 steps fitted most runs; 120 leave no run short of the bounds below (mIoU > 0.8).
    config.train.total_steps = 120
    config.train.warmup_steps = 5
    _overfit_schedule(config)
    return config


def _overfit_schedule(config):
    config.data.num_eval = 2
    config.train.batch_size = 2
    config.train.base_learning_rate = 5e-3
    config.train.schedule = "constant"
    config.train.weight_decay = 0.0
    config.train.log_every_steps = config.train.total_steps // 2
    config.train.checkpoint_every_steps = config.train.total_steps
    config.train.shuffle_buffer = 2
    config.eval.num_visualizations = 0
    # Two training images: a few batches re-estimate the BN statistics exactly.
    config.train.bn_recalibration_steps = 2


@contextlib.contextmanager
def _one_worker_at_a_time(directory: str):
    """Creates `directory` and holds its lock file: what one pytest-xdist worker writes there
    inside is complete when the next one enters."""
    os.makedirs(directory, exist_ok=True)
    with open(directory + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def shared_overfit_model(config, directory: str):
    """(model, the trainer's result) of a model trained to fit the config's training images (a
    real trained network, in seconds), trained once per test run: the first pytest-xdist worker
    to ask trains it and saves its weights in `directory`, the others wait on the lock file and
    load them (tests/conftest.py: overfit_detector, overfit_segmenter)."""
    weights = os.path.join(directory, "model.weights.h5")
    result_file = os.path.join(directory, "result.json")
    with _one_worker_at_a_time(directory):
        if not os.path.exists(result_file):
            workdir = os.path.join(directory, "train")
            files.check_writable_dir(workdir)
            trainer = trainer_lib.Trainer(config, workdir, create_strategy("one_device"))
            result = trainer.train()
            trainer.model.save_weights(weights)
            with open(result_file, "w") as f:
                json.dump(result, f)
            return trainer.model, result
    model = tasks.get_task(config).build_model(config)
    model.load_weights(weights)
    with open(result_file) as f:
        return model, json.load(f)


# The int8 calibration of the shared TFLite exports: the training pipeline's two images, repeated.
OVERFIT_CALIBRATION_IMAGES = 8


def shared_tflite_exports(config, model, directory: str) -> dict:
    """{"none": dir, "int8": dir}: the float and the int8 TFLite export (with the
    post-processing op; int8 calibrated on OVERFIT_CALIBRATION_IMAGES images of the training
    pipeline) of a shared overfit model, written once per test run for every module that reads
    them: the first pytest-xdist worker to ask writes them, the others wait on the lock file
    (export_tflite writes atomically, so a directory that exists is complete)."""
    paths = {}
    with _one_worker_at_a_time(directory):
        for quantization in ("none", "int8"):
            paths[quantization] = os.path.join(directory, quantization)
            if not os.path.exists(paths[quantization]):
                tflite.export_tflite(
                    config,
                    model,
                    label_map(config),
                    paths[quantization],
                    tuple(config.model.input_size),
                    quantization=quantization,
                    num_calibration_images=OVERFIT_CALIBRATION_IMAGES,
                )
    return paths


def training_examples(config):
    """The (unaugmented) training images as uint8 and their labels, one batch."""
    dataset, _ = tasks.get_task(config).build_dataset(
        config, "train", config.data.num_train, repeat=False
    )
    images, labels = next(iter(dataset))
    pixels = np.clip(np.rint(images.numpy()), 0, 255).astype(np.uint8)
    return pixels, {k: v.numpy() for k, v in labels.items()}


def _all_layers(layer):
    for child in getattr(layer, "layers", []):
        yield child
        yield from _all_layers(child)


def lively_model(config, seed: int = 0):
    task = tasks.get_task(config)
    model = task.build_model(config)
    rng = np.random.default_rng(seed)
    for layer in _all_layers(model):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            kernel = layer.kernel
            fan_in = int(np.prod(kernel.shape[:2]))
            if not isinstance(layer, keras.layers.DepthwiseConv2D):
                fan_in *= int(kernel.shape[2])
            kernel.assign(rng.normal(0.0, np.sqrt(2.0 / fan_in), kernel.shape).astype("float32"))
    for layer in _all_layers(model):
        if layer.name.startswith("class_predictor") and layer.name.endswith("_conv"):
            # Class prior 0.05 instead of 0.01: a few percent of the anchors score above 0.5.
            layer.bias.assign(np.full(layer.bias.shape, -3.0, "float32"))
    # Momentum 0: one training-mode pass sets every moving statistic to its batch statistic.
    norms = [
        layer for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)
    ]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    # Eval images (no random augmentation), so the model is the same in every run.
    dataset, _ = task.build_dataset(config, "eval", config.eval.max_images or 8)
    model(next(iter(dataset))[0], training=True)
    for layer, momentum in zip(norms, momenta, strict=True):
        layer.momentum = momentum
    return model


def eval_images(config, count: int = 4) -> np.ndarray:
    """uint8 [count, H, W, 3] from the eval pipeline (detection: resized to the input size)."""
    dataset, _ = tasks.get_task(config).build_dataset(config, "eval", count)
    images = next(iter(dataset))[0].numpy()
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def label_map(config):
    return tasks.get_task(config).build_dataset(config, "eval", 1)[1]


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def tf_example(encoded: bytes) -> bytes:
    feature = {"image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def confident(outputs, i, threshold=0.5):
    """Image i's detections scoring above threshold, as boxes / classes / scores."""
    keep = outputs["detection_scores"][i] > threshold
    return {
        "boxes": outputs["detection_boxes"][i][keep],
        "classes": outputs["detection_classes"][i][keep],
        "scores": outputs["detection_scores"][i][keep],
    }


def assert_same_detections(got, want, atol=1e-3, threshold=0.5):
    """Same detections (class, box and score within atol), in any order.

    Two runtimes (or graph vs eager TensorFlow) round differently; on the high-gain random
    networks of `lively_model` that moves scores by up to a few 1e-4.
    Detections scoring within 1e-3 of the threshold may fall on either side in one runtime.
    """

    def decided(d):
        return [j for j in range(len(d["scores"])) if d["scores"][j] > threshold + 1e-3]

    unmatched = set(range(len(want["scores"])))
    for j in decided(got):
        match = [
            k
            for k in unmatched
            if want["classes"][k] == got["classes"][j]
            and abs(want["scores"][k] - got["scores"][j]) <= atol
            and np.abs(want["boxes"][k] - got["boxes"][j]).max() <= atol
        ]
        assert match, f"detection {j} {got['classes'][j]} {got['scores'][j]} has no counterpart"
        unmatched.remove(match[0])
    assert not unmatched & set(decided(want)), "detections missing"


def operators(path):
    """[(op name, input dtypes, output dtypes)] of a .tflite file, delegates off."""
    interpreter = Interpreter(
        model_path=path,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    tensors = interpreter.get_tensor_details()
    ops = [
        (
            op["op_name"],
            {tensors[i]["dtype"] for i in op["inputs"] if i >= 0},
            {tensors[i]["dtype"] for i in op["outputs"]},
        )
        for op in interpreter._get_ops_details()
    ]
    return interpreter, ops


def delegated_ops(path):
    """Op names with LiteRT's default XNNPACK delegate applied: the original operators, then one
    DELEGATE node per partition XNNPACK took. An operator XNNPACK cannot run (int8 HARD_SWISH,
    an ADD whose scales it rejects) splits the graph, so the DELEGATE count shows what fell off
    the int8 kernels (docs/export_speed.md)."""
    interpreter = Interpreter(model_path=path, num_threads=1)
    interpreter.allocate_tensors()
    return [op["op_name"] for op in interpreter._get_ops_details()]
