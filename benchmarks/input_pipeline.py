"""Training input pipelines alone: images per second per CPU core, printed as JSON.

    python benchmarks/input_pipeline.py --threads=1          # pins itself to one core
    python benchmarks/input_pipeline.py --threads=2

Runs the tasks' own `build_dataset(config, "train", ...)` of the COCO and Cityscapes recipes
(SSDLite 320: decode, SSD random crop, flip, resize, anchor matching; LR-ASPP 769 crops: PNG
decode, random scale 0.5-2, crop, flip) on generated COCO-like 640x480 JPEGs and Cityscapes-like
1024x2048 PNG frames, read by the folder readers and by the TFDS sources (from TFRecord files of
the same bytes, see pipeline_data.py). `--threads=N` sizes tf.data's private thread pool and
pins the process to N cores, so images/s / N is the cost per core. The data is generated once
into --data_dir and reused, so runs of two checkouts (before/after a change) can be interleaved
on the same files: `PYTHONPATH=<checkout> python benchmarks/input_pipeline.py ...`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pipeline_data  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer(
    "threads", 1, "tf.data thread pool size; the process is pinned to as many cores."
)
flags.DEFINE_list("tasks", ["detection", "segmentation"], "Pipelines to time.")
flags.DEFINE_list(
    "sources",
    ["folder", "tfds", "folder+cache"],
    "folder: coco_folder/cityscapes_folder; tfds; folder+cache: folder with data.decoded_cache "
    "(after the first epoch; skipped for a checkout without the option).",
)
flags.DEFINE_string(
    "data_dir",
    os.path.join(tempfile.gettempdir(), "ondevice_pipeline_bench"),
    "Generated data (reused).",
)
flags.DEFINE_string("photo_dir", "", "Folder of JPEG photos to draw pixels from (optional).")
flags.DEFINE_float("seconds", 8.0, "Timed seconds per pipeline (after warm-up).")
flags.DEFINE_bool("tiny", False, "Tiny images and models' inputs: seconds on any CPU, for CI.")
flags.DEFINE_string("label", "", "Free text copied into the JSON (e.g. which checkout).")
flags.DEFINE_enum(
    "anchor_matching",
    "",
    ["", "train_step", "input_pipeline"],
    "Detection: where anchor targets are computed (data.anchor_matching; default: the "
    "recipe's). input_pipeline includes the matching in the host's cost.",
)


def _pin(threads: int) -> list[int]:
    cores = sorted(os.sched_getaffinity(0))
    if threads <= len(cores):
        cores = cores[:threads]
        os.sched_setaffinity(0, cores)
    return cores


def _task_module(name):
    import importlib

    import ondevice_vision

    # The task modules moved in the structure refactor; look in the checkout being measured
    # (an editable install elsewhere could otherwise answer the import).
    root = os.path.dirname(ondevice_vision.__file__)
    if os.path.exists(os.path.join(root, "tasks", "__init__.py")):
        return importlib.import_module("ondevice_vision.tasks").get_task(name)
    return importlib.import_module("ondevice_vision.train.tasks").get_task(name)


def _detection_config(source, root, tiny):
    from ondevice_vision.configs import ssdlite_mobilenet_v3_large_320_coco as module

    config = module.get_config()
    config.data.class_index = "category_id"
    if source == "folder":
        config.data.source = "coco_folder"
        config.data.train_dir = root
        config.data.eval_dir = root
    else:
        config.data.source = "tfds"
        config.data.tfds_name = "coco/2017"
    config.train.batch_size = 8 if tiny else 32
    if tiny:
        config.model.input_size = (128, 128)
    if FLAGS.anchor_matching and "anchor_matching" in config.data:
        config.data.anchor_matching = FLAGS.anchor_matching
    return config


def _segmentation_config(source, root, tiny):
    from ondevice_vision.configs import lraspp_mobilenet_v3_large_cityscapes as module

    config = module.get_config("tfds" if source == "tfds" else None)
    if source == "folder":
        config.data.root = root
    config.train.batch_size = 2 if tiny else 4
    if tiny:
        config.data.crop_size = (97, 97)
    return config


def _measure(dataset, seconds, threads, min_batches, warmup=2):
    """(images per wall second, images per CPU second of this process)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
    iterator = iter(dataset.with_options(options))
    for _ in range(warmup):  # thread pool, file cache, autotuning (and the decoded cache)
        next(iterator)
    images, batches = 0, 0
    start, cpu_start = time.perf_counter(), time.process_time()
    while batches < min_batches or time.perf_counter() - start < seconds:
        batch, _ = next(iterator)
        images += int(batch.shape[0])
        batches += 1
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return images / wall, images / max(cpu, 1e-9)


def main(argv):
    del argv
    cores = _pin(FLAGS.threads)
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    tiny = FLAGS.tiny
    data_dir = FLAGS.data_dir + ("_tiny" if tiny else "")
    num_images, num_frames = (16, 4) if tiny else (96, 12)
    coco_root = pipeline_data.write_coco(
        os.path.join(data_dir, "coco"),
        num_images=num_images,
        size=(60, 80) if tiny else pipeline_data.COCO_SIZE,
        photo_dir=FLAGS.photo_dir,
    )
    cityscapes_root = pipeline_data.write_cityscapes(
        os.path.join(data_dir, "cityscapes"),
        num_frames=num_frames,
        size=(128, 256) if tiny else pipeline_data.CITYSCAPES_SIZE,
        photo_dir=FLAGS.photo_dir,
    )
    result = {
        "label": FLAGS.label,
        "threads": FLAGS.threads,
        "cores": cores,
        "tiny": tiny,
        "load_average_before": list(os.getloadavg()),
        "images_per_sec": {},
        "images_per_sec_per_core": {},
        # Images per second of CPU time the process used (all its threads): the cost per core,
        # much less disturbed than wall time by other processes on a shared machine.
        "images_per_cpu_second": {},
        "anchor_matching": FLAGS.anchor_matching or "recipe default",
    }
    with pipeline_data.tfds_records(coco_root, cityscapes_root):
        for task_name in FLAGS.tasks:
            task = _task_module(task_name)
            for source in FLAGS.sources:
                reader, _, cache = source.partition("+")
                if task_name == "detection":
                    config = _detection_config(reader, coco_root, tiny)
                    num_files = num_images
                else:
                    config = _segmentation_config(reader, cityscapes_root, tiny)
                    num_files = num_frames
                config.train.shuffle_buffer = 8
                warmup = 2
                if cache:
                    if "decoded_cache" not in config.data:
                        continue
                    cache_dir = tempfile.mkdtemp(prefix="decoded_cache_", dir=data_dir)
                    config.data.decoded_cache = cache_dir
                    # One full epoch fills the cache; the timing starts after it.
                    warmup = -(-num_files // config.train.batch_size) + 2
                dataset, _ = task.build_dataset(config, "train", config.train.batch_size)
                rate, per_cpu_second = _measure(
                    dataset, FLAGS.seconds, FLAGS.threads, 1 if tiny else 3, warmup
                )
                if cache:
                    del dataset
                    shutil.rmtree(cache_dir, ignore_errors=True)
                key = f"{task_name}/{source}"
                result["images_per_sec"][key] = round(rate, 2)
                result["images_per_sec_per_core"][key] = round(rate / FLAGS.threads, 2)
                result["images_per_cpu_second"][key] = round(per_cpu_second, 2)
    result["load_average_after"] = list(os.getloadavg())
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
