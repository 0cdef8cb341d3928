"""Training throughput on an accelerator (or the CPU): images/s per model, batch and precision.

    python benchmarks/gpu_throughput.py                 # the full grid, for a GPU
    python benchmarks/gpu_throughput.py --tiny          # seconds on a CPU: CI keeps it working
    python benchmarks/gpu_throughput.py --torch         # also torchvision's models, if installed
    python benchmarks/gpu_throughput.py --cases=lraspp:float32:true   # chosen settings only

Grid: SSDLite-MobileNetV3-Large 320 (global batch 64 and 256) and LR-ASPP-MobileNetV3-Large on
769x769 crops (batch 16; the synthetic source's 4 classes, not Cityscapes' 19), in float32, mixed
bfloat16 and mixed float16 (dynamic loss
scaling), with and without XLA (`jit_compile`). A step is forward, the task's loss, backward and
a momentum-SGD update on one batch that stays on the device, so the figure is the model's alone;
`pipeline` then reports the real input pipelines (benchmarks/input_pipeline.py) with every host
core, which is what must keep up with it.

`--torch` adds torchvision's ssdlite320_mobilenet_v3_large and lraspp_mobilenet_v3_large train
steps at the same batch sizes and precisions (torch.autocast; float16 with a GradScaler) when
torch and torchvision import; they are not dependencies of this project, so install them beside
it to compare (`pip install torch torchvision`). One JSON object is printed at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_bool("tiny", False, "Tiny inputs and batches, 2 steps: for CI on a CPU.")
flags.DEFINE_list("models", ["ssdlite", "lraspp"], "ssdlite and/or lraspp.")
flags.DEFINE_list("precisions", ["float32", "bfloat16", "float16"], "Compute dtypes.")
flags.DEFINE_list("jit", ["false", "true"], "jit_compile settings to run.")
flags.DEFINE_list(
    "cases",
    [],
    "model:precision:jit triples (e.g. ssdlite:bfloat16:false) to run instead of the grid of "
    "--models x --precisions x --jit: CI covers each model, precision kind and XLA once.",
)
flags.DEFINE_integer("steps", 20, "Timed steps per setting (after warm-up).")
flags.DEFINE_integer("warmup", 3, "Untimed steps per setting (compilation happens here).")
flags.DEFINE_bool("pipeline", True, "Also time the input pipelines with all host cores.")
flags.DEFINE_bool("torch", False, "Also time torchvision's models (needs torch installed).")

SSDLITE_BATCHES = (64, 256)
LRASPP_BATCH = 16


def _shape(model):
    """(batch, input size) of a model's runs."""
    tiny = FLAGS.tiny
    if model == "ssdlite":
        return 2 if tiny else SSDLITE_BATCHES, (64, 64) if tiny else (320, 320)
    if model == "lraspp":
        return 2 if tiny else LRASPP_BATCH, (65, 65) if tiny else (769, 769)
    raise ValueError(f"--models / --cases: unknown model {model!r} (ssdlite or lraspp)")


def _settings():
    """[(model, batch, input size, precision, [jit_compile, ...])]: one torchvision row each."""
    out = []
    if FLAGS.cases:
        for case in FLAGS.cases:
            parts = case.split(":")
            if len(parts) != 3 or parts[2].lower() not in ("true", "false"):
                raise ValueError(f"--cases: {case!r} is not model:precision:true|false")
            model, precision, jit = parts
            batches, size = _shape(model)
            for batch in (batches,) if isinstance(batches, int) else batches:
                out.append((model, batch, size, precision, [jit.lower() == "true"]))
        return out
    jits = [j.lower() == "true" for j in FLAGS.jit]
    for model in ("ssdlite", "lraspp"):
        if model not in FLAGS.models:
            continue
        batches, size = _shape(model)
        for batch in (batches,) if isinstance(batches, int) else batches:
            for precision in FLAGS.precisions:
                out.append((model, batch, size, precision, jits))
    return out


def _config(model, size):
    if model == "ssdlite":
        from ondevice_vision.configs import ssdlite_mobilenet_v3_large_320_coco as module

        config = module.get_config()
        config.model.input_size = size
        config.data.source = "shapes"
        config.data.image_size = size[0]
        config.data.num_train = 8
        config.data.augment = False
    else:
        from ondevice_vision.configs import lraspp_mobilenet_v3_large_cityscapes as module

        config = module.get_config()
        config.data.source = "synthetic"
        config.data.num_train = 4
        config.data.image_size = size
        config.data.crop_size = size
        config.data.min_scale = config.data.max_scale = 1.0
        # The synthetic source's 4 classes (the task checks the data's classes against the
        # model); Cityscapes' 19 change only the two 1x1 classifier convolutions.
        config.model.num_classes = 4
    config.train.shuffle_buffer = 1
    return config


def _task(name):
    import importlib

    import ondevice_vision

    root = os.path.dirname(ondevice_vision.__file__)
    if os.path.exists(os.path.join(root, "tasks", "__init__.py")):
        return importlib.import_module("ondevice_vision.tasks").get_task(name)
    return importlib.import_module("ondevice_vision.train.tasks").get_task(name)


