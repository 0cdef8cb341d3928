"""Training-step and input-pipeline speed on this machine, printed as JSON.

    python benchmarks/train_step.py --task=detection      # SSDLite-V3-Large 320, batch 8
    python benchmarks/train_step.py --task=segmentation   # LR-ASPP-V3-Large 512x512, batch 8

Detection reads a generated COCO-format folder of 640x480 JPEGs through the real pipeline (JPEG
decode, SSD random crop, flip, resize, anchor matching), so "real input" is the full cost a COCO
run pays per step; "cached" feeds one prepared batch again and again (the model alone).
Segmentation also reports the latency of one 1024x2048 inference (batch 1), as in docs/speed.md.
Targets (issues 3 and 4): detection step <= 1.3 s, pipeline >= 3x what training consumes;
segmentation step <= 6 s, 1024x2048 inference <= 1.0 s.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import numpy as np
from absl import app, flags
from PIL import Image

FLAGS = flags.FLAGS
flags.DEFINE_enum("task", "detection", ["detection", "segmentation"], "What to measure.")
flags.DEFINE_integer("steps", 10, "Timed steps (after warm-up).")
flags.DEFINE_integer("batch_size", 8, "Global batch size.")
flags.DEFINE_integer("threads", 2, "TensorFlow intra/inter-op threads (0: TF's default).")


def _write_coco_folder(root, num_images=64, seed=0):
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for i in range(num_images):
        pixels = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
        name = f"{i:06d}.jpg"
        Image.fromarray(pixels).save(os.path.join(root, name), quality=90)
        images.append({"id": i + 1, "file_name": name, "height": 480, "width": 640})
        for _ in range(rng.integers(1, 8)):
            w, h = rng.uniform(20, 300, 2)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(rng.integers(1, 91)),
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": c, "name": f"class_{c}"} for c in range(1, 91)]
    with open(os.path.join(root, "annotations.json"), "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)


def _time_steps(train_loop, iterator, steps):
    import tensorflow as tf

    train_loop(iterator, tf.constant(2, tf.int64))  # trace + warm up
    start = time.perf_counter()
    result, _ = train_loop(iterator, tf.constant(steps, tf.int64))
    float(result["loss"].numpy())
    return (time.perf_counter() - start) / steps


def _pipeline_images_per_sec(dataset, batches=20):
    it = iter(dataset)
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        images, _ = next(it)
    images.numpy()
    return batches * int(images.shape[0]) / (time.perf_counter() - start)


def main(argv):
    del argv
    import tensorflow as tf

    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    from ondevice_vision.train.strategy import create_strategy
    from ondevice_vision.train.trainer import Trainer

    result = {"task": FLAGS.task, "batch_size": FLAGS.batch_size, "threads": FLAGS.threads}
    with tempfile.TemporaryDirectory() as tmp:
        if FLAGS.task == "detection":
            from ondevice_vision.configs import ssdlite_mobilenet_v3_large_320_coco as cfg_module

            config = cfg_module.get_config()
            data_dir = os.path.join(tmp, "coco")
            os.makedirs(data_dir)
            _write_coco_folder(data_dir)
            config.data.source = "coco_folder"
            config.data.train_dir = data_dir
            config.data.eval_dir = data_dir
            config.data.class_index = "category_id"
            result["model"] = "ssdlite_mobilenet_v3_large 320x320"
        else:
            from ondevice_vision.configs import lraspp_mobilenet_v3_large_cityscapes as cfg_module

            config = cfg_module.get_config()
            config.data.source = "synthetic"
            config.data.image_size = (1024, 2048)
            config.data.num_train = 16
            config.data.crop_size = (512, 512)
            config.model.num_classes = 4
            result["model"] = "lraspp_mobilenet_v3_large 512x512 crops"
        config.train.batch_size = FLAGS.batch_size
        config.train.shuffle_buffer = 16
        config.train.total_steps = 10**6
        trainer = Trainer(config, tmp, create_strategy("one_device"))
        train_loop = trainer._build_train_loop()
        dataset = trainer._train_dataset(None)
        result["pipeline_images_per_sec"] = round(_pipeline_images_per_sec(dataset), 1)
        step_real = _time_steps(train_loop, iter(dataset), FLAGS.steps)
        cached = dataset.take(1).cache().repeat()
        step_cached = _time_steps(train_loop, iter(cached), FLAGS.steps)
        result["step_seconds_real_input"] = round(step_real, 3)
        result["step_seconds_cached_batch"] = round(step_cached, 3)
        result["training_images_per_sec"] = round(FLAGS.batch_size / step_real, 1)
        result["pipeline_headroom"] = round(
            result["pipeline_images_per_sec"] / result["training_images_per_sec"], 2
        )
        if FLAGS.task == "segmentation":
            model = trainer.model
            infer = tf.function(lambda x: model(x, training=False))
            frame = tf.constant(
                np.random.default_rng(0).uniform(0, 255, (1, 1024, 2048, 3)), tf.float32
            )
            infer(frame).numpy()
            times = []
            for _ in range(5):
                start = time.perf_counter()
                infer(frame).numpy()
                times.append(time.perf_counter() - start)
            result["inference_1024x2048_seconds"] = round(float(np.median(times)), 3)
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
