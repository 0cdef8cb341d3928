"""Batch-1 latency of exported models on this CPU, printed as JSON (issue 5's speed table).

    python benchmarks/export_latency.py                      # both models, 2 threads
    python benchmarks/export_latency.py --models=ssdlite --runs=50

SSDLite-V3-Large 320 (COCO head, 90 classes, reduced tail) and LR-ASPP-V3-Large at 1024x2048
(Cityscapes head, 19 classes), random weights with realistic activation scales: kernels drawn
He-normal and batch-norm statistics measured on random images (a freshly built model's
activations shrink towards 1e-8, whose int8 scales XNNPACK rejects for some ADDs, which would
time another graph than a trained model's, docs/export_speed.md), each exported as:
  saved_model  serving_default on one uint8 image at the model size: pre-processing, network and
               (detection) combined per-class NMS with the recipe's settings (score 1e-8, IoU 0.6)
  tflite       float32 and full-integer int8 (uint8 input, calibrated on a few random images);
               detection includes TFLite_Detection_PostProcess (fast NMS, as the OD API exports)
Timed: the model call alone (image already resized), median over --runs after --warmup calls;
the two TFLite models alternate call by call (the machine is shared: both see the same load), and
`vs_float` is the median of the per-call int8 / float time ratios.
TensorFlow gets --threads intra-op threads (1 inter-op); the TFLite interpreter --threads threads.
Target: float TFLite SSDLite-V3-Large with post-processing under 40 ms (torchvision's eager
ssdlite320_mobilenet_v3_large: 160 ms on this machine, docs/speed.md).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["ssdlite", "lraspp"], "Which models: ssdlite, lraspp.")
flags.DEFINE_list("formats", ["saved_model", "tflite_float", "tflite_int8"], "What to time.")
flags.DEFINE_integer("runs", 20, "Timed calls per model (LR-ASPP: a quarter, at least 3).")
flags.DEFINE_integer("warmup", 3, "Untimed calls first.")
flags.DEFINE_integer("threads", 2, "Threads for TensorFlow and for the TFLite interpreter.")
flags.DEFINE_integer("calibration_images", 4, "Random images calibrating the int8 models.")


def _models():
    from ondevice_vision.configs import (
        lraspp_mobilenet_v3_large_cityscapes,
        ssdlite_mobilenet_v3_large_320_coco,
    )
    from ondevice_vision.data import cityscapes_labels
    from ondevice_vision.data.label_map import LabelMap

    coco_ids = tuple(range(1, 91))
    return {
        "ssdlite": (
            "ssdlite_mobilenet_v3_large_320",
            ssdlite_mobilenet_v3_large_320_coco.get_config(),
            LabelMap(tuple(f"class_{i}" for i in coco_ids), coco_ids),
            (320, 320),
        ),
        "lraspp": (
            "lraspp_mobilenet_v3_large_1024x2048",
            lraspp_mobilenet_v3_large_cityscapes.get_config(),
            cityscapes_labels.label_map(),
            (1024, 2048),
        ),
    }


def _time(fn, runs, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return {
        "median_ms": round(statistics.median(times), 2),
        "mean_ms": round(statistics.fmean(times), 2),
        "min_ms": round(min(times), 2),
        "runs": runs,
    }


def _realistic_weights(model, size, seed=0):
    """He-normal kernels, batch-norm statistics of random images (one training-mode pass at
    momentum 0), so activations have trained-like magnitudes."""
    import keras

    rng = np.random.default_rng(seed)

    def layers(layer):
        for child in getattr(layer, "layers", []):
            yield child
            yield from layers(child)

    for layer in layers(model):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            kernel = layer.kernel
            fan_in = int(np.prod(kernel.shape[:2]))
            if not isinstance(layer, keras.layers.DepthwiseConv2D):
                fan_in *= int(kernel.shape[2])
            kernel.assign(rng.normal(0.0, np.sqrt(2.0 / fan_in), kernel.shape).astype("float32"))
    norms = [layer for layer in layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(rng.uniform(0, 255, (2, *size, 3)).astype("float32"), training=True)
    for layer, momentum in zip(norms, momenta, strict=True):
        layer.momentum = momentum


def _time_alternating(fns: dict, runs, warmup):
    """{name: stats}: the calls alternate, so load changes hit every model alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1000.0)
    first = next(iter(times.values()))
    return {
        name: {
            "median_ms": round(statistics.median(t), 2),
            "mean_ms": round(statistics.fmean(t), 2),
            "min_ms": round(min(t), 2),
            "runs": runs,
            "vs_float": round(statistics.median(a / b for a, b in zip(t, first, strict=True)), 3),
        }
        for name, t in times.items()
    }


def _measure(key, workdir, runs):
    import tensorflow as tf

    from ondevice_vision import tasks
    from ondevice_vision.export import tflite
    from ondevice_vision.export.exported_model import load_exported_model
    from ondevice_vision.export.saved_model import export_saved_model

    name, config, label_map, size = _models()[key]
    model = tasks.get_task(config).build_model(config)
    _realistic_weights(model, size if key == "ssdlite" else (size[0] // 2, size[1] // 2))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1, *size, 3), dtype=np.uint8)
    results = []
    if "saved_model" in FLAGS.formats:
        path = export_saved_model(
            config, model, label_map, os.path.join(workdir, f"{key}_sm"), input_size=size
        )
        signature = tf.saved_model.load(path).signatures["serving_default"]
        images = tf.constant(image)
        timing = _time(lambda: signature(images=images), runs, FLAGS.warmup)
        results.append({"model": name, "runtime": "saved_model", **timing})

    def representative():
        for _ in range(FLAGS.calibration_images):
            yield [rng.uniform(0, 255, (1, *size, 3)).astype(np.float32)]

    runners, rows = {}, {}
    for fmt, quantization in (("tflite_float", "none"), ("tflite_int8", "int8")):
        if fmt not in FLAGS.formats:
            continue
        path = tflite.export_tflite(
            config,
            model,
            label_map,
            os.path.join(workdir, f"{key}_{quantization}"),
            size,
            quantization=quantization,
            representative=representative if quantization == "int8" else None,
        )
        lite = load_exported_model(path, num_threads=FLAGS.threads)
        feed = image.astype(lite.input_detail["dtype"])
        runners[fmt] = lambda lite=lite, feed=feed: lite.runner(images=feed)
        rows[fmt] = {
            "model": name,
            "runtime": f"tflite_{'float' if quantization == 'none' else quantization}",
            "file_mb": round(os.path.getsize(lite.path) / 2**20, 2),
        }
    timings = _time_alternating(runners, runs, FLAGS.warmup) if runners else {}
    results += [{**rows[fmt], **timings[fmt]} for fmt in runners]
    return results


def main(argv):
    del argv
    import tensorflow as tf

    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    unknown = set(FLAGS.models) - {"ssdlite", "lraspp"}
    if unknown:
        raise app.UsageError(f"unknown --models {sorted(unknown)}")
    results = []
    with tempfile.TemporaryDirectory(prefix="export_latency_") as workdir:
        for key in FLAGS.models:
            runs = FLAGS.runs if key == "ssdlite" else max(3, FLAGS.runs // 4)
            results += _measure(key, workdir, runs)
    print(
        json.dumps(
            {
                "threads": FLAGS.threads,
                "cpu": platform.processor() or platform.machine(),
                "cpu_count": os.cpu_count(),
                "load_average_1m": round(os.getloadavg()[0], 2),
                "tensorflow": tf.__version__,
                "results": results,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    app.run(main)