def _one_batch(task, config, batch):
    """A real batch of the task's pipeline (shapes / synthetic source), kept on the device.

    Detection batches carry their anchor targets (matched on the host), so the step is the model
    alone and XLA can compile it (the in-step matching cuts rows to the batch's box count, a
    data-dependent shape).
    """
    import tensorflow as tf

    if "anchor_matching" in config.data:
        config.data.anchor_matching = "input_pipeline"
    dataset, _ = task.build_dataset(config, "train", batch)
    images, labels = next(iter(dataset))
    return tf.identity(images), tf.nest.map_structure(tf.identity, labels)


def _ours(model_name, batch, size, precision, jit):
    import keras
    import tensorflow as tf

    config = _config(model_name, size)
    task = _task(config.task)
    images, labels = _one_batch(task, config, batch)
    previous = keras.mixed_precision.global_policy()
    if precision != "float32":
        keras.mixed_precision.set_global_policy(f"mixed_{precision}")
    try:
        model = task.build_model(config)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    optimizer = keras.optimizers.SGD(learning_rate=1e-3, momentum=0.9)
    if precision == "float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    variables = model.trainable_variables
    optimizer.build(variables)

    @tf.function(jit_compile=jit)
    def step(images, labels):
        with tf.GradientTape() as tape:
            outputs = tf.nest.map_structure(
                lambda t: tf.cast(t, tf.float32), model(images, training=True)
            )
            sums, normalizer = task.compute_losses(config, outputs, labels)
            total = tf.add_n([tf.reduce_sum(v) for v in sums.values()])
            loss = total / tf.maximum(tf.reduce_sum(normalizer), 1.0)
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        optimizer.apply(grads, variables)
        return loss

    for _ in range(FLAGS.warmup):
        step(images, labels)
    float(step(images, labels))
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
        loss = step(images, labels)
    final = float(loss)  # waits for the device
    seconds = time.perf_counter() - start
    return {"images_per_sec": round(batch * FLAGS.steps / seconds, 1), "loss": round(final, 4)}


def _torchvision(model_name, batch, size, precision):
    import torch
    import torchvision

    device = "cuda" if torch.cuda.is_available() else "cpu"
    h, w = size
    if model_name == "ssdlite":
        model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=91
        )
        images = [torch.rand(3, h, w, device=device) for _ in range(batch)]
        box = torch.tensor([[0.2 * w, 0.2 * h, 0.7 * w, 0.8 * h]], device=device)
        targets = [{"boxes": box, "labels": torch.tensor([1], device=device)}] * batch

        def loss_fn(m):
            return sum(m(images, targets).values())
    else:
        model = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=19
        )
        images = torch.rand(batch, 3, h, w, device=device)
        masks = torch.randint(0, 19, (batch, h, w), device=device)

        def loss_fn(m):
            return torch.nn.functional.cross_entropy(m(images)["out"], masks, ignore_index=255)

    model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    dtype = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[precision]
    scaler = torch.amp.GradScaler(device, enabled=precision == "float16")

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = loss_fn(model)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss

    for _ in range(FLAGS.warmup):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
        loss = step()
    final = float(loss)
    seconds = time.perf_counter() - start
    return {"images_per_sec": round(batch * FLAGS.steps / seconds, 1), "loss": round(final, 4)}


def _pipeline():
    """benchmarks/input_pipeline.py with every core of the host, in a fresh process."""
    threads = len(os.sched_getaffinity(0))
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "input_pipeline.py")
    cmd = [sys.executable, script, f"--threads={threads}", "--sources=folder,folder+cache"]
    cmd += ["--tiny", "--seconds=0.3"] if FLAGS.tiny else ["--seconds=10"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv):
    del argv
    import tensorflow as tf

    if FLAGS.tiny:
        FLAGS.steps, FLAGS.warmup = min(FLAGS.steps, 2), min(FLAGS.warmup, 1)
    devices = tf.config.list_logical_devices()
    result = {
        "device": next((d.name for d in devices if d.device_type == "GPU"), "CPU"),
        "gpu": [
            tf.config.experimental.get_device_details(d).get("device_name", "?")
            for d in tf.config.list_physical_devices("GPU")
        ],
        "tiny": FLAGS.tiny,
        "steps": FLAGS.steps,
        "runs": [],
    }
    for model_name, batch, size, precision, jits in _settings():
        for jit in jits:
            run = {
                "framework": "ondevice_vision",
                "model": model_name,
                "batch": batch,
                "input": list(size),
                "precision": precision,
                "jit_compile": jit,
            }
            try:
                run.update(_ours(model_name, batch, size, precision, jit))
            except Exception as e:  # one setting failing (e.g. no float16 XLA) is a result
                run["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            result["runs"].append(run)
            print(json.dumps(run), file=sys.stderr, flush=True)
        if FLAGS.torch:
            run = {
                "framework": "torchvision",
                "model": model_name,
                "batch": batch,
                "input": list(size),
                "precision": precision,
                "jit_compile": False,
            }
            try:
                run.update(_torchvision(model_name, batch, size, precision))
            except ImportError as e:
                run["error"] = f"torch/torchvision not installed ({e})"
            except Exception as e:
                run["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            result["runs"].append(run)
            print(json.dumps(run), file=sys.stderr, flush=True)
    if FLAGS.pipeline:
        result["pipeline"] = _pipeline()
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
